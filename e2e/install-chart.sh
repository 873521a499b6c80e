#!/usr/bin/env bash
# Installs (or upgrades) the wasmkube chart from this checkout into the cluster the kubeconfig names, with the images
# and values of lib.sh, and waits until every node is labelled by the node installer.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need kubectl helm

args=(upgrade --install "$RELEASE" "$ROOT/charts/wasmkube" --namespace "$NAMESPACE" --create-namespace
    --set "operator.image.pullPolicy=$IMAGE_PULL_POLICY" --set "nodeInstaller.image.pullPolicy=$IMAGE_PULL_POLICY"
    --set "shim.insecureRegistries={$REGISTRY}" --wait --timeout 5m)
[ -z "$OPERATOR_IMAGE" ] ||
    args+=(--set "operator.image.repository=${OPERATOR_IMAGE%:*}" --set "operator.image.tag=${OPERATOR_IMAGE##*:}")
[ -z "$NODE_IMAGE" ] ||
    args+=(--set "nodeInstaller.image.repository=${NODE_IMAGE%:*}" --set "nodeInstaller.image.tag=${NODE_IMAGE##*:}")
[ -z "$VALUES" ] || args+=(--values "$VALUES")
# shellcheck disable=SC2206 # extra helm arguments, split as the shell splits them
args+=($HELM_ARGS)
echo "e2e: helm ${args[*]}"
"$HELM" "${args[@]}"
kubectl -n "$NAMESPACE" rollout status daemonset/wasmkube-node-installer --timeout 5m
nodes="$(kubectl get nodes --no-headers | wc -l)"
ready="$(kubectl get nodes -l wasmkube.dev/runtime=ready --no-headers | wc -l)"
[ "$nodes" = "$ready" ] || { echo "e2e: only $ready of $nodes nodes are labelled" >&2; exit 1; }
echo "e2e: wasmkube installed, $ready of $nodes nodes ready"
