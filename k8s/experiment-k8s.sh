#!/usr/bin/env bash
# One resilience profile x one fault scenario on the cluster (`make experiment-k8s
# PROFILE=d-breakers SCENARIO=payment-errors`):
#   1. deploy the profile (helm upgrade --install --wait), clear every FaultInjection;
#   2. start the load Job (k8s/loadtest.sh), wait WARMUP, apply k8s/chaos/SCENARIO.yaml;
#   3. when the Job is done, read the recording rules back from Prometheus (the chart's,
#      through kubectl port-forward; or, with PROMETHEUS=local, one started on the host by
#      k8s/local/prometheus.sh before the load) averaged over the run, and print them
#      beside the load generator's own report;
#   4. clear the fault.
# Settings: RATE (50), DURATION (120s), WARMUP (30s), CLIENT_RETRIES (3 for retry-storm,
# else 0), PROM_PORT (19090), PROMETHEUS (chart or local), K8S_VALUES (extra values files),
# K8S_NAMESPACE, RELEASE, IMAGE_REPO, IMAGE_TAG.
# One trial, not the local runner's seeded trials with confidence intervals (frlab
# experiment): a quick look on a real cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=k8s/lib.sh
. k8s/lib.sh

PROFILE=${1:-${PROFILE:-f-full}}
SCENARIO=${2:-${SCENARIO:-payment-errors}}
RATE=${RATE:-50}
DURATION=${DURATION:-120s}
WARMUP=${WARMUP:-30s}
PROM_PORT=${PROM_PORT:-19090}
PROMETHEUS=${PROMETHEUS:-chart}
if [[ -z "${CLIENT_RETRIES:-}" ]]; then
    if [[ "$SCENARIO" == retry-storm ]]; then CLIENT_RETRIES=3; else CLIENT_RETRIES=0; fi
fi
export RATE DURATION CLIENT_RETRIES K8S_NAMESPACE RELEASE

need helm kubectl curl python3
[[ "$PROMETHEUS" == chart || "$PROMETHEUS" == local ]] || die "PROMETHEUS=$PROMETHEUS: expected chart or local"
profile_file="helm/profiles/$PROFILE.yaml"
scenario_file="k8s/chaos/$SCENARIO.yaml"
[[ -f "$profile_file" ]] || die "no profile $profile_file (see helm/profiles/)"
[[ -f "$scenario_file" ]] || die "no scenario $scenario_file (see k8s/chaos/)"
run_s=$(seconds "$DURATION")
warmup_s=$(seconds "$WARMUP")
((warmup_s < run_s)) || die "WARMUP ($WARMUP) must be shorter than DURATION ($DURATION)"

