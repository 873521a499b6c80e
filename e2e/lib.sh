# shellcheck shell=bash disable=SC2034 # sourced: the variables are used by the scripts that source it
# Shared settings of the e2e scripts (sourced).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${WASMKUBE_KIND_CLUSTER:-wasmkube}"
NAMESPACE="wasmkube-system"
TAG="${WASMKUBE_E2E_TAG:-e2e}"
need() {
    for tool in "$@"; do
        if [ "$tool" = helm ]; then
            [ -x "$HELM" ] || { echo "e2e: helm is required (on the PATH, or: make tools)" >&2; exit 1; }
        else
            command -v "$tool" >/dev/null || { echo "e2e: $tool is required" >&2; exit 1; }
        fi
    done
}
# kind: a registry container on kind's Docker network: the host pushes to 127.0.0.1:$REGISTRY_PORT, the nodes
# (shim) and the operator pull from $REGISTRY over plain HTTP. Other clusters name theirs in
# WASMKUBE_E2E_REGISTRY (as the nodes reach it) and WASMKUBE_E2E_PUSH_REGISTRY (as this host reaches it).
REGISTRY_CONTAINER="wasmkube-e2e-registry"
REGISTRY_PORT="${WASMKUBE_E2E_REGISTRY_PORT:-5001}"
REGISTRY="${WASMKUBE_E2E_REGISTRY:-$REGISTRY_CONTAINER:5000}"
PUSH_REGISTRY="${WASMKUBE_E2E_PUSH_REGISTRY:-127.0.0.1:$REGISTRY_PORT}"
# The chart as e2e/install-chart.sh installs it: images REPOSITORY:TAG (unset: what kind-up.sh builds and loads; set
# but empty: the chart's defaults, as `make images` builds them), a values file and extra helm arguments (both
# optional; scripts/local-cluster.sh sets them in its e2e.env).
RELEASE="wasmkube"
OPERATOR_IMAGE="${WASMKUBE_E2E_OPERATOR_IMAGE-wasmkube-operator:$TAG}"
NODE_IMAGE="${WASMKUBE_E2E_NODE_IMAGE-wasmkube-node:$TAG}"
IMAGE_PULL_POLICY="${WASMKUBE_E2E_IMAGE_PULL_POLICY:-IfNotPresent}"
VALUES="${WASMKUBE_E2E_VALUES:-}"
HELM_ARGS="${WASMKUBE_E2E_HELM_ARGS:-}"
# Where the nodes keep containerd's config and the shim (the chart's nodeInstaller.containerdConfig and binDir).
NODE_CONTAINERD_CONFIG="${WASMKUBE_E2E_CONTAINERD_CONFIG:-/etc/containerd/config.toml}"
NODE_BIN_DIR="${WASMKUBE_E2E_BIN_DIR:-/usr/local/bin}"
# helm and kubectl from the PATH, else the ones `make tools` fetched.
source "$ROOT/scripts/tools-env.sh"
if command -v helm >/dev/null; then HELM="$(command -v helm)"; fi
if ! command -v kubectl >/dev/null; then PATH="$PATH:$TOOLS_DIR/bin"; fi
