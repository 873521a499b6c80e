#!/usr/bin/env bash
# A single-node Kubernetes cluster on this machine from Kubernetes server binaries — no Docker, no kind, no
# systemd — with wasmkube installed (docs/install.md, "A local cluster without Docker").
#
#   scripts/local-cluster.sh up      start it (idempotent), import the images, install the chart, push the e2e components
#   scripts/local-cluster.sh down    stop it and remove everything it made (idempotent)
#   scripts/local-cluster.sh restart-containerd   restart the node's containerd by hand
#   scripts/local-cluster.sh check   only check KUBE_BIN_DIR (make local-up does it before building anything)
#
# Variables:
#   KUBE_BIN_DIR       (up, required) kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
#                      (1.28+), optionally etcd and kubectl; otherwise etcd comes from Debian's etcd-server
#   LOCAL_CLUSTER_DIR  state directory (default $CARGO_TARGET_DIR/local-cluster): certificates, etcd data, logs,
#                      containerd's root and state, kubelet, registry, kubeconfig — everything but the two paths below
#   IMAGES_DIR         the operator and node image archives of `make images` (default $CARGO_TARGET_DIR/images)
#   WASMKUBE_IMAGES_TOOL  the `wasmkube-images` binary that writes the pause and client images (`make images` builds it)
# Outside the state directory (both removed by `down`): the containerd config in $CONTAINERD_CONFIG_DIR (under /etc so
# that the chart's node installer, which mounts the host's /etc, can edit it) and the shim's /etc/wasmkube/shim.toml.
source "$(dirname "${BASH_SOURCE[0]}")/tools-env.sh"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
S="$(realpath -m "${LOCAL_CLUSTER_DIR:-$TARGET/local-cluster}")"
IMAGES_DIR="${IMAGES_DIR:-$TARGET/images}"
IMAGES_TOOL="${WASMKUBE_IMAGES_TOOL:-$TARGET/x86_64-unknown-linux-musl/release/wasmkube-images}"
CONTAINERD_CONFIG_DIR=/etc/wasmkube-local
CCFG="$CONTAINERD_CONFIG_DIR/containerd/config.toml"
NODE=wasmkube-local
NODE_IP=10.250.0.1
NODE_BRIDGE=wkl0
POD_CIDR=10.244.0.0/24
POD_GATEWAY=10.244.0.1
CNI_BRIDGE=wkl-cni0
SERVICE_CIDR=10.96.0.0/12
KUBERNETES_SERVICE_IP=10.96.0.1
ETCD_PORT=23791
REGISTRY="$NODE_IP:5000"
CGROUP_ROOT=wasmkube-local
EGRESS_CHAIN=WKL-EGRESS
PAUSE_IMAGE=wasmkube.local/pause:1
CLIENT_IMAGE=wasmkube.local/e2e-client:1
# `down` deletes the state directory only when it carries this mark of `up`: a mistyped LOCAL_CLUSTER_DIR never
# costs a directory this script did not make.
MARK="$S/.wasmkube-local-cluster"
[ "$S" != / ] || { echo "local-cluster: LOCAL_CLUSTER_DIR must not be /" >&2; exit 1; }
SOCK="$S/containerd/containerd.sock"
P="$S/pki"
L="$S/logs"
R="$S/run"
# Sysctls the kubelet, kube-proxy or this script may change: saved at the first `up`, restored by `down`.
SYSCTLS="net/ipv4/ip_forward net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables
vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys
kernel/keys/root_maxbytes net/ipv4/conf/all/route_localnet"

log() { echo "==> $*"; }
die() { echo "local-cluster: $*" >&2; exit 1; }

