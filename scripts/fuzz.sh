#!/usr/bin/env bash
# fuzz.sh: runs the cargo-fuzz targets of fuzz/ (libFuzzer), each for a bounded time,
# and prints the executions and findings of each. One target for every parser of
# untrusted input:
#
#   http_head        the pool's HTTP head classification, checked against hyper
#   uwsgi_packet     the uwsgi packet parser
#   uwsgi_http_head  the HTTP head the zergling makes of a uwsgi packet
#   proto_frame      protocol frames with descriptors, through a real socket pair
#   config_file      the YAML and INI dialects, placeholders, the typed configuration
#   static_path      the static-map path resolver, against a tree of symlink traps
#
# Usage: scripts/fuzz.sh [SECONDS per target (default 60)] [TARGET ...] (default: all)
# Environment: FUZZ_SAVE=1 merges what a run found into the kept corpus
# (fuzz/corpus/TARGET, minimised); FUZZ_TOOLCHAIN=nightly builds with a nightly
# toolchain instead of stable with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags).
#
# The kept corpus is only read: new inputs go to a scratch directory, so a run
# never changes the repository unless FUZZ_SAVE=1. Findings land in
# fuzz/artifacts/TARGET/ (reproduce: cd fuzz && cargo fuzz run TARGET artifacts/TARGET/FILE).
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a C++ compiler.
# Exit status: 0 without findings, 1 with findings, 2 when a target could not run.
set -euo pipefail

secs="${1:-60}"
shift || true
all=(http_head uwsgi_packet uwsgi_http_head proto_frame config_file static_path)
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=("${all[@]}")
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz="$root/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 2
fi
toolchain=()
if [[ -n "${FUZZ_TOOLCHAIN:-}" ]]; then
    toolchain=("+$FUZZ_TOOLCHAIN")
fi
export RUSTC_BOOTSTRAP=1

dict_of() {
    case "$1" in
        http_head) echo "$fuzz/http.dict" ;;
        uwsgi_*) echo "$fuzz/uwsgi.dict" ;;
        static_path) echo "$fuzz/path.dict" ;;
        *) echo "" ;;
    esac
}

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# Build first (release, debug assertions on, AddressSanitizer), so that the time
# given to each target is spent fuzzing.
for t in "${targets[@]}"; do
    if ! (cd "$fuzz" && cargo "${toolchain[@]}" fuzz build --debug-assertions "$t") >>"$scratch/build.log" 2>&1; then
        echo "building the fuzz target $t failed:" >&2
        tail -n 40 "$scratch/build.log" >&2
        exit 2
    fi
done

status=0
summary=()
for target in "${targets[@]}"; do
    kept="$fuzz/corpus/$target"
    work="$scratch/$target"
    mkdir -p "$kept" "$work" "$fuzz/artifacts/$target"
    before=$(find "$fuzz/artifacts/$target" -type f | wc -l)
    dict="$(dict_of "$target")"
    args=(-max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048
          -artifact_prefix="$fuzz/artifacts/$target/")
    if [[ -n "$dict" ]]; then
        args+=(-dict="$dict")
    fi
    log="$scratch/$target.log"
    set +e
    (cd "$fuzz" && cargo "${toolchain[@]}" fuzz run --debug-assertions "$target" "$work" "$kept" -- "${args[@]}") >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' | tail -n 1 || true)
    cov=$(grep -E '^#[0-9]+[[:space:]]+(DONE|INITED|NEW|REDUCE|pulse)' "$log" | grep -oE 'cov: [0-9]+' | tail -n 1 || true)
    findings=$(( $(find "$fuzz/artifacts/$target" -type f | wc -l) - before ))
    if [[ -z "$execs" ]]; then
        echo "== $target did not run; its output:" >&2
        tail -n 40 "$log" >&2
        summary+=("$target: did not run")
        status=2
        continue
    fi
    if (( findings > 0 || rc != 0 )); then
        grep -E '^(==[0-9]+==|SUMMARY)|panicked at' -A3 "$log" | head -n 30 >&2 || true
        if (( status == 0 )); then
            status=1
        fi
    fi
    if [[ "${FUZZ_SAVE:-0}" == 1 ]]; then
        (cd "$fuzz" && cargo "${toolchain[@]}" fuzz run --debug-assertions "$target" "$kept" "$work" -- -merge=1) \
            >"$scratch/$target.merge.log" 2>&1 || true
    fi
    line="$target: ${secs}s, $execs executions, ${cov:-cov: ?} edges, $(find "$work" "$kept" -type f | wc -l) inputs, $findings findings"
    echo "$line"
    summary+=("$line")
done
echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
if (( status == 1 )); then
    echo "findings are in fuzz/artifacts/ (reproduce: cd fuzz && cargo fuzz run TARGET artifacts/TARGET/FILE)" >&2
fi
exit "$status"
