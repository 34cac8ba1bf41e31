#!/usr/bin/env bash
# Benchmark: `zergling-demo --listen` served directly against `zergpool` + one
# `zergling-demo`, keep-alive and `Connection: close`, measured in one run.
#
# Decision it informs: the cost of the pool on the data path. After the hand-off
# the pool is out of the way, so keep-alive should be ≥ 0.95 of direct; with one
# connection per request the hand-off happens every time: goal ≥ 0.75 of direct.
#
# Usage: benches/pool-vs-direct.sh   (DURATION=10 ROUNDS=3 CONNS=50 to change)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need wrk; need curl; need taskset util-linux
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release
TMP=$(mktemp -d); trap 'cleanup; rm -rf "$TMP"' EXIT

DPORT=$(free_port)
taskset -c "$SERVER_CPU" "$BIN/zergling-demo" --listen 127.0.0.1:$DPORT 2>"$TMP/direct.log" &
DPID=$!; PIDS_TO_KILL+=($DPID)

PPORT=$(free_port)
ZERGPOOL_LOG=warn taskset -c "$SERVER_CPU" "$BIN/zergpool" --disable-logging --http 127.0.0.1:$PPORT --listen 4096 \
  --zerg-server "$TMP/zerg.sock" --zergling "$BIN/zergling-demo" 2>"$TMP/pool.log" &
PPID_=$!; PIDS_TO_KILL+=($PPID_)
wait_http "http://127.0.0.1:$DPORT/"; wait_http "http://127.0.0.1:$PPORT/"
ZPID=$(curl -s "http://127.0.0.1:$PPORT/pid")

echo "zergpool vs direct: wrk -t1 -c$CONNS -d${DURATION}s, $ROUNDS rounds, server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
printf '%-8s %-10s %12s %12s %14s %14s\n' round mode direct_rps pool_rps direct_us/req pool_us/req
declare -A D P
for r in $(seq 1 "$ROUNDS"); do
  for mode in keepalive close; do
    c=0; [ $mode = close ] && c=1
    read -r drps dus _ < <(run_wrk direct "http://127.0.0.1:$DPORT/" $c $DPID)
    read -r prps pus _ < <(run_wrk pool "http://127.0.0.1:$PPORT/" $c $PPID_ $ZPID)
    D[$mode]+="$drps "; P[$mode]+="$prps "
    printf '%-8s %-10s %12s %12s %14s %14s\n' "$r" $mode "$drps" "$prps" "$dus" "$pus"
  done
done
echo
for mode in keepalive close; do
  d=$(tr ' ' '\n' <<<"${D[$mode]}" | grep . | mean); p=$(tr ' ' '\n' <<<"${P[$mode]}" | grep . | mean)
  printf 'mean %-10s direct %8s rps   pool %8s rps   ratio pool/direct %s\n' $mode "$d" "$p" "$(ratio "$p" "$d")"
done
