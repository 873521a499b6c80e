# syntax=docker/dockerfile:1.7
# Images of wasmkube (not built in CI; `make images`):
#   --target operator  wasmkube-operator, non-root on distroless
#   --target node      wasmkube-node-installer + containerd-shim-wasmkube-v1 (the chart's DaemonSet)
# The build is the Makefile's: the workspace's release profile, Rust 1.95, Debian bookworm (so the shim needs
# glibc >= 2.36 on the node, as Debian bookworm / Ubuntu 22.04 and kind's node images have).

ARG RUST_IMAGE=rust:1.95-bookworm

FROM ${RUST_IMAGE} AS chef
WORKDIR /src
ENV CARGO_TARGET_DIR=/target

# Dependencies first: manifests and the lock file with stub sources, so this layer is rebuilt only when a
# manifest or Cargo.lock changes, not on every source edit.
FROM chef AS deps
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY shim/Cargo.toml shim/
COPY operator/Cargo.toml operator/
COPY harness/Cargo.toml harness/
COPY bench/Cargo.toml bench/
COPY installer/Cargo.toml installer/
COPY oci-wasm/Cargo.toml oci-wasm/
COPY cli/Cargo.toml cli/
RUN set -eu; for crate in shim operator harness bench installer oci-wasm cli; do \
      mkdir -p $crate/src $crate/src/bin; echo 'fn main() {}' > $crate/src/main.rs; : > $crate/src/lib.rs; \
    done; \
    cargo fetch --locked
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --locked --release -p wasmkube-operator -p wasmkube-shim -p wasmkube-node-installer

FROM deps AS build
COPY . .
# COPY keeps the context's mtimes, which may be older than the stubs': touch, so cargo rebuilds our crates.
RUN find shim operator harness bench installer oci-wasm cli -name '*.rs' -exec touch {} +
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --locked --release -p wasmkube-operator -p wasmkube-shim -p wasmkube-node-installer \
      --bin wasmkube-operator --bin containerd-shim-wasmkube-v1 --bin wasmkube-node-installer \
 && mkdir -p /out \
 && cp /target/release/wasmkube-operator /target/release/containerd-shim-wasmkube-v1 \
       /target/release/wasmkube-node-installer /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/wasmkube-operator /usr/local/bin/wasmkube-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/wasmkube-operator"]
CMD ["run"]

# nsenter (util-linux) restarts the host's containerd through PID 1's namespaces; the rest runs on the host.
FROM debian:bookworm-slim AS node
RUN apt-get update && apt-get install -y --no-install-recommends util-linux && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/wasmkube-node-installer /usr/local/bin/wasmkube-node-installer
COPY --from=build /out/containerd-shim-wasmkube-v1 /usr/local/lib/wasmkube/containerd-shim-wasmkube-v1
ENTRYPOINT ["/usr/local/bin/wasmkube-node-installer"]
CMD ["install"]
