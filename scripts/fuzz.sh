#!/usr/bin/env bash
# The cargo fuzz targets of fuzz/ (docs/security.md, "Fuzzing"). `fuzz.sh [--quick] SECONDS [TARGET...]` builds
# every target in one cargo invocation, then runs each one for SECONDS from its seed corpus and regression inputs,
# as many at once as there are CPUs. --quick (`make test`) builds with fuzz/'s dev profile, which is faster to build
# and slower to run; without it, the release build. Corpus additions, logs and failing inputs stay under the
# cargo target dir.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE=(-O -a --codegen-units 16)
PROFILE_DIR=release
if [ "${1:-}" = "--quick" ]; then
    PROFILE=(--dev --codegen-units 16)
    PROFILE_DIR=debug
    shift
fi
SECONDS_EACH="${1:?usage: fuzz.sh [--quick] SECONDS [TARGET...]}"
shift
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/fuzz"
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    for file in "$ROOT"/fuzz/fuzz_targets/*.rs; do TARGETS+=("$(basename "$file" .rs)"); done
fi

cd "$ROOT/fuzz"
# No sanitizer: the code is safe Rust, and what we look for are panics, integer overflows (overflow checks are on
# in both profiles) and hangs.
cargo +"$TOOLCHAIN" fuzz build "${PROFILE[@]}" --sanitizer none --target-dir "$OUT"
export BIN="$OUT/x86_64-unknown-linux-gnu/$PROFILE_DIR" OUT SECONDS_EACH

run_one() { # TARGET
    local target="$1" log="$OUT/logs/$1.log" seeds=("corpus/$1")
    if [ -d "regressions/$target" ]; then seeds+=("regressions/$target"); fi
    mkdir -p "$OUT/corpus/$target" "$OUT/artifacts/$target" "$OUT/logs"
    # The first directory receives new inputs; the repository's are only read. An input that runs 10 s is a hang.
    if "$BIN/$target" "$OUT/corpus/$target" "${seeds[@]}" -max_total_time="$SECONDS_EACH" -timeout=10 \
        -artifact_prefix="$OUT/artifacts/$target/" -print_final_stats=1 >"$log" 2>&1; then
        echo "fuzz $target: $(sed -n 's/^stat::number_of_executed_units: *//p' "$log") inputs in ${SECONDS_EACH}s, no failure"
    else
        grep -v '^ *at \|^ *[0-9]*: ' "$log" | tail -n 25
        echo "fuzz $target failed; the input is in $OUT/artifacts/$target/: fix the parser and keep the input as" \
            "fuzz/regressions/$target/<what it is> (docs/security.md, \"Fuzzing\")" >&2
        return 1
    fi
}
export -f run_one
# shellcheck disable=SC2016 # the inner shell expands $1
printf '%s\n' "${TARGETS[@]}" | xargs -P "$(nproc)" -I{} bash -c 'run_one "$1"' _ {}
