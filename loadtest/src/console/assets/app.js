// Failure Recovery Lab console: renders the snapshots the console pushes by server-sent
// events (/api/events) and calls its JSON API for the controls. No framework, no CDN.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const STATE_LABEL = { closed: "CLOSED", open: "OPEN", half_open: "HALF-OPEN" };
// Where each service sits in the topology drawing (viewBox 760 x 330).
const LAYOUT = {
  gateway: [80, 165], orders: [340, 165],
  inventory: [640, 55], payments: [640, 165], notifications: [640, 275],
};
const NODE_W = 140, NODE_H = 58;

const $ = (id) => document.getElementById(id);
function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}
const pct = (x) => (x == null ? "—" : (100 * x).toFixed(1) + " %");
const ms = (x) => (x == null ? "—" : x < 10 ? x.toFixed(1) + " ms" : Math.round(x) + " ms");
const clock = (t) => {
  const d = new Date(t);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
};

// ---- live connection -----------------------------------------------------------------
let lastEventAt = 0;
function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("snapshot", (e) => {
    lastEventAt = Date.now();
    setConn(true);
    try { render(JSON.parse(e.data)); } catch (err) { console.error(err); }
  });
  source.onerror = () => setConn(false);
}
function setConn(live) {
  const c = $("conn");
  c.className = "conn " + (live ? "live" : "down");
  c.textContent = live ? "live" : "reconnecting…";
}
setInterval(() => { if (Date.now() - lastEventAt > 3000) setConn(false); }, 1000);

// ---- rendering -----------------------------------------------------------------------
function render(s) {
  const gw = s.services.find((x) => x.name === "gateway");
  $("profile").textContent = "profile " + (gw && gw.profile ? gw.profile : "—");
  renderTotals(s);
  renderTopology(s);
  renderBreakers(s);
  renderTransitions(s);
  renderFaults(s);
  renderConsole(s.console || {});
}

function renderTotals(s) {
  const t = s.totals, w = t.window;
  $("t-requests").textContent = Math.round(t.requests).toLocaleString();
  $("t-rps").textContent = w.rps.toFixed(1) + " /s over the last " + w.seconds.toFixed(1) + " s";
  $("t-success").textContent = pct(w.success_rate);
  $("t-success-all").textContent = "overall " + pct(t.success_rate);
  $("t-p95").textContent = ms(w.p95_ms);
  $("t-trips").textContent = Math.round(t.trips);
  spark("s-rps", s.history.map((p) => p.rps));
  spark("s-success", s.history.map((p) => p.success_rate), 0, 1);
  spark("s-p95", s.history.map((p) => p.p95_ms));
}

function spark(id, values, lo, hi) {
  const svg = $(id);
  svg.replaceChildren();
  const known = values.filter((v) => v != null);
  if (known.length < 2) return;
  const min = lo ?? 0, max = hi ?? Math.max(...known, 1e-9);
  const n = values.length;
  const pts = [];
  values.forEach((v, i) => {
    if (v == null) return;
    const x = (120 * i) / Math.max(n - 1, 1);
    const y = 28 - (26 * (v - min)) / (max - min || 1);
    pts.push(x.toFixed(1) + "," + y.toFixed(1));
  });
  svg.append(el("svg:polyline", { points: pts.join(" ") }));
}

