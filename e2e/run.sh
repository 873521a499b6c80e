#!/usr/bin/env bash
# e2e on the kind cluster of kind-up.sh: every sample WasmApp becomes Ready; the HTTP sample answers through
# its Service; an idle app scales to zero, a request wakes it and gets 200, and the wake-up latency is printed.
# Needs the cluster from `make kind-up` (which pushes the e2e component to the registry beside kind).
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

# --- Scale to zero (docs/autoscaling.md) ---
IDLE=e2e-idle
kubectl apply -f - <<APP
apiVersion: wasmkube.dev/v1alpha1
kind: WasmApp
metadata:
  name: $IDLE
spec:
  component: $REGISTRY/examples/hello-http:$TAG
  http: {}
  autoscaling:
    minReplicas: 0
    maxReplicas: 2
    behavior:
      scaleDown:
        stabilizationWindowSeconds: 30
APP
kubectl wait "wasmapp/$IDLE" --for=condition=ScaleToZero --timeout 120s

# Waits until the app has no replica (spec and status), or fails after $1 seconds.
wait_for_zero() {
    local deadline=$((SECONDS + $1))
    until [ "$(kubectl get wasmapp "$IDLE" -o jsonpath='{.spec.replicas}')" = "0" ] &&
        [ "$(kubectl get wasmapp "$IDLE" -o jsonpath='{.status.replicas}')" = "0" ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            kubectl describe wasmapp "$IDLE"; kubectl get hpa "$IDLE" -o yaml
            echo "e2e: $IDLE did not scale to zero within $1s" >&2
            exit 1
        fi
        sleep 5
    done
}

# Sends one request from inside the cluster; prints "STATUS SECONDS" (curl's own timing: no pod start in it).
wake() {
    kubectl run "wasmkube-e2e-wake-$1" --rm -i --restart=Never --image=curlimages/curl:8.10.1 -- \
        curl -sS -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 90 "http://$IDLE.default.svc.cluster.local/" |
        grep -E '^[0-9]{3} '
}

for round in 1 2; do
    # Round 1: an app with no traffic yet; round 2: after it served, it must go back to zero
    # (the demand window, 60 s, then the HPA's 30 s stabilisation window).
    wait_for_zero 300
    read -r code seconds < <(wake "$round")
    [ "$code" = "200" ] || { echo "e2e: wake-up request got $code" >&2; exit 1; }
    echo "e2e: wake-up latency (request at zero replicas -> response), round $round: ${seconds}s"
done
kubectl delete wasmapp "$IDLE" --wait=false
echo "e2e: passed"
