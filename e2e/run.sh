#!/usr/bin/env bash
# End-to-end test against the cluster the current kubeconfig names (kind from `make kind-up`, the local cluster of
# `make local-up`, or any other). It installs the chart itself (e2e/install-chart.sh: images and values from the
# variables below) and needs the e2e components in a registry the nodes reach (e2e/push-components.sh; kind-up
# and local-up push them). At the end it uninstalls the chart and checks that the nodes are as before.
#
# What it checks, in its own namespace (removed at the end):
#   - every sample WasmApp (examples/wasmapps, components pointed at the e2e registry) becomes Ready;
#   - hidden-style variants: a component by tag (its pods run the digest the tag names), a 20 MiB component, a
#     worker (no Service), a component that does not exist (Degraded, the cause in `kubectl describe pod`);
#   - the HTTP sample answers through its Service by ClusterIP, by Service name and with an unrelated Host;
#   - `kubectl scale wa` changes the number of pods;
#   - scale to zero and back: a request at zero replicas by ClusterIP, by Service name and with an
#     ingress-style Host gets 200; the wake-up latency of each is printed; the app is not scaled down
#     while it serves;
#   - only the API server and the HPA read request metrics: the APIService has our caBundle and no
#     insecureSkipTLSVerify; the metrics API, reached directly, refuses no credentials, a forged front-proxy
#     header and an unprivileged token; the node metrics endpoint refuses a scrape without the operator's token;
#   - `helm uninstall` leaves every node as it was: no label, no RuntimeClass, no runtime in containerd's config,
#     no shim binary, no shim.toml, no metrics token (read on each node through a hostPath pod); when the chart was not installed
#     before the run, containerd's config is byte for byte what it was.
#
# Variables (defaults fit kind-up.sh; `make e2e` takes those of a running `make local-up` cluster):
#   WASMKUBE_E2E_REGISTRY           registry as the nodes and the operator reach it
#   WASMKUBE_E2E_PUSH_REGISTRY      the same registry as this host reaches it (to read the digest of a tag)
#   WASMKUBE_E2E_TAG                tag of the pushed components
#   WASMKUBE_E2E_NAMESPACE          namespace of the test apps (created, then deleted)
#   WASMKUBE_E2E_CLIENT_IMAGE       an image with sh, curl and sha256sum, run as the in-cluster client
#   WASMKUBE_E2E_WAKE_LIMIT         seconds a request at zero may take before the run fails (default 2)
#   WASMKUBE_E2E_OPERATOR_IMAGE, WASMKUBE_E2E_NODE_IMAGE, WASMKUBE_E2E_IMAGE_PULL_POLICY   the chart's images
#   WASMKUBE_E2E_VALUES, WASMKUBE_E2E_HELM_ARGS   a values file and extra arguments for helm
#   WASMKUBE_E2E_CONTAINERD_CONFIG, WASMKUBE_E2E_BIN_DIR   containerd's config and the shim's directory on the nodes
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need kubectl helm curl

NS="${WASMKUBE_E2E_NAMESPACE:-wasmkube-e2e}"
CLIENT_IMAGE="${WASMKUBE_E2E_CLIENT_IMAGE:-curlimages/curl:8.10.1}"
CHECK_NS="$NS-node-check"
WAKE_LIMIT="${WASMKUBE_E2E_WAKE_LIMIT:-2}"
k() { kubectl -n "$NS" "$@"; }
fail() {
    echo "e2e: FAILED: $*" >&2
    k get wasmapps,deployments,pods,hpa,endpointslices -o wide >&2 || true
    exit 1
}

echo "e2e: cluster $(kubectl config current-context), server $(kubectl version -o json | sed -n 's/.*"gitVersion": "\(.*\)".*/\1/p' | tail -1)"
echo "e2e: registry $REGISTRY, tag $TAG, namespace $NS"
trap 'kubectl delete namespace "$NS" "$CHECK_NS" --wait=false >/dev/null 2>&1 || true' EXIT