function renderTopology(s) {
  const svg = $("topology");
  svg.replaceChildren(el("svg:defs"));
  svg.firstChild.append(arrowMarker("arrow"));
  const byName = Object.fromEntries(s.services.map((x) => [x.name, x]));
  for (const e of s.edges) {
    const a = LAYOUT[e.from], b = LAYOUT[e.to];
    if (!a || !b) continue;
    const state = e.breaker ? e.breaker.state : "none";
    const g = el("svg:g", { class: "edge " + state, "data-edge": e.from + "/" + e.to });
    const x1 = a[0] + NODE_W / 2, y1 = a[1], x2 = b[0] - NODE_W / 2 - 4, y2 = b[1];
    g.append(el("svg:line", { x1, y1, x2, y2, "marker-end": "url(#arrow)" }));
    const lines = [
      e.breaker ? STATE_LABEL[state] : "no breaker",
      e.retries_per_s.toFixed(1) + " retries/s" +
        (e.bulkhead ? " · bh " + e.bulkhead.in_use + "/" + e.bulkhead.max_concurrent : ""),
    ];
    const mx = (x1 + x2) / 2, my = (y1 + y2) / 2 - 20;
    const w = Math.max(...lines.map((l) => l.length)) * 6 + 14;
    g.append(el("svg:rect", { class: "chip", x: mx - w / 2, y: my - 12, width: w, height: 30, rx: 8 }));
    lines.forEach((line, i) => {
      g.append(el("svg:text", { x: mx, y: my + i * 13, "text-anchor": "middle", class: i ? "sub" : "st" }, line));
    });
    svg.append(g);
  }
  for (const [name, [x, y]] of Object.entries(LAYOUT)) {
    const svc = byName[name];
    const faults = svc ? (svc.faults || []).filter((f) => f.active) : [];
    const cls = ["node", !svc || !svc.up ? "down" : "", faults.length ? "fault" : ""].join(" ");
    const g = el("svg:g", { class: cls, "data-service": name });
    g.append(el("svg:rect", { x: x - NODE_W / 2, y: y - NODE_H / 2, width: NODE_W, height: NODE_H, rx: 8 }));
    g.append(el("svg:text", { x, y: y - 4 }, name));
    let sub = !svc ? "not in the stack" : !svc.up ? "unreachable" : "up " + fmtUptime(svc.uptime_s);
    if (svc && svc.capacity) sub = "slots " + svc.capacity.slots_in_use + "/" + svc.capacity.slots + " · queue " + svc.capacity.queued;
    g.append(el("svg:text", { x, y: y + 14, class: "small" }, sub));
    if (faults.length) {
      g.append(el("svg:text", { x, y: y - NODE_H / 2 - 6, class: "badge" }, "⚡ " + faults.map((f) => f.action).join(", ")));
    }
    if (svc && svc.error) g.append(el("svg:title", {}, svc.error));
    svg.append(g);
  }
}

function fmtUptime(s) {
  if (s == null) return "";
  if (s < 120) return Math.round(s) + " s";
  return Math.round(s / 60) + " min";
}