# PIDs of processes whose command line mentions $S or the containerd config: everything this cluster started, found
# again even after the node installer restarted containerd under a new PID.
our_pids() {
    local p cmd
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = "$$" ] && continue
        cmd="$(tr '\0' ' ' 2>/dev/null <"$p/cmdline")" || continue
        case "$cmd" in *"$S/"* | *"$CCFG"*) echo "${p#/proc/}" ;; esac
    done
}
# PIDs whose command line matches the extended regex $1 and mentions $S or the containerd config.
pids_of() {
    local p
    for p in $(our_pids); do
        tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qE "$1" && echo "$p"
    done
    return 0
}
running() { [ -n "$(pids_of "$1")" ]; }
start() { # NAME MATCH COMMAND...: start COMMAND unless a process matching MATCH runs; output in $L/NAME.log
    local name=$1 match=$2
    shift 2
    if running "$match"; then
        echo "    $name is running"
        return
    fi
    # From /, so that no daemon (nor the containerd the node installer starts again with the same working
    # directory) holds the directory this script was started in.
    (cd / && exec setsid "$@" >>"$L/$name.log" 2>&1 </dev/null) &
    echo "    started $name (pid $!, log $L/$name.log)"
}
stop() { # MATCH: SIGTERM, then SIGKILL after 10 s
    local pids _
    pids="$(pids_of "$1")"
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086 # a list of PIDs
    kill $pids 2>/dev/null || true
    for _ in $(seq 50); do
        [ -n "$(pids_of "$1")" ] || return 0
        sleep 0.2
    done
    # shellcheck disable=SC2046
    kill -9 $(pids_of "$1") 2>/dev/null || true
}
wait_for() { # SECONDS WHAT COMMAND...
    local n=$1 what=$2 _
    shift 2
    for _ in $(seq $((n * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what did not come up within ${n}s (logs in $L)"
}
kc() { "$KUBECTL" --kubeconfig "$S/admin.kubeconfig" "$@"; }
write_if_changed() { # FILE < content (kube-proxy exits when its config file changes)
    local t
    t="$(mktemp)"
    cat >"$t"
    if cmp -s "$t" "$1"; then rm -f "$t"; else mv "$t" "$1" && chmod 644 "$1"; fi
}

find_kubectl() {
    if [ -x "${KUBE_BIN_DIR:-/nonexistent}/kubectl" ]; then
        KUBECTL="$KUBE_BIN_DIR/kubectl"
    elif command -v kubectl >/dev/null; then
        KUBECTL="$(command -v kubectl)"
    else
        "$ROOT/scripts/tools.sh"
        KUBECTL="$KUBECTL_TOOL"
    fi
}

# --- certificates (openssl): a cluster CA, a front-proxy CA, the service-account key pair, one cert per component
pki() {
    mkdir -p "$P"
    [ -f "$P/ca.key" ] || new_ca ca wasmkube-local-ca
    [ -f "$P/front-proxy-ca.key" ] || new_ca front-proxy-ca wasmkube-local-front-proxy-ca
    if [ ! -f "$P/sa.key" ]; then
        openssl genrsa -out "$P/sa.key" 2048 2>/dev/null
        openssl rsa -in "$P/sa.key" -pubout -out "$P/sa.pub" 2>/dev/null
    fi
    cert apiserver "/CN=kube-apiserver" ca \
        "IP:$NODE_IP,IP:$KUBERNETES_SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    cert admin "/O=system:masters/CN=kubernetes-admin" ca
    cert controller-manager "/CN=system:kube-controller-manager" ca
    cert scheduler "/CN=system:kube-scheduler" ca
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" ca
    cert front-proxy-client "/CN=front-proxy-client" front-proxy-ca
    cert kubelet "/O=system:nodes/CN=system:node:$NODE" ca
    cert kube-proxy "/CN=system:kube-proxy" ca
    cert dns "/CN=wasmkube-local-dns" ca
}
new_ca() { # NAME CN
    openssl genrsa -out "$P/$1.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$P/$1.key" -days 3650 -subj "/CN=$2" -out "$P/$1.crt" 2>/dev/null
}
cert() { # NAME SUBJECT CA [SAN]: a client cert, or a server+client cert when SAN is given
    local n=$1 subj=$2 ca=$3 san=${4:-}
    [ -f "$P/$n.crt" ] && return 0
    openssl genrsa -out "$P/$n.key" 2048 2>/dev/null
    openssl req -new -key "$P/$n.key" -subj "$subj" -out "$P/$n.csr" 2>/dev/null
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        if [ -n "$san" ]; then
            echo "extendedKeyUsage=serverAuth,clientAuth"
            echo "subjectAltName=$san"
        else
            echo "extendedKeyUsage=clientAuth"
        fi
    } >"$P/$n.ext"
    openssl x509 -req -in "$P/$n.csr" -CA "$P/$ca.crt" -CAkey "$P/$ca.key" -CAcreateserial -days 3650 \
        -extfile "$P/$n.ext" -out "$P/$n.crt" 2>/dev/null
    rm -f "$P/$n.csr" "$P/$n.ext"
}
kubeconfig() { # FILE USER CERT-NAME
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: wasmkube-local
  cluster: {server: "https://$NODE_IP:6443", certificate-authority: "$P/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$P/$3.crt", client-key: "$P/$3.key"}
contexts:
- name: wasmkube-local
  context: {cluster: wasmkube-local, user: $2}
current-context: wasmkube-local
EOF
}

# --- network: the node IP on a bridge of our own (no dummy driver needed), forwarding, egress guard
network() {
    local s
    if [ ! -f "$R/sysctl.saved" ]; then
        modprobe br_netfilter 2>/dev/null || true
        for s in $SYSCTLS; do
            [ -f "/proc/sys/$s" ] && echo "$s $(cat "/proc/sys/$s")"
        done >"$R/sysctl.saved"
    fi
    ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || ip link add "$NODE_BRIDGE" type bridge
    ip -4 addr show dev "$NODE_BRIDGE" | grep -q "inet $NODE_IP/" || ip addr add "$NODE_IP/32" dev "$NODE_BRIDGE"
    ip link set "$NODE_BRIDGE" up
    echo 1 >/proc/sys/net/ipv4/ip_forward
    [ -f /proc/sys/net/bridge/bridge-nf-call-iptables ] || die "kernel module br_netfilter is missing (kube-proxy needs it)"
    echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
    # Pods reach each other, the node IP and Services (DNATed to pods); nothing is forwarded off the machine.
    iptables -N "$EGRESS_CHAIN" 2>/dev/null || true
    iptables -C FORWARD -j "$EGRESS_CHAIN" 2>/dev/null || iptables -I FORWARD 1 -j "$EGRESS_CHAIN"
    iptables -F "$EGRESS_CHAIN"
    iptables -A "$EGRESS_CHAIN" -s "$POD_CIDR" ! -d "$POD_CIDR" -j REJECT --reject-with icmp-net-prohibited
}

control_plane() {
    local etcd=/usr/bin/etcd
    [ -x "$KUBE_BIN_DIR/etcd" ] && etcd="$KUBE_BIN_DIR/etcd"
    [ -x "$etcd" ] || die "no etcd: install Debian's etcd-server (make deps) or put an etcd in KUBE_BIN_DIR"
    local flags=(--name local --data-dir "$S/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT"
        --listen-peer-urls http://127.0.0.1:23801 --listen-metrics-urls http://127.0.0.1:23811)
    # etcd requires the advertised URLs when the listen URLs are set; an embedding build may advertise its listen URLs
    # and not know these flags.
    if "$etcd" --help 2>&1 | grep -q -- -advertise-client-urls; then
        flags+=(--advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --initial-advertise-peer-urls http://127.0.0.1:23801
            --initial-cluster local=http://127.0.0.1:23801)
    fi
    start etcd "etcd .*--data-dir $S/etcd" "$etcd" "${flags[@]}"
    wait_for 30 etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"
    # Kubernetes' default scale-to-zero gate is off before 1.37; wasmkube's scale to zero needs it.
    local gates=HPAScaleToZero=true
    start kube-apiserver "kube-apiserver .*$P/" "$KUBE_BIN_DIR/kube-apiserver" \
        --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
        --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=6443 \
        --feature-gates="$gates" --allow-privileged=true --profiling=false \
        --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
        --kubelet-preferred-address-types=InternalIP \
        --kubelet-client-certificate="$P/apiserver-kubelet-client.crt" --kubelet-client-key="$P/apiserver-kubelet-client.key" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
        --requestheader-client-ca-file="$P/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
        --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
        --requestheader-extra-headers-prefix=X-Remote-Extra- --enable-aggregator-routing=true \
        --proxy-client-cert-file="$P/front-proxy-client.crt" --proxy-client-key-file="$P/front-proxy-client.key"
    wait_for 90 kube-apiserver kc get --raw /readyz
    # The cluster DNS reads Services and EndpointSlices, nothing else.
    kc apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "wasmkube-local:dns"}
rules:
  - {apiGroups: [""], resources: [services], verbs: [list]}
  - {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "wasmkube-local:dns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "wasmkube-local:dns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: wasmkube-local-dns}]
EOF
    start kube-controller-manager "kube-controller-manager .*$S/" "$KUBE_BIN_DIR/kube-controller-manager" \
        --kubeconfig="$S/controller-manager.kubeconfig" \
        --authentication-kubeconfig="$S/controller-manager.kubeconfig" \
        --authorization-kubeconfig="$S/controller-manager.kubeconfig" \
        --bind-address=127.0.0.1 --secure-port=10357 --leader-elect=false --use-service-account-credentials=true \
        --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
        --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" --feature-gates="$gates"
    start kube-scheduler "kube-scheduler .*$S/" "$KUBE_BIN_DIR/kube-scheduler" \
        --kubeconfig="$S/scheduler.kubeconfig" --authentication-kubeconfig="$S/scheduler.kubeconfig" \
        --authorization-kubeconfig="$S/scheduler.kubeconfig" --bind-address=127.0.0.1 --secure-port=10359 \
        --leader-elect=false
}

registry_and_dns() {
    mkdir -p "$S/registry"
    write_if_changed "$S/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $S/registry}
  delete: {enabled: true}
http: {addr: "$REGISTRY"}
EOF
    start registry "docker-registry serve $S/" /usr/bin/docker-registry serve "$S/registry.yml"
    # Cluster DNS without CoreDNS (no image to run it): Service names only, nothing forwarded off the machine.
    start dns "local-dns.py" python3 "$ROOT/scripts/local-dns.py" --address "$NODE_IP" \
        --server "https://$NODE_IP:6443" --ca "$P/ca.crt" --cert "$P/dns.crt" --key "$P/dns.key"
    echo "nameserver $NODE_IP" >"$S/resolv.conf"
    wait_for 30 registry curl -sf "http://$REGISTRY/v2/"
}

containerd_config() {
    mkdir -p "$(dirname "$CCFG")" "$S/cni/net.d" "$S/node/bin"
    # Written once: from then on the chart's node installer owns its runtime table.
    [ -f "$CCFG" ] || cat >"$CCFG" <<EOF
# containerd of the wasmkube local cluster (scripts/local-cluster.sh): root, state and socket under
# $S/containerd. The wasmkube runtime is added by the chart's node installer.
version = 2
root = "$S/containerd/root"
state = "$S/containerd/state"

[grpc]
  address = "$SOCK"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "$S/containerd/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$S/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "$S/containerd/opt"
EOF
    # No portmap (hostPort): its iptables chains are shared with every other CNI user of this machine.
    write_if_changed "$S/cni/net.d/10-wasmkube-local.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "wasmkube-local",
  "plugins": [
    {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$S/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]], "routes": [{"dst": "0.0.0.0/0"}]}}
  ]
}
EOF
}
start_containerd() {
    # A plain process, as on nodes without systemd; the shim directory first on its PATH (nodeInstaller.binDir).
    start containerd "containerd --config $CCFG" env PATH="$S/node/bin:$PATH" /usr/bin/containerd --config "$CCFG"
    wait_for 30 containerd ctr -a "$SOCK" version
}

