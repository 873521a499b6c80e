#!/usr/bin/env bash
# Builds the example components and pushes the ones the e2e uses to $PUSH_REGISTRY with our CLI:
# hello-http (also as `site`, the ConfigMap sample's component) and the sleeper worker.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
make -C "$ROOT" guests build
guests="$ROOT/target/wasm32-wasip2/release"
for pair in hello-http:hello_http site:hello_http sleeper:sleeper; do
    "$ROOT/target/debug/wasmkube" push --insecure "$guests/${pair#*:}.wasm" "$PUSH_REGISTRY/examples/${pair%%:*}:$TAG"
done