work=$(mktemp -d)
pf_pid=""
load_pid=""
prom_pid=""
cleanup() {
    [[ -n "$load_pid" ]] && kill "$load_pid" 2>/dev/null || true
    [[ -n "$pf_pid" ]] && kill "$pf_pid" 2>/dev/null || true
    [[ -n "$prom_pid" ]] && kill "$prom_pid" 2>/dev/null && wait "$prom_pid" 2>/dev/null || true
    kube delete -f "$scenario_file" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

say "deploy profile $PROFILE"
helm upgrade --install "$RELEASE" "$CHART" --namespace "$K8S_NAMESPACE" --create-namespace \
    -f "$profile_file" "${VALUES_ARGS[@]}" --set "profileName=$PROFILE" \
    --set "image.repository=$IMAGE_REPO" --set "image.tag=$IMAGE_TAG" \
    --wait --timeout 10m >/dev/null
kube delete faultinjections --all --wait=true --timeout=120s >/dev/null
for svc in gateway orders payments inventory notifications; do
    kube rollout status "deployment/$(component_name "$svc")" --timeout=300s >/dev/null \
        || die "deployment/$(component_name "$svc") did not become ready"
done
if [[ "$PROMETHEUS" == local ]]; then
    say "Prometheus on the host, 127.0.0.1:$PROM_PORT (k8s/local/prometheus.sh)"
    prom_pid=$(k8s/local/prometheus.sh "$work/prometheus" "$PROM_PORT")
fi

say "load $RATE req/s for $DURATION; fault $SCENARIO after $WARMUP"
start=$(date +%s)
k8s/loadtest.sh >"$work/load.json" &
load_pid=$!
sleep "$warmup_s"
kube apply -f "$scenario_file" >/dev/null
wait "$load_pid" || { load_pid=""; die "the load Job failed (see above)"; }
load_pid=""
end=$(date +%s)
window_s=$((end - start))

if [[ "$PROMETHEUS" == chart ]]; then
    say "query Prometheus (port-forward :$PROM_PORT)"
    kube port-forward "svc/$(component_name prometheus)" "$PROM_PORT:9090" >"$work/pf.log" 2>&1 &
    pf_pid=$!
    for _ in $(seq 60); do
        curl -fsS "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null 2>&1 && break
        kill -0 "$pf_pid" 2>/dev/null || die "kubectl port-forward exited: $(cat "$work/pf.log")"
        sleep 1
    done
else
    # The rules evaluate every 5 s: let the last window's samples land.
    sleep 6
    say "query Prometheus (127.0.0.1:$PROM_PORT)"
fi
curl -fsS "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null || die "Prometheus is not ready on :$PROM_PORT"

# query NAME PROMQL: the instant query at the end of the run, saved as NAME.json.
query() {
    curl -fsS --get "http://127.0.0.1:$PROM_PORT/api/v1/query" \
        --data-urlencode "query=$2" --data-urlencode "time=$end" >"$work/$1.json" \
        || die "Prometheus query failed: $2"
}
range="${window_s}s"
query success "avg_over_time(frlab:success_rate:ratio_rate1m[$range])"
query goodput "avg_over_time(frlab:goodput:rate1m[$range])"
query p95 "max_over_time(frlab:place_order_latency_seconds:p95_rate1m[$range])"
query amplification "avg_over_time(frlab:amplification:ratio_rate1m[$range])"
query from_gateway "avg_over_time(frlab:amplification_from_gateway:ratio_rate1m[$range])"
query injected "sum by (service, kind) (increase(chaos_injected_total[$range]))"

python3 - "$work" "$PROFILE" "$SCENARIO" "$range" <<'PY'
import json, sys, pathlib

work, profile, scenario, window = sys.argv[1:5]
d = pathlib.Path(work)

def result(name):
    doc = json.loads((d / f"{name}.json").read_text())
    if doc.get("status") != "success":
        sys.exit(f"error: Prometheus answered {doc} for {name}")
    return doc["data"]["result"]

def scalar(name):
    r = result(name)
    return float(r[0]["value"][1]) if r else None

def fmt(v, pct=False):
    if v is None:
        return "no data"
    return f"{v * 100:.1f} %" if pct else f"{v:.3f}"

load = json.loads((d / "load.json").read_text())
print(f"\nprofile {profile} x scenario {scenario}  (one trial; Prometheus over the last {window})\n")
print(f"{'measure':<44} {'value':>12}")
print(f"{'-' * 44} {'-' * 12}")
issued = load.get("issued") or 0
client_sr = (load.get("succeeded", 0) / issued) if issued else None
print(f"{'success rate (load generator, client side)':<44} {fmt(client_sr, True):>12}")
print(f"{'success rate (gateway, frlab:success_rate)':<44} {fmt(scalar('success'), True):>12}")
print(f"{'goodput req/s (frlab:goodput)':<44} {fmt(scalar('goodput')):>12}")
print(f"{'p95 ms (load generator, from intended send)':<44} {fmt(load.get('latency_ms', {}).get('p95')):>12}")
p95 = scalar("p95")
print(f"{'p95 ms (gateway server side, max of 1m p95)':<44} {fmt(p95 * 1000 if p95 is not None else None):>12}")
for r in sorted(result("amplification"), key=lambda r: r["metric"].get("hop", "")):
    hop = r["metric"].get("hop", "?")
    print(f"{'amplification per hop: ' + hop:<44} {fmt(float(r['value'][1])):>12}")
for r in sorted(result("from_gateway"), key=lambda r: r["metric"].get("hop", "")):
    hop = r["metric"].get("hop", "?")
    print(f"{'attempts at ' + hop + ' per logical request':<44} {fmt(float(r['value'][1])):>12}")
# Only the kinds that happened (every service exports a zero series per kind).
for r in sorted(result("injected"), key=lambda r: (r["metric"].get("service", ""), r["metric"].get("kind", ""))):
    m = r["metric"]
    if float(r["value"][1]) == 0:
        continue
    label = f"faults injected: {m.get('service', '?')} {m.get('kind', '?')}"
    print(f"{label:<44} {float(r['value'][1]):>12.0f}")
if load.get("saturated"):
    print("\nwarning: the load generator was saturated (requests dropped); the rate was not met")
PY