function arrowMarker(id) {
  const m = el("svg:marker", { id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  m.append(el("svg:path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#8a97a6" }));
  return m;
}

// One state machine per client hop, kept across renders so transitions can animate.
const machines = new Map();
// Paths of the four transitions in a machine (viewBox 260 x 128).
const SM_PATHS = {
  "closed>open": { d: "M 58 52 Q 80 20 106 26", label: [70, 20], name: "trips" },
  "open>half_open": { d: "M 154 26 Q 180 20 203 52", label: [190, 20], name: "probes" },
  "half_open>open": { d: "M 206 76 Q 172 84 148 50", label: [168, 96], name: "re-opens" },
  "half_open>closed": { d: "M 212 84 Q 130 134 48 84", label: [130, 124], name: "closes" },
};
const SM_STATES = { closed: [36, 66], open: [130, 36], half_open: [224, 66] };
const TRANSITION_COUNT = { "closed>open": "trips", "open>half_open": "probes", "half_open>open": "reopens", "half_open>closed": "closes" };

function machineFor(key, e) {
  if (machines.has(key)) return machines.get(key);
  const card = el("div", { class: "breaker", "data-breaker": key });
  const h = el("h3");
  h.append(el("span", {}, e.from + " → " + e.to), el("span", { class: "state" }));
  card.append(h);
  const svg = el("svg:svg", { viewBox: "0 0 260 128", class: "sm" });
  svg.append(el("svg:defs"));
  svg.firstChild.append(arrowMarker("arr-" + key.replace("/", "-")));
  const paths = {};
  for (const [t, p] of Object.entries(SM_PATHS)) {
    const path = el("svg:path", { d: p.d, "marker-end": "url(#arr-" + key.replace("/", "-") + ")", "data-transition": t });
    const label = el("svg:text", { x: p.label[0], y: p.label[1], class: "cnt" });
    svg.append(path, label);
    paths[t] = { path, label };
  }
  const states = {};
  for (const [st, [x, y]] of Object.entries(SM_STATES)) {
    const g = el("svg:g", { class: "st " + st, "data-state": st });
    g.append(el("svg:circle", { cx: x, cy: y, r: 26 }), el("svg:text", { x, y: y + 4 }, STATE_LABEL[st]));
    svg.append(g);
    states[st] = g;
  }
  card.append(svg);
  const stats = el("div", { class: "bstats" });
  card.append(stats);
  const m = { card, svg, paths, states, stats, state: null };
  machines.set(key, m);
  return m;
}

function renderBreakers(s) {
  const box = $("breakers");
  const seen = new Set();
  for (const e of s.edges) {
    const key = e.from + "/" + e.to;
    seen.add(key);
    const m = machineFor(key, e);
    if (!m.card.isConnected) box.append(m.card);
    const b = e.breaker;
    if (!b) {
      m.card.dataset.state = "none";
      m.card.querySelector(".state").textContent = "no breaker";
      m.svg.style.display = "none";
      m.stats.replaceChildren(el("div", { class: "nobreaker" }, "this profile has no breaker on this hop"));
      continue;
    }
    m.svg.style.display = "";
    m.card.dataset.state = b.state;
    m.card.querySelector(".state").textContent = STATE_LABEL[b.state] || b.state;
    for (const [st, g] of Object.entries(m.states)) {
      g.setAttribute("class", "st " + st + (st === b.state ? " lit" : ""));
    }
    for (const [t, p] of Object.entries(m.paths)) {
      p.label.textContent = SM_PATHS[t].name + " " + Math.round(e.transitions[TRANSITION_COUNT[t]]);
    }
    const stat = (k, v) => { const d = el("div"); d.append(k + " ", el("b", {}, String(v))); return d; };
    const items = [
      stat("in state", (b.since_ms / 1000).toFixed(1) + " s"),
      stat("calls", b.calls_in_window),
      stat("failures", b.failures_in_window),
      stat("in a row", b.consecutive_failures),
      stat("open for", b.open_remaining_ms == null ? "—" : (b.open_remaining_ms / 1000).toFixed(1) + " s"),
      stat("probes", b.probes_in_flight + " / ok " + b.probes_succeeded),
      stat("retries/s", e.retries_per_s.toFixed(1)),
      stat("attempts/s", e.attempts_per_s.toFixed(1)),
    ];
    if (e.bulkhead) items.push(stat("bulkhead", e.bulkhead.in_use + "/" + e.bulkhead.max_concurrent + " (" + e.bulkhead.rejections + " rej.)"));
    m.stats.replaceChildren(...items);
  }
  for (const [key, m] of machines) if (!seen.has(key)) { m.card.remove(); machines.delete(key); }
}

// Transitions already animated (by poll time + key).
const animated = new Set();
function renderTransitions(s) {
  const list = $("transitions");
  const items = s.transitions.slice().reverse().map((t) => {
    const li = el("li", { "data-hop": t.service + "/" + t.hop, "data-from": t.from, "data-to": t.to });
    li.append(
      el("span", { class: "t" }, clock(t.at_ms)),
      t.service + " → " + t.hop + ": ",
      el("span", { class: "s-" + t.from }, STATE_LABEL[t.from] || t.from),
      " → ",
      el("span", { class: "s-" + t.to }, STATE_LABEL[t.to] || t.to),
      t.count > 1 ? " ×" + t.count : "",
    );
    const id = t.at_ms + t.service + t.hop + t.from + t.to;
    if (!animated.has(id)) {
      animated.add(id);
      const m = machines.get(t.service + "/" + t.hop);
      const p = m && m.paths[t.from + ">" + t.to];
      if (p) { p.path.classList.remove("fired"); void p.path.getBBox(); p.path.classList.add("fired"); }
    }
    return li;
  });
  list.replaceChildren(...(items.length ? items : [el("li", { class: "empty" }, "no transition since the console started")]));
}

function renderFaults(s) {
  const items = [];
  for (const svc of s.services) {
    for (const f of svc.faults || []) {
      const left = Math.max(0, (f.expiresAtMs - s.at_ms) / 1000);
      const li = el("li", { "data-service": svc.name, "data-action": f.action });
      li.append(el("b", {}, svc.name), " " + f.action + " " + (f.name ? "(" + f.name + ") " : "") +
        (f.active ? "in force, " : "waiting, ") + left.toFixed(0) + " s left, " + f.injected + " calls hit");
      items.push(li);
    }
  }
  $("faults").replaceChildren(...(items.length ? items : [el("li", { class: "empty" }, "none")]));
}

function renderConsole(c) {
  const load = $("load-state");
  load.className = "pill" + (c.load ? " on" : "");
  load.textContent = c.load ? "running at " + c.load.rate + " /s" : "stopped";
  const rows = (c.log || []).map(logRow);
  $("log").tBodies[0].replaceChildren(...rows);
}

function logRow(o) {
  const tr = el("tr", { "data-seq": o.seq, "data-outcome": o.outcome });
  const hops = o.hops == null ? "—" : o.hops.length === 0 ? "none counted"
    : o.hops.map((h) => h.from + "→" + h.to + (h.attempts > 1 ? " ×" + h.attempts : "")).join(", ") + (o.overlapped ? " (overlapped)" : "");
  tr.append(
    el("td", {}, String(o.seq)),
    el("td", {}, clock(o.at_ms).slice(0, 8)),
    el("td", {}, o.origin),
    el("td", { class: o.ok ? "ok" : "bad" }, o.outcome),
    el("td", {}, ms(o.latency_ms)),
    el("td", {}, o.attempts == null ? "—" : String(o.attempts)),
    el("td", {}, hops),
    el("td", { class: "detail", title: o.message || "" }, o.message || (o.order_id ? "order " + o.order_id : "")),
  );
  return tr;
}

// ---- controls ------------------------------------------------------------------------
async function call(method, path, body) {
  const fb = $("feedback");
  try {
    const r = await fetch(path, {
      method,
      headers: body ? { "content-type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    const answer = await r.json().catch(() => ({}));
    if (!r.ok) {
      fb.className = "error";
      fb.textContent = answer.error || r.status + " " + r.statusText;
      return null;
    }
    fb.className = "";
    return answer;
  } catch (err) {
    fb.className = "error";
    fb.textContent = "the console did not answer: " + err;
    return null;
  }
}
const num = (id) => Number($(id).value);
function say(text) { $("feedback").className = ""; $("feedback").textContent = text; }

$("send-one").onclick = async () => {
  say("sending one order…");
  const o = await call("POST", "/api/order");
  if (o) {
    say("order #" + o.seq + ": " + o.outcome + " in " + ms(o.latency_ms) + (o.message ? " — " + o.message : ""));
    $("log").tBodies[0].prepend(logRow(o));
  }
};
$("send-burst").onclick = async () => {
  const a = await call("POST", "/api/burst", { count: num("burst-count"), rate: num("burst-rate") });
  if (a) say("burst of " + a.count + " orders at " + a.rate + "/s started (" + a.seconds.toFixed(1) + " s)");
};
$("load-start").onclick = async () => {
  const a = await call("POST", "/api/load/start", { rate: num("load-rate") });
  if (a) say("steady load at " + a.rate + "/s");
};
$("load-stop").onclick = async () => {
  const a = await call("POST", "/api/load/stop", {});
  if (a) say(a.was_running ? "steady load stopped" : "no steady load was running");
};
function showFaultParams() {
  const kind = $("fault-kind").value;
  for (const l of document.querySelectorAll("label.p")) l.style.display = l.classList.contains("p-" + kind) ? "" : "none";
}
$("fault-kind").onchange = showFaultParams;
showFaultParams();
$("fault-inject").onclick = async () => {
  const kind = $("fault-kind").value;
  const body = { service: $("fault-service").value, kind, duration_s: num("fault-duration") };
  if (kind === "error" || kind === "latency") body.probability = num("fault-probability");
  if (kind === "latency") body.latency_ms = num("fault-latency");
  if (kind === "brownout") body.capacity_factor = num("fault-capacity");
  const a = await call("POST", "/api/faults", body);
  if (a) say("injected " + a.kind + " on " + a.service + " for " + a.duration + " (" + a.name + ")");
};
$("fault-clear").onclick = async () => {
  const a = await call("DELETE", "/api/faults");
  if (a) {
    const n = Object.values(a.cleared).reduce((x, y) => x + y, 0);
    say(n ? "cleared " + n + " fault(s)" : "no fault was in force");
  }
};

connect();