# --- Reading nodes through pods (works on any cluster, kind's nodes included) ---
# Runs pod NAME once on each node that matches the label SELECTOR ("" for all), its manifest printed by the
# function SPEC given the node's name, and prints "NODE <what the pod printed>"; WHAT names it in a failure.
on_each_node() {
    local name="$1" selector="$2" spec="$3" what="$4" node
    kubectl create namespace "$CHECK_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    for node in $(kubectl get nodes ${selector:+-l "$selector"} -o jsonpath='{.items[*].metadata.name}'); do
        kubectl -n "$CHECK_NS" delete pod "$name" --ignore-not-found --wait=true >/dev/null
        "$spec" "$node" | kubectl -n "$CHECK_NS" apply -f - >/dev/null
        kubectl -n "$CHECK_NS" wait "pod/$name" --for=jsonpath='{.status.phase}'=Succeeded --timeout 120s >/dev/null ||
            fail "could not read $what of node $node"
        echo "$node $(kubectl -n "$CHECK_NS" logs "$name")"
    done
    kubectl -n "$CHECK_NS" delete pod "$name" --wait=true >/dev/null
}

# --- Each node's wasmkube state, read through a hostPath pod ---
# Prints one line per node: "NODE config=SHA256 runtime=N backup=yes|no shim=yes|no shim-toml=yes|no token=yes|no".
node_state() {
    on_each_node node-state "" node_state_pod "the state"
}
node_state_pod() {
    local node="$1" cfg_dir cfg
    cfg_dir="$(dirname "$NODE_CONTAINERD_CONFIG")"
    cfg="$(basename "$NODE_CONTAINERD_CONFIG")"
    cat <<POD
apiVersion: v1
kind: Pod
metadata: {name: node-state}
spec:
  nodeName: $node
  restartPolicy: Never
  tolerations: [{operator: Exists}]
  containers:
    - name: read
      image: $CLIENT_IMAGE
      command:
        - sh
        - -c
        - |
          has() { if [ -e "\$1" ]; then echo yes; else echo no; fi; }
          echo "config=\$(sha256sum /node/config/$cfg | cut -c1-12) runtime=\$(grep -c 'runtimes.wasmkube\]' /node/config/$cfg)" \
            "backup=\$(has /node/config/$cfg.wasmkube-backup) shim=\$(has /node/bin/containerd-shim-wasmkube-v1)" \
            "shim-toml=\$(has /node/etc/wasmkube/shim.toml) token=\$(has /node/etc/wasmkube/metrics-token)"
      volumeMounts:
        - {name: config, mountPath: /node/config, readOnly: true}
        - {name: bin, mountPath: /node/bin, readOnly: true}
        - {name: etc, mountPath: /node/etc, readOnly: true}
  volumes:
    - {name: config, hostPath: {path: "$cfg_dir", type: Directory}}
    - {name: bin, hostPath: {path: "$NODE_BIN_DIR", type: Directory}}
    - {name: etc, hostPath: {path: /etc, type: Directory}}
POD
}
# A run that starts without the chart can compare containerd's config byte for byte after `helm uninstall`.
before=""
if ! "$HELM" status "$RELEASE" --namespace "$NAMESPACE" >/dev/null 2>&1; then
    before="$(node_state)"
    echo "e2e: nodes before install:"
    printf '    %s\n' "$before"
fi

# --- The chart, installed from this checkout ---
"$ROOT/e2e/install-chart.sh"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -

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
# --- Hidden-style variants: by tag, large, a worker ---
k apply -f - <<APPS
apiVersion: wasmkube.dev/v1alpha1
kind: WasmApp
metadata:
  name: e2e-by-tag
spec:
  component: $REGISTRY/examples/hello-http:$TAG
  http: {}
---
apiVersion: wasmkube.dev/v1alpha1
kind: WasmApp
metadata:
  name: e2e-large
spec:
  component: $REGISTRY/examples/hello-http-large:$TAG
  http: {}
---
apiVersion: wasmkube.dev/v1alpha1
kind: WasmApp
metadata:
  name: e2e-worker
spec:
  component: $REGISTRY/examples/sleeper:$TAG
APPS
started=$SECONDS
for app in $(k get wasmapps -o name); do
    k wait "$app" --for=condition=Ready --timeout 180s || fail "$app is not Ready"
done
k get wasmapps -o wide
echo "e2e: every app Ready $((SECONDS - started))s after the variants were applied"

