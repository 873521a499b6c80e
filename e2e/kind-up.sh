#!/usr/bin/env bash
# A kind cluster with wasmkube installed from this checkout: images built with the Dockerfile, loaded into
# the nodes, chart installed (e2e/install-chart.sh), every node labelled by the installer. Needs Docker, kind, kubectl, helm.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need docker kind kubectl

if ! kind get clusters | grep -qx "$CLUSTER"; then
    kind create cluster --name "$CLUSTER" --config "$ROOT/e2e/kind.yaml" --wait 120s
fi
if ! docker inspect "$REGISTRY_CONTAINER" >/dev/null 2>&1; then
    docker run -d --restart=always -p "127.0.0.1:$REGISTRY_PORT:5000" --name "$REGISTRY_CONTAINER" registry:2
fi
docker network connect kind "$REGISTRY_CONTAINER" 2>/dev/null || true
# The e2e components, built from examples/ and pushed with our CLI.
"$ROOT/e2e/push-components.sh"

docker build --target operator -t "wasmkube-operator:$TAG" "$ROOT"
docker build --target node -t "wasmkube-node:$TAG" "$ROOT"
kind load docker-image --name "$CLUSTER" "wasmkube-operator:$TAG" "wasmkube-node:$TAG"

"$ROOT/e2e/install-chart.sh"
echo "kind cluster $CLUSTER is ready with wasmkube"
