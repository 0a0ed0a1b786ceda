#!/usr/bin/env bash
# Stops the local cluster that k8s/local/up.sh started (`make cluster-local-down`): the
# kubelet first (so it restarts nothing), then every pod's containers and their shims, then
# containerd, the control plane and etcd — each by the pid file up.sh wrote, never by name.
# Unmounts what the kubelet and containerd mounted under $K8S_RUN and deletes the cluster's
# state; the logs stay in $K8S_RUN/logs/. Nothing running: exits 0.
set -uo pipefail
RUN=${K8S_RUN:-/tmp/frlab-k8s}
SOCK=$RUN/containerd/containerd.sock

# stop NAME: TERM, then KILL after 10 s, the process whose pid is in $RUN/NAME.pid.
stop() {
    local f=$RUN/$1.pid pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$f"
}

[ -d "$RUN" ] || exit 0
stop kubelet
if [ -S "$SOCK" ] && [ -f "$RUN/containerd.pid" ] && kill -0 "$(cat "$RUN/containerd.pid")" 2>/dev/null; then
    ctr=(ctr -a "$SOCK" -n k8s.io)
    for t in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
    for _ in $(seq 20); do
        [ -z "$("${ctr[@]}" tasks ls -q 2>/dev/null | head -n1)" ] && break
        for t in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks delete -f "$t" >/dev/null 2>&1; done
        sleep 0.25
    done
    for c in $("${ctr[@]}" containers ls -q 2>/dev/null); do "${ctr[@]}" containers delete "$c" >/dev/null 2>&1; done
fi
stop containerd
# A shim outlives containerd: end those of this cluster (their command line names its socket).
for d in /proc/[0-9]*; do
    if tr '\0' ' ' 2>/dev/null <"$d/cmdline" | grep -q "^/usr/bin/containerd-shim-runc-v2 .*-address $SOCK "; then
        kill -KILL "${d#/proc/}" 2>/dev/null
    fi
done
for c in scheduler controller-manager apiserver etcd; do stop "$c"; done
grep -o " $RUN/[^ ]*" /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m"
done
# The pods' cgroups (empty now) under every controller.
for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$root" ] && find "$root" -depth -type d -exec rmdir {} + 2>/dev/null
done
mkdir -p "$RUN/logs"
for l in "$RUN"/*.log; do [ -f "$l" ] && mv "$l" "$RUN/logs/"; done
find "$RUN" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
echo "==> cluster-local: stopped (logs in $RUN/logs/)" >&2
exit 0
