# Shared settings of the e2e scripts (sourced).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${WASMKUBE_KIND_CLUSTER:-wasmkube}"
NAMESPACE="wasmkube-system"
TAG="${WASMKUBE_E2E_TAG:-e2e}"
need() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "e2e: $tool is required (Docker, kind, kubectl, helm)" >&2; exit 1; }
    done
}
# A registry container on kind's Docker network: the host pushes to 127.0.0.1:$REGISTRY_PORT, the nodes
# (shim) and the operator pull from $REGISTRY over plain HTTP.
REGISTRY_CONTAINER="wasmkube-e2e-registry"
REGISTRY_PORT="${WASMKUBE_E2E_REGISTRY_PORT:-5001}"
REGISTRY="$REGISTRY_CONTAINER:5000"