# By tag: the operator resolved the tag, and the pods run the digest the registry names for it.
digest="$(curl -sfI -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$PUSH_REGISTRY/v2/examples/hello-http/manifests/$TAG" | tr -d '\r' | sed -n 's/^docker-content-digest: //Ip')"
[ -n "$digest" ] || fail "the registry does not name a digest for hello-http:$TAG"
uri="$(k get deployment e2e-by-tag -o jsonpath='{.spec.template.spec.containers[0].command[0]}')"
[ "$uri" = "oci://$REGISTRY/examples/hello-http@$digest" ] || fail "e2e-by-tag runs $uri, not the digest of its tag ($digest)"
echo "e2e: component by tag runs $uri"
# The worker: Running, no Service.
[ "$(k get pods -l app.kubernetes.io/name=e2e-worker -o jsonpath='{.items[0].status.phase}')" = "Running" ] || fail "e2e-worker is not Running"
k get service e2e-worker >/dev/null 2>&1 && fail "the worker e2e-worker got a Service"
echo "e2e: worker e2e-worker runs without a Service"

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
large_ip="$(k get service e2e-large -o jsonpath='{.spec.clusterIP}')"
large_port="$(k get service e2e-large -o jsonpath='{.spec.ports[0].port}')"
expect_200 "http://$large_ip:$large_port/" >/dev/null
echo "e2e: the 20 MiB component e2e-large answers by ClusterIP"

# --- Volumes are the component's file system (examples/wasmapps/configmap-volume.yaml: `site`) ---
site="http://$(k get service site -o jsonpath='{.spec.clusterIP}'):$(k get service site -o jsonpath='{.spec.ports[0].port}')"
body() { k exec e2e-client -- curl -sS --max-time 30 "$@"; }
config="$(body "$site/file?path=/config/site.toml")"
[ "$config" = 'title = "hello"' ] || fail "site read its ConfigMap file /config/site.toml as: $config"
body -X PUT --data-binary "written by e2e" "$site/file?path=/tmp/e2e.txt" >/dev/null
scratch="$(body "$site/file?path=/tmp/e2e.txt")"
[ "$scratch" = "written by e2e" ] || fail "site read back its emptyDir file /tmp/e2e.txt as: $scratch"
read -r code _ < <(request -X PUT --data-binary x "$site/file?path=/config/new.txt")
[ "$code" = "403" ] || fail "site wrote into its read-only ConfigMap volume (answer $code)"
read -r code _ < <(request "$site/file?path=/etc/passwd")
[ "$code" = "404" ] || fail "site read a file outside its volumes (answer $code)"
echo "e2e: site reads its ConfigMap at /config, writes and reads back its emptyDir at /tmp, and sees nothing else"

# --- No process per wasm pod (docs/shim.md, "Pod sandboxes"): the daemon holds the sandboxes itself ---
# Prints "NODE daemons=N children=M": each node's wasmkube daemons and the processes they started (pause
# processes of pods that asked for one, runc commands in flight), read from the node's /proc by a hostPID pod.
daemon_children() {
    on_each_node node-procs wasmkube.dev/runtime=ready daemon_children_pod "the processes"
}
daemon_children_pod() {
    local node="$1"
    cat <<POD
apiVersion: v1
kind: Pod
metadata: {name: node-procs}
spec:
  nodeName: $node
  hostPID: true
  restartPolicy: Never
  tolerations: [{operator: Exists}]
  containers:
    - name: read
      image: $CLIENT_IMAGE
      command:
        - sh
        - -c
        - |
          daemons=" "; n=0
          for p in /proc/[0-9]*; do
            { tr '\\0' ' ' <"\$p/cmdline"; } 2>/dev/null | grep -q '^[^ ]*containerd-shim-wasmkube-v1 ' && { daemons="\$daemons\${p#/proc/} "; n=\$((n + 1)); }
          done
          children=0
          for p in /proc/[0-9]*; do
            ppid="\$(sed 's/^.*) [A-Za-z] \([0-9]*\) .*/\1/' "\$p/stat" 2>/dev/null)"
            case "\$daemons" in *" \$ppid "*) children=\$((children + 1)) ;; esac
          done
          echo "daemons=\$n children=\$children"
POD
}
wasm_pods="$(k get pods -o jsonpath='{range .items[?(@.spec.runtimeClassName=="wasmkube")]}{.metadata.name}{"\n"}{end}' | grep -c .)"
procs="$(daemon_children)"
printf '    %s\n' "$procs"
echo "$procs" | grep -q ' daemons=[1-9][0-9]* children=0$' || fail "$wasm_pods wasm pods run, but not without processes of their own: $procs"
echo "$procs" | grep -vq ' children=0$' && fail "a node's wasmkube daemon has child processes: $procs"
echo "e2e: $wasm_pods wasm pods run as instances in the node daemon, with no process of their own"

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
echo "e2e: missing component, kubectl describe pod: $(k describe pods -l app.kubernetes.io/name=e2e-missing | grep -m1 "cannot pull component" | sed 's/^ *//')"
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

