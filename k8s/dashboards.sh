#!/usr/bin/env bash
# Port-forwards Grafana (:3000), Prometheus (:9090), Jaeger (:16686) and, when enabled, the
# console (:8080) of the release until ctrl-c. `make dashboards`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=k8s/lib.sh
. k8s/lib.sh

need kubectl helm
require_release
pids=()
stop() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap stop EXIT INT TERM

# forward COMPONENT LOCAL:REMOTE LABEL: only for Services the release has.
forward() {
    local svc
    svc=$(component_name "$1")
    if kube get service "$svc" >/dev/null 2>&1; then
        kube port-forward "service/$svc" "$2" >/dev/null &
        pids+=($!)
        printf '  %-11s http://127.0.0.1:%s\n' "$3" "${2%%:*}"
    fi
}
say "port-forwards (ctrl-c stops them)"
forward grafana 3000:3000 Grafana
forward prometheus 9090:9090 Prometheus
forward jaeger 16686:16686 Jaeger
forward console 8080:8080 Console
((${#pids[@]} > 0)) || die "the release has none of grafana, prometheus, jaeger, console"
wait
