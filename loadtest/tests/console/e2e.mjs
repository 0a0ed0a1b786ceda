// End-to-end test of `frlab console` in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core from .tools/node_modules; see TOOLING.md "Browser").
//
//   node loadtest/tests/console/e2e.mjs URL OUT_DIR
//
// Against a running stack whose profile has a circuit breaker on orders→payments with a
// short open time, it clicks the page's controls: inject a payments outage, send a burst,
// wait until the payments breaker is shown OPEN, clear the fault, start a light steady
// load, and wait until the transition log shows HALF-OPEN after the last OPEN and then
// CLOSED. Screenshots go to OUT_DIR/*.png. Exit status 0 on success; on failure the
// reason is printed and OUT_DIR/failure.png is saved.
import { createRequire } from "node:module";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const [url, outDir] = process.argv.slice(2);
if (!url || !outDir) {
  console.error("usage: node e2e.mjs URL OUT_DIR");
  process.exit(2);
}
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
let chromium;
try {
  chromium = createRequire(path.join(root, ".tools/node_modules/"))("playwright-core").chromium;
} catch (e) {
  console.error(`playwright-core is missing from ${root}/.tools/node_modules: run \`make tools\` (${e.message})`);
  process.exit(3);
}
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
mkdirSync(outDir, { recursive: true });
const profileDir = mkdtempSync(path.join(tmpdir(), "frlab-console-e2e-"));
const BREAKER = '[data-breaker="orders/payments"]';
const step = (msg) => console.log(`[${new Date().toISOString().slice(11, 23)}] ${msg}`);

let context;
let page;
try {
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 1500 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run",
    ],
  });
  page = context.pages()[0] || (await context.newPage());
  page.on("pageerror", (e) => console.error("page error:", e.message));
  const shot = async (name) => {
    await page.screenshot({ path: path.join(outDir, name), fullPage: true });
    step(`screenshot ${name}`);
  };

  step(`open ${url}`);
  await page.goto(url);
  await page.waitForSelector("#conn.live", { timeout: 20000 });
  await page.waitForSelector(`${BREAKER}[data-state="closed"]`, { timeout: 20000 });
  step("live; orders→payments breaker CLOSED");

  await page.click("#send-one");
  await page.waitForSelector('#log tbody tr[data-outcome="CONFIRMED"]', { timeout: 20000 });
  step("one order CONFIRMED");
  await shot("01-healthy.png");

  await page.selectOption("#fault-service", "payments");
  await page.selectOption("#fault-kind", "outage");
  await page.fill("#fault-duration", "120");
  await page.click("#fault-inject");
  await page.waitForSelector('#faults li[data-service="payments"][data-action="outage"]', { timeout: 20000 });
  step("payments outage in force");

  await page.fill("#burst-count", "40");
  await page.fill("#burst-rate", "20");
  await page.click("#send-burst");
  await page.waitForSelector(`${BREAKER}[data-state="open"]`, { timeout: 30000 });
  step("orders→payments breaker OPEN");
  await page.waitForSelector('#log tbody tr[data-outcome="UNAVAILABLE"]', { timeout: 20000 });
  await shot("02-breaker-open.png");

  await page.click("#fault-clear");
  await page.waitForFunction(() => !document.querySelector('#faults li[data-service]'), null, { timeout: 20000 });
  step("fault cleared");
  // Probes need traffic once the breaker is HALF-OPEN.
  await page.fill("#load-rate", "4");
  await page.click("#load-start");

  // The transition log, oldest first, for orders→payments: [from, to] pairs.
  const sequence = () =>
    page.$$eval('#transitions li[data-hop="orders/payments"]', (lis) =>
      lis.map((li) => li.dataset.to).reverse());
  const after = (seq, what, from) => seq.indexOf(what, from);
  await page.waitForFunction(() => {
    const tos = [...document.querySelectorAll('#transitions li[data-hop="orders/payments"]')]
      .map((li) => li.dataset.to).reverse();
    const lastOpen = tos.lastIndexOf("open");
    return lastOpen >= 0 && tos.indexOf("half_open", lastOpen) > lastOpen;
  }, null, { timeout: 60000 });
  step("HALF-OPEN after the last OPEN");
  await shot("03-half-open.png");
  await page.waitForFunction(() => {
    const tos = [...document.querySelectorAll('#transitions li[data-hop="orders/payments"]')]
      .map((li) => li.dataset.to).reverse();
    const lastOpen = tos.lastIndexOf("open");
    const half = tos.indexOf("half_open", lastOpen);
    return lastOpen >= 0 && half > lastOpen && tos.indexOf("closed", half) > half;
  }, null, { timeout: 60000 });
  await page.waitForSelector(`${BREAKER}[data-state="closed"]`, { timeout: 20000 });
  step("orders→payments breaker CLOSED again");
  await page.click("#load-stop");
  await page.waitForSelector("#load-state:not(.on)", { timeout: 10000 });
  const seq = await sequence();
  const closedAt = after(seq, "closed", after(seq, "half_open", seq.lastIndexOf("open")));
  step(`transitions of orders→payments: ${seq.join(" → ")} (closed at #${closedAt})`);
  await shot("04-closed.png");
  console.log("console e2e: OK");
  await context.close();
  rmSync(profileDir, { recursive: true, force: true });
  process.exit(0);
} catch (e) {
  console.error(`console e2e FAILED: ${e.message}`);
  if (page) {
    await page.screenshot({ path: path.join(outDir, "failure.png"), fullPage: true }).catch(() => {});
    const text = await page.evaluate(() => document.body.innerText).catch(() => "");
    console.error("--- page text ---\n" + text.slice(0, 4000));
  }
  if (context) await context.close().catch(() => {});
  rmSync(profileDir, { recursive: true, force: true });
  process.exit(1);
}