# --- images: the sandbox (pause) and e2e client images built here, the operator and node images from `make images`
images() {
    local work
    work="$(mktemp -d)"
    mkdir -p "$S/images"
    if [ ! -f "$S/images/pause.tar" ]; then
        mkdir -p "$work/pause"
        # The node tests' sandbox process: holds the pod's namespaces, reaps children, exits on SIGTERM/SIGINT.
        gcc -static -O2 -s -o "$work/pause/pause" "$ROOT/harness/src/pause.c"
        "$IMAGES_TOOL" from-dir --name "$PAUSE_IMAGE" --dir "$work/pause" --out "$S/images/pause.tar" \
            --entrypoint /pause --user 65535:65535 >/dev/null
    fi
    if [ ! -f "$S/images/e2e-client.tar" ]; then
        local r="$work/client" a l
        mkdir -p "$r/bin" "$r/usr/bin" "$r/etc/ssl/certs" "$r/tmp"
        chmod 1777 "$r/tmp"
        cp /bin/busybox "$r/bin/busybox"
        for a in $(/bin/busybox --list); do [ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"; done
        # Debian's curl is dynamic: it goes in with the libraries it loads.
        cp /usr/bin/curl "$r/usr/bin/curl"
        for l in $(ldd /usr/bin/curl | grep -oE '/[^ ]+'); do
            mkdir -p "$r$(dirname "$l")"
            cp -L "$l" "$r$l"
        done
        printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
        printf 'hosts: files dns\n' >"$r/etc/nsswitch.conf"
        cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
        "$IMAGES_TOOL" from-dir --name "$CLIENT_IMAGE" --dir "$r" --out "$S/images/e2e-client.tar" --cmd sh >/dev/null
    fi
    rm -rf "$work"
    local t sum mark
    for t in "$S/images/pause.tar" "$S/images/e2e-client.tar" "$IMAGES_DIR/wasmkube-operator.tar" "$IMAGES_DIR/wasmkube-node.tar"; do
        [ -f "$t" ] || die "$t is missing (make images)"
        sum="$(sha256sum "$t" | cut -c1-64)"
        mark="$R/imported-$(basename "$t")"
        if [ "$(cat "$mark" 2>/dev/null)" != "$sum" ]; then
            ctr -a "$SOCK" -n k8s.io images import "$t" >/dev/null
            echo "$sum" >"$mark"
            echo "    imported $t"
        fi
    done
}

kubelet_and_proxy() {
    mkdir -p "$S/kubelet" "$S/pod-logs"
    local h
    # The kubelet's cgroups (cgroupfs driver) go under a root of our own, so `down` finds every one of them.
    for h in /sys/fs/cgroup/*/; do
        [ -d "$h" ] && [ ! -L "${h%/}" ] && mkdir -p "$h$CGROUP_ROOT" 2>/dev/null
    done
    write_if_changed "$S/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
containerRuntimeEndpoint: unix://$SOCK
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
resolvConf: $S/resolv.conf
podLogsDir: $S/pod-logs
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
EOF
    start kubelet "kubelet .*$S/" "$KUBE_BIN_DIR/kubelet" --config="$S/kubelet-config.yaml" \
        --kubeconfig="$S/kubelet.kubeconfig" --root-dir="$S/kubelet" --cert-dir="$S/kubelet/pki" \
        --hostname-override="$NODE" --node-ip="$NODE_IP" --v=1
    write_if_changed "$S/kube-proxy-config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $S/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
nodePortAddresses: ["$NODE_IP/32"]
EOF
    start kube-proxy "kube-proxy .*$S/" "$KUBE_BIN_DIR/kube-proxy" --config="$S/kube-proxy-config.yaml" --v=1
    wait_for 60 "node $NODE" kc get node "$NODE"
    kc wait --for=condition=Ready "node/$NODE" --timeout=120s >/dev/null || die "node $NODE is not Ready (see $L/kubelet.log)"
}

# Settings of e2e/run.sh and e2e/install-chart.sh for this cluster (`make e2e` reads them while the cluster is up).
write_env() {
    cat >"$S/e2e.env" <<EOF
# Written by scripts/local-cluster.sh up: the e2e settings of the local cluster (variables set by hand win).
export KUBECONFIG="\${KUBECONFIG:-$S/admin.kubeconfig}"
export WASMKUBE_E2E_REGISTRY="\${WASMKUBE_E2E_REGISTRY:-$REGISTRY}"
export WASMKUBE_E2E_PUSH_REGISTRY="\${WASMKUBE_E2E_PUSH_REGISTRY:-$REGISTRY}"
export WASMKUBE_E2E_CLIENT_IMAGE="\${WASMKUBE_E2E_CLIENT_IMAGE:-$CLIENT_IMAGE}"
# Empty: the chart's default images, which \`make images\` builds and \`up\` imported.
export WASMKUBE_E2E_OPERATOR_IMAGE="\${WASMKUBE_E2E_OPERATOR_IMAGE-}"
export WASMKUBE_E2E_NODE_IMAGE="\${WASMKUBE_E2E_NODE_IMAGE-}"
export WASMKUBE_E2E_IMAGE_PULL_POLICY="\${WASMKUBE_E2E_IMAGE_PULL_POLICY:-Never}"
export WASMKUBE_E2E_VALUES="\${WASMKUBE_E2E_VALUES:-$S/values.yaml}"
export WASMKUBE_E2E_CONTAINERD_CONFIG="\${WASMKUBE_E2E_CONTAINERD_CONFIG:-$CCFG}"
export WASMKUBE_E2E_BIN_DIR="\${WASMKUBE_E2E_BIN_DIR:-$S/node/bin}"
EOF
    # What this node needs beyond the images: its containerd config, a shim directory on containerd's PATH, the
    # shim's cache inside the state directory, and a placeholder image that is on the node.
    cat >"$S/values.yaml" <<EOF
nodeInstaller:
  containerdConfig: $CCFG
  binDir: $S/node/bin
shim:
  cacheDir: $S/node/wasmkube-cache
operator:
  placeholderImage: $PAUSE_IMAGE
EOF
}

check() {
    [ -n "${KUBE_BIN_DIR:-}" ] || die "KUBE_BIN_DIR is not set: point it at a directory with the Kubernetes server binaries kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy (1.28 or later)"
    KUBE_BIN_DIR="$(realpath "$KUBE_BIN_DIR")"
    local b
    for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
        [ -x "$KUBE_BIN_DIR/$b" ] || die "KUBE_BIN_DIR=$KUBE_BIN_DIR has no executable $b (it needs kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy)"
    done
}

up() {
    check
    [ "$(id -u)" = 0 ] || die "run as root (it configures network interfaces, iptables and cgroups)"
    find_kubectl
    "$ROOT/scripts/tools.sh" >/dev/null
    if [ -d "$S" ] && [ ! -f "$MARK" ] && [ -n "$(ls -A "$S")" ]; then
        die "$S exists and was not made by this script: choose another LOCAL_CLUSTER_DIR"
    fi
    mkdir -p "$S" "$L" "$R"
    touch "$MARK"
    log "network: node $NODE, IP $NODE_IP on bridge $NODE_BRIDGE, pods $POD_CIDR on $CNI_BRIDGE"
    network
    log "certificates and kubeconfigs in $S"
    pki
    kubeconfig "$S/admin.kubeconfig" kubernetes-admin admin
    kubeconfig "$S/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
    kubeconfig "$S/scheduler.kubeconfig" system:kube-scheduler scheduler
    kubeconfig "$S/kubelet.kubeconfig" "system:node:$NODE" kubelet
    kubeconfig "$S/kube-proxy.kubeconfig" system:kube-proxy kube-proxy
    log "control plane from $KUBE_BIN_DIR"
    control_plane
    log "registry http://$REGISTRY and cluster DNS on $NODE_IP:53"
    registry_and_dns
    log "containerd (config $CCFG)"
    containerd_config
    start_containerd
    log "images"
    images
    log "kubelet and kube-proxy (iptables)"
    kubelet_and_proxy
    write_env
    log "wasmkube chart and e2e components"
    (
        # shellcheck source=/dev/null
        source "$S/e2e.env"
        "$ROOT/e2e/push-components.sh"
        "$ROOT/e2e/install-chart.sh"
    )
    log "ready: $("$KUBECTL" --kubeconfig "$S/admin.kubeconfig" version -o json | sed -n 's/.*"gitVersion": "\(.*\)".*/\1/p' | tail -1) on node $NODE"
    cat <<EOF

    export KUBECONFIG=$S/admin.kubeconfig
    kubectl get nodes -l wasmkube.dev/runtime=ready
    make e2e                      # the end-to-end test against this cluster
    make local-down               # stop it and remove everything
EOF
}

restart_containerd() {
    stop "containerd --config $CCFG"
    start_containerd
}

down() {
    local ns c pid h m t s v shim_sockets=() cni_results=()
    log "stopping kube-proxy and the kubelet"
    stop "kube-proxy .*$S/"
    stop "kubelet .*$S/"
    if [ -S "$SOCK" ] && running "containerd --config $CCFG"; then
        log "removing containers"
        for ns in $(ctr -a "$SOCK" namespaces ls -q 2>/dev/null); do
            for c in $(ctr -a "$SOCK" -n "$ns" containers ls -q 2>/dev/null); do
                # containerd 1.6 puts shim sockets in /run/containerd/s whatever its state dir: sha256 of
                # ADDRESS/NAMESPACE/ID. A shim that dies on a signal leaves its socket there.
                shim_sockets+=("/run/containerd/s/$(printf '%s' "$SOCK/$ns/$c" | sha256sum | cut -c1-64)")
                # CRI's loopback network of a sandbox that is not torn down through CRI keeps its libcni cache entry.
                cni_results+=("/var/lib/cni/results/cni-loopback-$c-lo")
                ctr -a "$SOCK" -n "$ns" tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
                ctr -a "$SOCK" -n "$ns" tasks delete -f "$c" >/dev/null 2>&1 || true
                ctr -a "$SOCK" -n "$ns" containers delete "$c" >/dev/null 2>&1 || true
            done
        done
    fi
    log "stopping containerd, its shims and the rest"
    stop "containerd --config $CCFG"
    stop "containerd-shim"
    # Pod processes have no state-dir path on their command line: they are found by the kubelet's cgroups.
    for h in /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
        [ -d "$h" ] || continue
        { find "$h" -name cgroup.procs -exec cat {} + 2>/dev/null || true; } | while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done
    done
    for m in "kube-scheduler" "kube-controller-manager" "kube-apiserver" "docker-registry" "local-dns.py" "etcd"; do
        stop "$m"
    done
    # Whatever else names the state directory (only a directory of ours: a mistyped one may be anybody's).
    if [ -f "$MARK" ]; then stop "."; fi
    log "removing mounts, cgroups, network namespaces, interfaces, iptables rules"
    # Mounts under the state dir (pod volumes, snapshots, network namespaces of netns_mounts_under_state_dir), deepest first.
    if [ -f "$MARK" ]; then
        findmnt -rn -o TARGET | { grep -F "$S/" || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    fi
    for h in /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
        if [ -d "$h" ]; then find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
    done
    ip link del "$CNI_BRIDGE" 2>/dev/null || true
    ip link del "$NODE_BRIDGE" 2>/dev/null || true
    rm -f "${shim_sockets[@]}"
    # libcni's result cache of our network and of our sandboxes' loopback (outside the state dir: containerd 1.6
    # does not move it)
    rm -f /var/lib/cni/results/wasmkube-local-* "${cni_results[@]}"
    # Every chain the kubelet, kube-proxy or this script added (KUBE-*, ours), and every jump to one of them. CNI-*
    # chains are left alone: our network adds none, and other containerds of this machine may own some.
    for t in iptables ip6tables; do
        for s in filter nat mangle raw; do
            "$t" -t "$s" -S 2>/dev/null | grep -E -- "-j (KUBE-|$EGRESS_CHAIN)" | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ' |
                sed 's/^-A/-D/' | while read -r rule; do
                    # shellcheck disable=SC2086 # a rule as iptables -S prints it
                    eval "$t" -t "$s" $rule
                done || true # no jump in this table
            for c in $("$t" -t "$s" -S 2>/dev/null | awk -v e="$EGRESS_CHAIN" '$1 == "-N" && ($2 ~ /^KUBE-/ || $2 == e) {print $2}'); do
                "$t" -t "$s" -F "$c"
            done
            for c in $("$t" -t "$s" -S 2>/dev/null | awk -v e="$EGRESS_CHAIN" '$1 == "-N" && ($2 ~ /^KUBE-/ || $2 == e) {print $2}'); do
                "$t" -t "$s" -X "$c" 2>/dev/null || true
            done
        done
    done
    if [ -f "$R/sysctl.saved" ]; then
        while read -r s v; do echo "$v" >"/proc/sys/$s" 2>/dev/null || true; done <"$R/sysctl.saved"
    fi
    log "removing $S, $CONTAINERD_CONFIG_DIR and /etc/wasmkube"
    if [ -f "$MARK" ]; then
        rm -rf "$S"
    elif [ -d "$S" ]; then
        echo "    $S was not made by this script: left as it is"
    fi
    rm -rf "$CONTAINERD_CONFIG_DIR"
    rm -f /etc/wasmkube/shim.toml /etc/wasmkube/metrics-token /etc/wasmkube/restart-pending
    rmdir /etc/wasmkube 2>/dev/null || true
    log "local cluster removed"
}

case "${1:-}" in
check) check ;;
up) up ;;
down) down ;;
restart-containerd) restart_containerd ;;
*) die "usage: $0 up|down|restart-containerd|check" ;;
esac
