#!/usr/bin/env bash
# e2e on the kind cluster of kind-up.sh: every sample WasmApp becomes Ready; the HTTP sample answers through
# its Service. Needs the cluster from `make kind-up`, and the sample components pushed where the samples say.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need kubectl

kubectl apply -f "$ROOT/examples/wasmapps/"
for app in $(kubectl get wasmapps -o name); do
    kubectl wait "$app" --for=condition=Ready --timeout 180s
done
url="$(kubectl get wasmapps -o jsonpath='{range .items[?(@.status.url)]}{.status.url}{"\n"}{end}' | head -1)"
if [ -n "$url" ]; then
    kubectl run wasmkube-e2e-curl --rm -i --restart=Never --image=curlimages/curl:8.10.1 -- curl -fsS "$url"
fi
kubectl get wasmapps
echo "e2e: passed"