# --- Who may read request metrics (docs/security.md) ---
api_service=v1beta1.external.metrics.k8s.io
[ "$(kubectl get apiservice "$api_service" -o jsonpath='{.status.conditions[?(@.type=="Available")].status}')" = "True" ] ||
    fail "APIService $api_service is not Available: $(kubectl get apiservice "$api_service" -o jsonpath='{.status.conditions}')"
[ -n "$(kubectl get apiservice "$api_service" -o jsonpath='{.spec.caBundle}')" ] || fail "APIService $api_service has no caBundle"
[ "$(kubectl get apiservice "$api_service" -o jsonpath='{.spec.insecureSkipTLSVerify}')" != "true" ] ||
    fail "APIService $api_service skips TLS verification"
rate_path="/apis/external.metrics.k8s.io/v1beta1/namespaces/$NS/wasmkube_http_requests_per_second?labelSelector=wasmkube.dev%2Fapp%3D$IDLE"
kubectl get --raw "$rate_path" | grep -q '"ExternalMetricValueList"' || fail "the metrics API does not answer through the API server"
echo "e2e: APIService $api_service is Available with a caBundle and answers through the API server"
# Straight to an operator pod, past the API server: nobody, a forged front-proxy header, an unprivileged token.
op_ip="$(kubectl -n "$NAMESPACE" get pods -l app.kubernetes.io/name=wasmkube-operator -o jsonpath='{.items[0].status.podIP}')"
k create serviceaccount e2e-nobody >/dev/null
nobody_token="$(k create token e2e-nobody)"
direct() { k exec e2e-client -- curl -sk -o /dev/null -w '%{http_code}' --max-time 10 "$@" "https://$op_ip:6443$rate_path"; }
[ "$(direct)" = "401" ] || fail "the metrics API answered a request without credentials"
[ "$(direct -H "X-Remote-User: system:admin" -H "X-Remote-Group: system:masters")" = "401" ] ||
    fail "the metrics API took a forged X-Remote-User"
[ "$(direct -H "Authorization: Bearer $nobody_token")" = "403" ] || fail "the metrics API let an unprivileged ServiceAccount read"
echo "e2e: the metrics API refuses nobody (401), a forged X-Remote-User (401) and an unprivileged token (403)"
# The node endpoint: only with the operator's token.
node_ip="$(kubectl get nodes -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}')"
node_token="$(kubectl -n "$NAMESPACE" get secret "$RELEASE-node-metrics-token" -o jsonpath='{.data.token}' | base64 -d)"
scrape() { k exec e2e-client -- curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" "http://$node_ip:9464/metrics"; }
[ "$(scrape)" = "401" ] || fail "the node metrics endpoint answered a scrape without the token"
[ "$(scrape -H "Authorization: Bearer $node_token")" = "200" ] || fail "the node metrics endpoint refused the operator's token"
echo "e2e: the node metrics endpoint serves only scrapes with the operator's token"

# --- helm uninstall leaves the nodes as they were ---
k delete pod e2e-client --wait=false
kubectl delete namespace "$NS" --timeout 180s || fail "the test namespace was not deleted"
"$HELM" uninstall "$RELEASE" --namespace "$NAMESPACE" --wait --timeout 10m || fail "helm uninstall"
[ -z "$(kubectl get nodes -l wasmkube.dev/runtime --no-headers 2>/dev/null)" ] || fail "a node still has the label wasmkube.dev/runtime"
kubectl get runtimeclass wasmkube >/dev/null 2>&1 && fail "RuntimeClass wasmkube is still there"
after="$(node_state)"
echo "e2e: nodes after helm uninstall:"
printf '    %s\n' "$after"
echo "$after" | grep -v ' runtime=0 backup=no shim=no shim-toml=no token=no$' && fail "helm uninstall left wasmkube on a node"
if [ -n "$before" ]; then
    [ "$(echo "$before" | cut -d' ' -f1-2)" = "$(echo "$after" | cut -d' ' -f1-2)" ] || fail "containerd's config differs from before the install"
    echo "e2e: containerd's config on every node is byte for byte as before the install"
fi
echo "e2e: helm uninstall left no label, RuntimeClass, runtime, shim, shim.toml or metrics token"

echo "e2e: passed"
