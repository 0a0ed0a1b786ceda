#!/usr/bin/env bash
# Runs a command with the local Kubernetes cluster up (what `make test` wraps its test run
# in): when no cluster answers on 127.0.0.1:16443, it is built if missing and started
# (`make cluster-local`), and stopped again after the command, pass or fail; a cluster that
# was already running (CI starts one first) is left running. Exits with the command's status.
set -uo pipefail
cd "$(dirname "$0")/.."
export KUBECONFIG=${KUBECONFIG:-/tmp/frlab-k8s/kubeconfig}
started=0
if ! kubectl get --raw /readyz >/dev/null 2>&1; then
    echo "==> no local cluster answers: make cluster-local (the first time it builds Kubernetes, see README)" >&2
    make --no-print-directory cluster-local || exit 1
    started=1
fi
"$@"
status=$?
if [ "$started" = 1 ]; then
    echo "==> stopping the local cluster this run started" >&2
    make --no-print-directory cluster-local-down || true
fi
exit "$status"
