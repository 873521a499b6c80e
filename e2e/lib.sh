# shellcheck shell=bash disable=SC2034 # sourced: the variables are used by the scripts that source it
# Shared settings of the e2e scripts (sourced).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${WASMKUBE_KIND_CLUSTER:-wasmkube}"
NAMESPACE="wasmkube-system"
TAG="${WASMKUBE_E2E_TAG:-e2e}"
need() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "e2e: $tool is required" >&2; exit 1; }
    done
}
# kind: a registry container on kind's Docker network: the host pushes to 127.0.0.1:$REGISTRY_PORT, the nodes
# (shim) and the operator pull from $REGISTRY over plain HTTP. Other clusters name theirs in
# WASMKUBE_E2E_REGISTRY (as the nodes reach it) and WASMKUBE_E2E_PUSH_REGISTRY (as this host reaches it).
REGISTRY_CONTAINER="wasmkube-e2e-registry"
REGISTRY_PORT="${WASMKUBE_E2E_REGISTRY_PORT:-5001}"
REGISTRY="${WASMKUBE_E2E_REGISTRY:-$REGISTRY_CONTAINER:5000}"
PUSH_REGISTRY="${WASMKUBE_E2E_PUSH_REGISTRY:-127.0.0.1:$REGISTRY_PORT}"
