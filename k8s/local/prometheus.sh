#!/usr/bin/env bash
# Prometheus for the local cluster, as a process on the host (Debian's prometheus, from
# `make tools`): no image can be pulled there, and Debian builds Prometheus without
# Kubernetes discovery. The chart's pods are found with kubectl instead — the lab's pods of
# the release (label app.kubernetes.io/part-of=frlab), each at its pod IP (127.0.0.1 on the
# local node) and container port named `http` — and scraped as the chart's
# files/prometheus/prometheus.yml scrapes them: job `frlab`, every 5 s, honor_labels, the
# labels service, pod and namespace, and the chart's rules.
#
#   k8s/local/prometheus.sh DIR PORT
# writes DIR/prometheus.yml, starts Prometheus on 127.0.0.1:PORT with its TSDB in DIR, waits
# until it is ready and prints its pid. The caller stops it (k8s/experiment-k8s.sh does).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=k8s/lib.sh
. k8s/lib.sh

dir=${1:?usage: k8s/local/prometheus.sh DIR PORT}
port=${2:?usage: k8s/local/prometheus.sh DIR PORT}
need prometheus kubectl python3 curl
mkdir -p "$dir"
cp helm/frlab/files/prometheus/rules.yaml "$dir/rules.yaml"
kube get pods -l "app.kubernetes.io/part-of=frlab,app.kubernetes.io/instance=$RELEASE" -o json >"$dir/pods.json"
python3 - "$dir" <<'PY'
import json, pathlib, sys

d = pathlib.Path(sys.argv[1])
targets = []
for pod in json.loads((d / "pods.json").read_text())["items"]:
    ip = pod.get("status", {}).get("podIP")
    if pod.get("status", {}).get("phase") != "Running" or not ip:
        continue
    for c in pod["spec"]["containers"]:
        for p in c.get("ports", []):
            if p.get("name") == "http":
                meta = pod["metadata"]
                targets.append({
                    "targets": [f"{ip}:{p['containerPort']}"],
                    "labels": {
                        "service": meta["labels"]["app.kubernetes.io/name"],
                        "pod": meta["name"],
                        "namespace": meta["namespace"],
                    },
                })
if not targets:
    sys.exit("error: no Running frlab pod with a port named http: is the release deployed?")
config = {
    "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
    "rule_files": [str(d / "rules.yaml")],
    "scrape_configs": [{
        "job_name": "frlab",
        "honor_labels": True,
        "metrics_path": "/metrics",
        "static_configs": targets,
    }],
}
# JSON is YAML: Prometheus reads it as it is.
(d / "prometheus.yml").write_text(json.dumps(config, indent=2) + "\n")
PY
promtool check config "$dir/prometheus.yml" >/dev/null || die "promtool rejects $dir/prometheus.yml"
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/tsdb" \
    --web.listen-address="127.0.0.1:$port" >"$dir/prometheus.log" 2>&1 &
pid=$!
for _ in $(seq 60); do
    curl -fsS "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || die "prometheus exited: $(tail -5 "$dir/prometheus.log")"
    sleep 0.5
done
curl -fsS "http://127.0.0.1:$port/-/ready" >/dev/null || die "prometheus is not ready on 127.0.0.1:$port"
echo "$pid"
