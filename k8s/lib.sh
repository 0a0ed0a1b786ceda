# Shared by k8s/*.sh: settings (from the environment, as the Makefile passes them), checks
# and helpers. Sourced, not run.
# shellcheck shell=bash

K8S_NAMESPACE=${K8S_NAMESPACE:-frlab}
RELEASE=${RELEASE:-frlab}
IMAGE_REPO=${IMAGE_REPO:-frlab}
IMAGE_TAG=${IMAGE_TAG:-dev}
CHART=${CHART:-helm/frlab}
# Extra values files after the profile's, space-separated (the local cluster's:
# k8s/local/values.yaml, which `make ... CLUSTER=local` passes).
K8S_VALUES=${K8S_VALUES:-}
VALUES_ARGS=()
for f in $K8S_VALUES; do VALUES_ARGS+=(-f "$f"); done

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

say() {
    printf '==> %s\n' "$*" >&2
}

# need TOOL...: fails naming the first tool that is not on PATH.
need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH (helm, kubectl, prometheus: make tools; kind and docker: install them)"
    done
}

# The object name the chart gives a component: "<release>-<component>", or
# "<release>-frlab-<component>" when the release name does not contain "frlab".
component_name() {
    case "$RELEASE" in
        *frlab*) printf '%s-%s' "$RELEASE" "$1" ;;
        *) printf '%s-frlab-%s' "$RELEASE" "$1" ;;
    esac
}

# seconds DURATION: 500ms, 60s, 2m -> whole seconds (rounded up).
seconds() {
    case "$1" in
        *ms) echo $(((${1%ms} + 999) / 1000)) ;;
        *s) echo "${1%s}" ;;
        *m) echo $((${1%m} * 60)) ;;
        *) die "duration '$1': expected e.g. 500ms, 60s or 2m" ;;
    esac
}

kube() {
    kubectl --namespace "$K8S_NAMESPACE" "$@"
}

# The release must exist: the Job and the queries use its Services.
require_release() {
    helm status "$RELEASE" --namespace "$K8S_NAMESPACE" >/dev/null 2>&1 \
        || die "no helm release '$RELEASE' in namespace '$K8S_NAMESPACE': run make deploy PROFILE=... first"
}
