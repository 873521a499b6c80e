# shellcheck shell=bash disable=SC2034 # sourced: the variables are used by the scripts that source it
# Where scripts/tools.sh puts the chart tools; sourced by it and by scripts/chart.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/tools}"
HELM="$TOOLS_DIR/bin/helm"
KUBECTL_TOOL="$TOOLS_DIR/bin/kubectl"
VALIDATE="$TOOLS_DIR/venv/bin/kubernetes-validate"
