#!/usr/bin/env bash
# Builds the JavaScript wasi:http component of `wasmkube-bench component-memory` (bench/js-http) with
# componentize-js from the npm registry into $1 (default $CARGO_TARGET_DIR/js-http/js-http.wasm), unless it
# is newer than its sources. Needs node and npm (the Makefile installs them); about 400 MB of node modules.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
WORK="$TARGET/js-http"
OUT="${1:-$WORK/js-http.wasm}"
# The version whose StarlingMonkey engine exports wasi:http 0.2.10 (the world names that version).
COMPONENTIZE_JS=0.23.0
WASI_WIT_FROM=0.2.12
WASI_WIT_AS=0.2.10

src="$ROOT/bench/js-http"
if [ -f "$OUT" ] && [ -z "$(find "$src" -newer "$OUT" -type f)" ]; then
    echo "$OUT is up to date"
    exit 0
fi
mkdir -p "$WORK"
rm -rf "$WORK/src"
cp -r "$src" "$WORK/src"
cd "$WORK/src"
if [ ! -d "$WORK/node_modules/@bytecodealliance/componentize-js" ]; then
    (cd "$WORK" && npm install --no-audit --no-fund --silent "@bytecodealliance/componentize-js@$COMPONENTIZE_JS")
fi
ln -sfn "$WORK/node_modules" node_modules
# wasi:http and its dependencies from jco's bundled WIT, renamed to the version the engine exports.
builtin="$WORK/node_modules/@bytecodealliance/jco/lib/wit/builtin/$WASI_WIT_FROM"
mkdir -p wit/deps
for pkg in wasi-cli wasi-clocks wasi-filesystem wasi-http wasi-io wasi-random wasi-sockets; do
    cp -r "$builtin/$pkg" wit/deps/
done
find wit/deps -name '*.wit' -exec sed -i "s/@$WASI_WIT_FROM/@$WASI_WIT_AS/g" {} +
node build.mjs "$OUT"
