#!/usr/bin/env bash
# Runs `frlab load` as a Job in the cluster against the release's gateway, waits for it and
# prints its report (`frlab load --json`: the JSON document that ends the Job's log). `make loadtest`.
#   RATE=50 DURATION=60s CLIENT_RETRIES=0 SEED=1 K8S_NAMESPACE=frlab RELEASE=frlab
# The Job is rendered from the chart (templates/loadtest-job.yaml) with the release's own
# values, so it runs the same image and targets the same gateway.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=k8s/lib.sh
. k8s/lib.sh

RATE=${RATE:-50}
DURATION=${DURATION:-60s}
CLIENT_RETRIES=${CLIENT_RETRIES:-0}
SEED=${SEED:-1}

need helm kubectl
require_release
run_s=$(seconds "$DURATION")
# The schedule, then up to the client deadline for the last answers, plus pod start-up.
timeout_s=$((run_s + 180))
job=$(component_name load)

values=$(mktemp)
manifest=$(mktemp)
trap 'rm -f "$values" "$manifest"' EXIT
helm get values "$RELEASE" --namespace "$K8S_NAMESPACE" --output yaml >"$values"
helm template "$RELEASE" "$CHART" --namespace "$K8S_NAMESPACE" -f "$values" \
    --set loadtest.enabled=true \
    --set "loadtest.rate=$RATE" \
    --set-string "loadtest.duration=$DURATION" \
    --set "loadtest.clientRetries=$CLIENT_RETRIES" \
    --set "loadtest.seed=$SEED" \
    --show-only templates/loadtest-job.yaml >"$manifest"

say "load: $RATE req/s for $DURATION (client retries $CLIENT_RETRIES) as job/$job"
kube delete job "$job" --ignore-not-found --wait=true >/dev/null
kube apply -f "$manifest" >/dev/null

deadline=$((SECONDS + timeout_s))
while :; do
    state=$(kube get job "$job" -o jsonpath='{.status.succeeded}/{.status.failed}')
    case "$state" in
        1/*) break ;;
        */1)
            kube logs "job/$job" --tail=50 >&2 || true
            die "job/$job failed (its log is above)"
            ;;
    esac
    if ((SECONDS >= deadline)); then
        kube describe job "$job" >&2 || true
        die "job/$job did not finish within ${timeout_s}s"
    fi
    sleep 2
done
report=$(kube logs "job/$job" | awk '/^\{/ { p = 1 } p')
[[ -n "$report" ]] || die "job/$job printed no JSON report (kubectl logs job/$job)"
printf '%s\n' "$report"
