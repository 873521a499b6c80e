#!/usr/bin/env bash
# Builds the example components and pushes the ones the e2e uses to $PUSH_REGISTRY with our CLI:
# hello-http (also as `site`, the ConfigMap sample's component), the sleeper worker, and hello-http-large
# (hello-http with a 20 MiB custom section appended, as large as components from other toolchains get).
# WASMKUBE_CLI names a built `wasmkube` binary; without it the CLI is built with cargo.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
make -C "$ROOT" guests
guests="${CARGO_TARGET_DIR:-$ROOT/target}/wasm32-wasip2/release"
wasmkube() {
    if [ -n "${WASMKUBE_CLI:-}" ]; then
        "$WASMKUBE_CLI" "$@"
    else
        (cd "$ROOT" && cargo run -q -p wasmkube-cli --bin wasmkube -- "$@")
    fi
}
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# A custom section (id 0: size, name, bytes) is valid anywhere at a component's top level; the engine skips it.
python3 - "$guests/hello_http.wasm" "$work/hello_http_large.wasm" <<'PY'
import sys
def leb(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
name, payload = b"wasmkube-e2e-padding", bytes(range(256)) * (20 * 1024 * 1024 // 256)
body = leb(len(name)) + name + payload
with open(sys.argv[2], "wb") as f:
    f.write(open(sys.argv[1], "rb").read() + b"\x00" + leb(len(body)) + body)
PY
for pair in hello-http:"$guests/hello_http.wasm" site:"$guests/hello_http.wasm" sleeper:"$guests/sleeper.wasm" \
    hello-http-large:"$work/hello_http_large.wasm"; do
    wasmkube push --insecure "${pair#*:}" "$PUSH_REGISTRY/examples/${pair%%:*}:$TAG"
done
