#!/usr/bin/env bash
# fuzz-uwsgi.sh: runs a uwsgi fuzz target of fuzz/ (cargo-fuzz, libFuzzer) for a bounded
# time and prints the executions and the findings. Seeds are the packets captured from
# nginx (tests/data/uwsgi/*.bin); findings land in fuzz/artifacts/TARGET/.
#
# Usage: scripts/fuzz-uwsgi.sh [SECONDS (default 60)] [TARGET (default uwsgi_packet;
#        also uwsgi_http_head)]
# Needs `cargo install cargo-fuzz` and a C++ compiler (libFuzzer is built from source).
# cargo-fuzz passes -Z flags to rustc; RUSTC_BOOTSTRAP=1 lets a stable toolchain take
# them (set FUZZ_TOOLCHAIN=nightly to use a nightly one instead).
# Exit status: 0 without findings, 1 with findings, 2 when it could not run.
set -euo pipefail

secs="${1:-60}"
target="${2:-uwsgi_packet}"
root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz="$root/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi
toolchain=()
if [[ -n "${FUZZ_TOOLCHAIN:-}" ]]; then
    toolchain=("+$FUZZ_TOOLCHAIN")
fi

# Seed corpus: each capture, with the buffer size the uwsgi_packet target reads first
# (4096 as 2 bytes little-endian; uwsgi_http_head takes the packet alone).
corpus="$fuzz/corpus/$target"
mkdir -p "$corpus" "$fuzz/artifacts/$target"
for bin in "$root"/tests/data/uwsgi/*.bin; do
    seed="$corpus/seed-$(basename "$bin" .bin)"
    if [[ "$target" == uwsgi_packet ]]; then
        { printf '\x00\x10'; cat "$bin"; } >"$seed"
    else
        cp "$bin" "$seed"
    fi
done
before=$(find "$fuzz/artifacts/$target" -type f | wc -l)

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
start=$(date +%s)
set +e
(cd "$fuzz" && RUSTC_BOOTSTRAP=1 cargo "${toolchain[@]}" fuzz run "$target" "$corpus" -- \
    -max_total_time="$secs" -dict="$fuzz/uwsgi.dict" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048) \
    >"$log" 2>&1
status=$?
set -e
elapsed=$(( $(date +%s) - start ))

grep -E '^(#[0-9]+ +DONE|stat::|==[0-9]+==|SUMMARY|thread .* panicked|Running:|Failed to compile)' "$log" | tail -n 40 || true
execs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' | tail -n 1 || true)
findings=$(( $(find "$fuzz/artifacts/$target" -type f | wc -l) - before ))
echo "target: $target"
echo "fuzzing time: ${secs}s requested, ${elapsed}s wall clock including the build"
echo "executions: ${execs:-unknown}"
echo "findings: $findings new (artifacts in fuzz/artifacts/$target/)"
if [[ -z "$execs" ]]; then
    echo "the fuzzer did not run; its output:" >&2
    tail -n 40 "$log" >&2
    exit 2
fi
if (( findings > 0 || status != 0 )); then
    exit 1
fi
