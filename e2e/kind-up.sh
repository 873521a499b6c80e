#!/usr/bin/env bash
# A kind cluster with wasmkube installed from this checkout: images built with the Dockerfile, loaded into
# the nodes, chart installed, every node labelled by the installer. Needs Docker, kind, kubectl, helm.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need docker kind kubectl helm

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

helm upgrade --install wasmkube "$ROOT/charts/wasmkube" --namespace "$NAMESPACE" --create-namespace \
    --set operator.image.repository=wasmkube-operator --set operator.image.tag="$TAG" \
    --set operator.image.pullPolicy=Never \
    --set nodeInstaller.image.repository=wasmkube-node --set nodeInstaller.image.tag="$TAG" \
    --set nodeInstaller.image.pullPolicy=Never \
    --set "shim.insecureRegistries={$REGISTRY}" \
    --wait --timeout 5m
kubectl -n "$NAMESPACE" rollout status daemonset/wasmkube-node-installer --timeout 5m
nodes="$(kubectl get nodes --no-headers | wc -l)"
ready="$(kubectl get nodes -l wasmkube.dev/runtime=ready --no-headers | wc -l)"
[ "$nodes" = "$ready" ] || { echo "e2e: only $ready of $nodes nodes are labelled" >&2; exit 1; }
echo "kind cluster $CLUSTER is ready with wasmkube on $ready nodes"
