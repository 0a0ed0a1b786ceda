#!/usr/bin/env bash
# Starts the local cluster on 127.0.0.1 (`make cluster-local`, after k8s/local/build.sh):
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd and one kubelet
# (node `frlab-local`, address 127.0.0.1). Writes $K8S_RUN/kubeconfig (TLS verified against
# the cluster's own CA, token auth as system:masters). Stop it with k8s/local/down.sh.
#
# Every process listens on 127.0.0.1 only: API server 16443, etcd 12379/12380, kubelet
# 10250 (and its healthz 10248). Pods run with hostNetwork only (the CNI config is the
# loopback plugin alone: no bridge, no pod addresses), and images are never pulled: they are
# imported into containerd (k8s/local/image.py import), the pause image here.
# Already running: says so and exits 0. A stopped cluster's state is wiped first, so every
# start is a fresh cluster.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${K8S_PREFIX:-/opt/frlab-k8s}/bin
RUN=${K8S_RUN:-/tmp/frlab-k8s}
APORT=16443
EPORT=12379
TOKEN=frlab-local-admin
NODE=frlab-local
export KUBECONFIG=$RUN/kubeconfig

say() { printf '==> cluster-local: %s\n' "$*" >&2; }
die() { printf 'error: cluster-local: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (containerd and the kubelet need it)"
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet pause; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run k8s/local/build.sh (make cluster-local does)"
done
for c in etcd containerd ctr runc curl openssl; do
    command -v "$c" >/dev/null || die "$c is not installed: run k8s/local/build.sh (make cluster-local does)"
done
[ -x /usr/lib/cni/loopback ] || die "/usr/lib/cni/loopback is missing: run k8s/local/build.sh"

api_ok() {
    curl -sf --max-time 2 --cacert "$RUN/pki/ca.crt" -H "Authorization: Bearer $TOKEN" \
        "https://127.0.0.1:$APORT$1" >/dev/null 2>&1
}
alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

if alive apiserver && alive kubelet && api_ok /readyz; then
    say "already running (KUBECONFIG=$KUBECONFIG)"
    exit 0
fi
"$HERE/down.sh" >/dev/null 2>&1 || true
for port in $APORT $EPORT $((EPORT + 1)) 10250 10248; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "127.0.0.1:$port is in use by another process (a cluster not started by this script?)"
    fi
done
rm -rf "$RUN"
mkdir -p "$RUN/pki"
t0=$(date +%s%N)
ms() { echo $((($(date +%s%N) - t0) / 1000000)); }

# Keys: a CA, the API server's serving certificate, the service-account signing key.
(
    cd "$RUN/pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -keyout ca.key -out ca.crt -subj /CN=frlab-local-ca 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >ext.cnf
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -out apiserver.crt -extfile ext.cnf 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    echo "$TOKEN,admin,admin-uid,system:masters" >tokens.csv
)
cat >"$KUBECONFIG" <<KC
apiVersion: v1
kind: Config
clusters:
  - name: frlab-local
    cluster: {server: "https://127.0.0.1:$APORT", certificate-authority: "$RUN/pki/ca.crt"}
users:
  - name: admin
    user: {token: "$TOKEN"}
contexts:
  - name: frlab-local
    context: {cluster: frlab-local, user: admin}
current-context: frlab-local
KC

# bg NAME CMD...: runs CMD in the background, log in $RUN/NAME.log, pid in $RUN/NAME.pid.
bg() {
    local name=$1
    shift
    "$@" >"$RUN/$name.log" 2>&1 &
    echo $! >"$RUN/$name.pid"
}
fail() {
    local log
    for log in "$@"; do echo "--- $RUN/$log.log (last lines)" >&2; tail -15 "$RUN/$log.log" >&2 || true; done
    "$HERE/down.sh" >/dev/null 2>&1 || true
    die "the cluster did not start (see above)"
}

bg etcd etcd --name frlab-local --data-dir "$RUN/etcd" \
    --listen-client-urls "http://127.0.0.1:$EPORT" --advertise-client-urls "http://127.0.0.1:$EPORT" \
    --listen-peer-urls "http://127.0.0.1:$((EPORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((EPORT + 1))" \
    --initial-cluster "frlab-local=http://127.0.0.1:$((EPORT + 1))" --listen-metrics-urls ""
# --service-cluster-ip-range is bookkeeping only: there is no kube-proxy, Services route nothing.
bg apiserver "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$EPORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=$APORT --insecure-port=0 \
    --tls-cert-file="$RUN/pki/apiserver.crt" --tls-private-key-file="$RUN/pki/apiserver.key" \
    --client-ca-file="$RUN/pki/ca.crt" --token-auth-file="$RUN/pki/tokens.csv" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$RUN/pki/sa.pub" --service-account-signing-key-file="$RUN/pki/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true \
    --kubelet-preferred-address-types=InternalIP
for _ in $(seq 240); do
    api_ok /readyz && break
    alive apiserver || break
    sleep 0.25
done
api_ok /readyz || fail etcd apiserver
say "API server ready in $(ms) ms"

# The node is never evicted for a missed heartbeat (one machine, often busy).
bg controller-manager "$BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG" --leader-elect=false \
    --bind-address=127.0.0.1 --port=0 --secure-port=0 --node-monitor-grace-period=1h \
    --service-account-private-key-file="$RUN/pki/sa.key" --root-ca-file="$RUN/pki/ca.crt" \
    --service-cluster-ip-range=10.0.0.0/24
bg scheduler "$BIN/kube-scheduler" --kubeconfig="$KUBECONFIG" --leader-elect=false \
    --bind-address=127.0.0.1 --port=0 --secure-port=0

# containerd: state under $RUN; the loopback CNI plugin only; pause image built locally;
# restrict_oom_score_adj because this VM lacks CAP_SYS_RESOURCE (runc fails without it).
mkdir -p "$RUN/containerd/cni" "$RUN/kubelet"
echo '{"cniVersion":"0.4.0","name":"loopback-only","plugins":[{"type":"loopback"}]}' >"$RUN/containerd/cni/10-loopback.conflist"
containerd config default | sed \
    -e "s|^root = .*|root = \"$RUN/containerd/root\"|" \
    -e "s|^state = .*|state = \"$RUN/containerd/state\"|" \
    -e "0,/^  address = \"\/run\/containerd\/containerd.sock\"/s||  address = \"$RUN/containerd/containerd.sock\"|" \
    -e "s|sandbox_image = .*|sandbox_image = \"registry.k8s.io/pause:3.2-frlab\"|" \
    -e "s|restrict_oom_score_adj = false|restrict_oom_score_adj = true|" \
    -e "s|conf_dir = .*|conf_dir = \"$RUN/containerd/cni\"|" \
    -e "s|bin_dir = .*|bin_dir = \"/usr/lib/cni\"|" \
    >"$RUN/containerd/config.toml"
grep -q "address = \"$RUN/containerd/containerd.sock\"" "$RUN/containerd/config.toml" \
    || die "could not set containerd's socket path in $RUN/containerd/config.toml"
bg containerd containerd --config "$RUN/containerd/config.toml"
for _ in $(seq 80); do [ -S "$RUN/containerd/containerd.sock" ] && break; sleep 0.25; done
[ -S "$RUN/containerd/containerd.sock" ] || fail containerd
python3 "$HERE/image.py" pause --pause "$BIN/pause" --out "$RUN/pause.tar"
ctr -a "$RUN/containerd/containerd.sock" -n k8s.io images import "$RUN/pause.tar" >/dev/null

cat >"$RUN/kubelet/config.yaml" <<KC
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
cgroupDriver: cgroupfs
failSwapOn: false
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
KC
bg kubelet "$BIN/kubelet" --config="$RUN/kubelet/config.yaml" --kubeconfig="$KUBECONFIG" \
    --hostname-override=$NODE --node-ip=127.0.0.1 --root-dir="$RUN/kubelet/root" \
    --cert-dir="$RUN/kubelet/pki" --container-runtime=remote \
    --container-runtime-endpoint="unix://$RUN/containerd/containerd.sock"

ready() {
    curl -sf --max-time 2 --cacert "$RUN/pki/ca.crt" -H "Authorization: Bearer $TOKEN" \
        "https://127.0.0.1:$APORT/api/v1/nodes/$NODE" 2>/dev/null \
        | tr -d ' \n' | grep -q '"type":"Ready","status":"True"'
}
for _ in $(seq 240); do
    ready && api_ok /api/v1/namespaces/default/serviceaccounts/default && break
    alive kubelet && alive controller-manager && alive scheduler || break
    sleep 0.5
done
ready || fail kubelet containerd
api_ok /api/v1/namespaces/default/serviceaccounts/default || fail controller-manager
say "node $NODE Ready in $(ms) ms; KUBECONFIG=$KUBECONFIG"
