#!/usr/bin/env bash
# Builds what the local cluster runs (`make cluster-local` calls this first; README
# "Kubernetes"). Root: it installs Debian packages. Idempotent: what is there is kept.
#
#   1. Debian packages the cluster runs on, when missing: etcd-server (3.4), containerd (1.6),
#      runc, containernetworking-plugins (the loopback CNI plugin), openssl, curl.
#   2. Kubernetes v1.20.2 — kube-apiserver, kube-controller-manager, kube-scheduler, kubelet —
#      built from Debian bookworm's source package `kubernetes` with Debian's Go 1.19, and
#      `pause` (the pod sandbox, static C) from the same tree, into $K8S_PREFIX/bin
#      (default /opt/frlab-k8s, outside the clone, so every clone and CI run reuses it).
#      Only when a binary is missing there; about 8 minutes on 2 cores, cold.
#
# Two changes to Debian's tree: the vendored reflect2 v1.0.1 is replaced by Debian's v1.0.2
# (with Go >= 1.18 the old one kills the API server with "fatal error: fault" on the first
# custom-resource request), and kubelet-allow-loopback-node-ip.patch lets the node's address
# be 127.0.0.1. The source tree (2.7 GB with the Go cache) is deleted after a successful
# build unless K8S_KEEP_SRC=1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=${K8S_PREFIX:-/opt/frlab-k8s}
SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1
BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet)

say() { printf '==> k8s-build: %s\n' "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { echo "k8s/local/build.sh installs Debian packages and writes $PREFIX: run it as root" >&2; exit 1; }

apt_updated=0
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "apt-get install ${missing[*]}"
    if [ $apt_updated -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# 1. What the cluster runs on.
apt_install etcd-server containerd runc containernetworking-plugins openssl curl

# 2. Kubernetes, when a binary is missing.
need=()
for b in "${BINS[@]}" pause; do [ -x "$PREFIX/bin/$b" ] || need+=("$b"); done
if [ ${#need[@]} -eq 0 ]; then
    say "Kubernetes binaries present in $PREFIX/bin"
    exit 0
fi
say "building ${need[*]} into $PREFIX/bin"
t0=$(date +%s)
apt_install golang-go make rsync jq dpkg-dev patch gcc libc6-dev golang-github-modern-go-reflect2-dev

WORK=$PREFIX/src
SRC=kubernetes-1.20.5+really1.20.2   # the directory `apt-get source` unpacks to
mkdir -p "$WORK"
cd "$WORK"
if [ ! -f "$SRC/.frlab-prepared" ]; then
    rm -rf "$SRC"
    # A deb-src twin of the Debian source list, for `apt-get source` only; removed again so
    # that later `apt-get update`s do not fetch source indexes.
    src_list=/etc/apt/sources.list.d/frlab-k8s-src.sources
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$src_list"
    trap 'rm -f "$src_list"' EXIT
    apt-get update -qq
    say "apt-get source kubernetes=$SRC_VERSION (34 MB, full tree with vendor/)"
    apt-get source -qq "kubernetes=$SRC_VERSION" >/dev/null 2>&1 \
        || { echo "apt-get source kubernetes=$SRC_VERSION failed" >&2; exit 1; }
    rm -f "$src_list"
    trap - EXIT
    r2=$SRC/vendor/github.com/modern-go/reflect2
    rm -f "$r2"/*.go "$r2"/*.s
    cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go \
        /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$r2/"
    patch -s -d "$SRC" -p1 <"$HERE/kubelet-allow-loopback-node-ip.patch"
    touch "$SRC/.frlab-prepared"
fi
cd "$SRC"
# The tree builds in GOPATH mode as k8s.io/kubernetes; the Go cache lands in _output/.
export GOPATH=$PWD/.go CGO_ENABLED=0 HOME=${HOME:-/root}
mkdir -p .go/src/k8s.io
[ -L .go/src/k8s.io/kubernetes ] || ln -s ../../.. .go/src/k8s.io/kubernetes
what=()
for b in "${need[@]}"; do [ "$b" = pause ] || what+=("cmd/$b"); done
if [ ${#what[@]} -gt 0 ]; then
    make WHAT="${what[*]}"
fi
mkdir -p "$PREFIX/bin"
for b in "${need[@]}"; do
    if [ "$b" = pause ]; then
        gcc -static -O2 -DVERSION=3.2-frlab -o "$PREFIX/bin/pause" build/pause/linux/pause.c
    else
        install -m 0755 "_output/bin/$b" "$PREFIX/bin/"
    fi
done
cat >"$PREFIX/BUILD-INFO" <<EOF
Kubernetes from Debian's source package kubernetes=$SRC_VERSION, built $(date -u +%FT%TZ)
with $(go version) by k8s/local/build.sh (reflect2 1.0.2, kubelet loopback node IP patch).
EOF
cd /
[ "${K8S_KEEP_SRC:-0}" = 1 ] || rm -rf "$WORK"
say "built in $(($(date +%s) - t0)) s: $(cd "$PREFIX/bin" && ls | tr '\n' ' ')"
