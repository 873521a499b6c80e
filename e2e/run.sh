#!/usr/bin/env bash
# End-to-end test against the cluster the current kubeconfig names (kind from `make kind-up`, a cluster
# started from Kubernetes binaries, or any other): wasmkube must already be installed (the chart) and the
# e2e components pushed to a registry the nodes reach (e2e/push-components.sh; kind-up does both).
#
# What it checks, in its own namespace (removed at the end):
#   - every sample WasmApp (examples/wasmapps, components pointed at the e2e registry) becomes Ready;
#   - the HTTP sample answers through its Service by ClusterIP, by Service name and with an unrelated Host;
#   - `kubectl scale wa` changes the number of pods;
#   - a component that does not exist: Degraded on the WasmApp, the cause in `kubectl describe pod`;
#   - scale to zero and back: a request at zero replicas by ClusterIP, by Service name and with an
#     ingress-style Host gets 200; the wake-up latency of each is printed; the app is not scaled down
#     while it serves.
#
# Variables (defaults fit kind-up.sh):
#   WASMKUBE_E2E_REGISTRY      registry as the nodes and the operator reach it
#   WASMKUBE_E2E_TAG           tag of the pushed components
#   WASMKUBE_E2E_NAMESPACE     namespace of the test apps (created, then deleted)
#   WASMKUBE_E2E_CLIENT_IMAGE  an image with curl and sleep, run as the in-cluster client
#   WASMKUBE_E2E_WAKE_LIMIT    seconds a request at zero may take before the run fails (default 2)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need kubectl

NS="${WASMKUBE_E2E_NAMESPACE:-wasmkube-e2e}"
CLIENT_IMAGE="${WASMKUBE_E2E_CLIENT_IMAGE:-curlimages/curl:8.10.1}"
WAKE_LIMIT="${WASMKUBE_E2E_WAKE_LIMIT:-2}"
k() { kubectl -n "$NS" "$@"; }
fail() {
    echo "e2e: FAILED: $*" >&2
    k get wasmapps,deployments,pods,hpa,endpointslices -o wide >&2 || true
    exit 1
}

echo "e2e: cluster $(kubectl config current-context), server $(kubectl version -o json | sed -n 's/.*"gitVersion": "\(.*\)".*/\1/p' | tail -1)"
echo "e2e: registry $REGISTRY, tag $TAG, namespace $NS"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
trap 'kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true' EXIT

