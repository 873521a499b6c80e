# syntax=docker/dockerfile:1.7
# Images of wasmkube for people who build with Docker. `make images` writes the same images as OCI archives
# without Docker (crate wasmkube-images); this file produces the same layout:
#   --target operator  /usr/local/bin/wasmkube-operator, FROM scratch, user 65532:65532
#   --target node      /usr/local/bin/wasmkube-node-installer + /usr/local/lib/wasmkube/containerd-shim-wasmkube-v1
# The binaries are the Makefile's: static musl executables (.cargo/config.toml), release profile, Rust 1.95,
# so they run on any x86_64 Linux node whatever its libc. Not built in CI (no Docker there).

ARG RUST_IMAGE=rust:1.95-bookworm

FROM ${RUST_IMAGE} AS chef
WORKDIR /src
ENV CARGO_TARGET_DIR=/target
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl

# Dependencies first: manifests and the lock file with stub sources, so this layer is rebuilt only when a
# manifest or Cargo.lock changes, not on every source edit.
FROM chef AS deps
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY .cargo/config.toml .cargo/
COPY contract/Cargo.toml contract/
COPY shim/Cargo.toml shim/
COPY operator/Cargo.toml operator/
COPY harness/Cargo.toml harness/
COPY bench/Cargo.toml bench/
COPY installer/Cargo.toml installer/
COPY oci-wasm/Cargo.toml oci-wasm/
COPY cli/Cargo.toml cli/
COPY images/Cargo.toml images/
RUN set -eu; for crate in contract shim operator harness bench installer oci-wasm cli images; do \
      mkdir -p $crate/src $crate/src/bin; echo 'fn main() {}' > $crate/src/main.rs; : > $crate/src/lib.rs; \
    done; \
    cargo fetch --locked
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --locked --release -p wasmkube-operator -p wasmkube-shim -p wasmkube-node-installer

FROM deps AS build
COPY . .
# COPY keeps the context's mtimes, which may be older than the stubs': touch, so cargo rebuilds our crates.
RUN find contract shim operator harness bench installer oci-wasm cli images -name '*.rs' -exec touch {} +
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --locked --release -p wasmkube-operator -p wasmkube-shim -p wasmkube-node-installer \
      --bin wasmkube-operator --bin containerd-shim-wasmkube-v1 --bin wasmkube-node-installer \
 && mkdir -p /out \
 && cd /target/x86_64-unknown-linux-musl/release \
 && for b in wasmkube-operator containerd-shim-wasmkube-v1 wasmkube-node-installer; do \
      objcopy --strip-debug $b /out/$b; done   # as `make images`: code and symbols, no line tables

FROM scratch AS operator
COPY --from=build /out/wasmkube-operator /usr/local/bin/wasmkube-operator
# The registry client loads a system CA store (docs/install.md, "TLS roots"); `make images` puts the same file there.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/wasmkube-operator"]
CMD ["run"]

# The installer enters the host's namespaces itself to restart containerd: nothing else in the image.
FROM scratch AS node
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY --from=build /out/wasmkube-node-installer /usr/local/bin/wasmkube-node-installer
COPY --from=build /out/containerd-shim-wasmkube-v1 /usr/local/lib/wasmkube/containerd-shim-wasmkube-v1
ENTRYPOINT ["/usr/local/bin/wasmkube-node-installer"]
CMD ["install"]
