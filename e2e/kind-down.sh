#!/usr/bin/env bash
# Uninstalls the chart (its pre-delete hook removes the runtime from every node) and deletes the kind cluster.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need kind
"$HELM" uninstall "$RELEASE" --namespace "$NAMESPACE" --wait --timeout 10m || true
kind delete cluster --name "$CLUSTER"