# --- The samples, as a user applies them, pointed at the e2e registry ---
# examples/wasmapps name public references; the e2e registry holds the same components (push-components.sh).
# The CLI sample's private registry and secret do not exist here: it runs the sleeper worker instead.
for sample in "$ROOT"/examples/wasmapps/*.yaml; do
    sed -e "s#ghcr.io/wasmkube/examples/\([a-z-]*\):[0-9.]*#$REGISTRY/examples/\1:$TAG#" \
        -e "s#registry.example.com/team/hello-cli@sha256:[0-9a-f]*#$REGISTRY/examples/sleeper:$TAG#" \
        -e '/imagePullSecrets:/,+1d' -e '/secretKeyRef:/,+2d' -e '/- name: API_TOKEN/,+1d' \
        -e '/tolerations:/,+4d' \
        "$sample" | k apply -f -
done
for app in $(k get wasmapps -o name); do
    k wait "$app" --for=condition=Ready --timeout 180s || fail "$app is not Ready"
done
k get wasmapps -o wide

# --- An in-cluster client: one pod, requests through kubectl exec ---
k run e2e-client --image="$CLIENT_IMAGE" --restart=Never --command -- sleep 3600
k wait pod/e2e-client --for=condition=Ready --timeout 120s || fail "the client pod did not start"
# Prints "STATUS SECONDS" of one request (curl's own timing); extra arguments go to curl.
request() { k exec e2e-client -- curl -sS -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 90 "$@"; }
expect_200() {
    local code seconds
    read -r code seconds < <(request "$@")
    [ "$code" = "200" ] || fail "curl $* answered $code"
    echo "$seconds"
}

APP=hello-http
cluster_ip="$(k get service "$APP" -o jsonpath='{.spec.clusterIP}')"
port="$(k get service "$APP" -o jsonpath='{.spec.ports[0].port}')"
expect_200 "http://$cluster_ip:$port/" >/dev/null
expect_200 "http://$APP.$NS.svc.cluster.local:$port/" >/dev/null
expect_200 -H "Host: shop.example.com" "http://$cluster_ip:$port/" >/dev/null
echo "e2e: $APP answers by ClusterIP, by Service name and with an unrelated Host"

# --- kubectl scale ---
k scale wasmapp "$APP" --replicas=3
k wait "wasmapp/$APP" --for=jsonpath='{.status.readyReplicas}'=3 --timeout 120s || fail "scale to 3"
k scale wasmapp "$APP" --replicas=1
k wait "wasmapp/$APP" --for=jsonpath='{.status.replicas}'=1 --timeout 120s || fail "scale to 1"
echo "e2e: kubectl scale wa works"

# --- A component that does not exist ---
k apply -f - <<APP
apiVersion: wasmkube.dev/v1alpha1
kind: WasmApp
metadata:
  name: e2e-missing
spec:
  component: $REGISTRY/examples/does-not-exist:$TAG
  http: {}
APP
k wait wasmapp/e2e-missing --for=condition=Degraded --timeout 120s || fail "missing component: no Degraded"
echo "e2e: missing component: $(k get wasmapp e2e-missing -o jsonpath='{.status.conditions[?(@.type=="Degraded")].message}')"
deadline=$((SECONDS + 120))
until k describe pods -l app.kubernetes.io/name=e2e-missing | grep -q "cannot pull component"; do
    [ "$SECONDS" -lt "$deadline" ] || fail "missing component: kubectl describe pod does not say why"
    sleep 3
done
k delete wasmapp e2e-missing --wait=false

# --- Scale to zero (docs/autoscaling.md) ---
IDLE=e2e-idle
k apply -f - <<APP
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
k wait "wasmapp/$IDLE" --for=condition=ScaleToZero --timeout 120s || fail "ScaleToZero condition"

# Waits until the app has no replica (spec and status), or fails after $1 seconds.
wait_for_zero() {
    local deadline=$((SECONDS + $1))
    until [ "$(k get wasmapp "$IDLE" -o jsonpath='{.spec.replicas}')" = "0" ] &&
        [ "$(k get wasmapp "$IDLE" -o jsonpath='{.status.replicas}')" = "0" ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            k describe wasmapp "$IDLE"; k get hpa "$IDLE" -o yaml
            fail "$IDLE did not scale to zero within $1s"
        fi
        sleep 5
    done
}

idle_ip="$(k get service "$IDLE" -o jsonpath='{.spec.clusterIP}')"
idle_port="$(k get service "$IDLE" -o jsonpath='{.spec.ports[0].port}')"
declare -A targets=(
    [cluster-ip]="http://$idle_ip:$idle_port/"
    [service-name]="http://$IDLE.$NS.svc.cluster.local:$idle_port/"
    [ingress-host]="-H Host:shop.example.com http://$idle_ip:$idle_port/"
)
for how in cluster-ip service-name ingress-host; do
    # After serving, the app must go back to zero: the demand window (60 s), then the 30 s stabilisation.
    wait_for_zero 300
    # shellcheck disable=SC2086 # the target holds curl arguments
    seconds="$(expect_200 ${targets[$how]})"
    echo "e2e: wake-up latency (request at zero replicas -> response) by $how: ${seconds}s"
    awk -v s="$seconds" -v l="$WAKE_LIMIT" 'BEGIN { exit !(s <= l) }' || fail "wake-up by $how took ${seconds}s (limit ${WAKE_LIMIT}s)"
    # Served just now: the app must stay up while it serves (the HPA syncs every 15 s by default).
    for _ in $(seq 20); do
        # shellcheck disable=SC2086
        expect_200 ${targets[$how]} >/dev/null
        sleep 1
    done
    [ "$(k get wasmapp "$IDLE" -o jsonpath='{.status.readyReplicas}')" -ge 1 ] || fail "$IDLE scaled down while serving"
done

echo "e2e: passed"
