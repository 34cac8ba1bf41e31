#!/usr/bin/env bash
# Benchmark: what request logging costs. Three pools with one zergling-demo
# each, side by side: logging off (`disable-logging`), uWSGI's line to a file
# (`logto`), JSON lines to a file (`log-json`); `wrk -t1 -c$CONNS` keep-alive
# and `Connection: close`, in one run.
#
# Decision it informs (issue 15): logging on must cost no more than 5 % of
# keep-alive throughput.
#
# Usage: benches/reqlog.sh   (DURATION=10 ROUNDS=3 CONNS=50 to change)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need wrk; need curl; need taskset util-linux
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release
TMP=$(mktemp -d); trap 'cleanup; rm -rf "$TMP"' EXIT

declare -A PORT PIDS
start() { # NAME OPTIONS...
  local name=$1; shift
  local port; port=$(free_port); PORT[$name]=$port
  ZERGPOOL_LOG=warn taskset -c "$SERVER_CPU" "$BIN/zergpool" --http 127.0.0.1:$port --listen 4096 "$@" \
    --zerg-server "$TMP/$name.sock" --zergling "$BIN/zergling-demo" 2>"$TMP/$name.stderr" &
  local pid=$!; PIDS_TO_KILL+=($pid)
  wait_http "http://127.0.0.1:$port/"
  PIDS[$name]="$pid $(curl -s "http://127.0.0.1:$port/pid")"
}
start off --disable-logging
start uwsgi --logto "$TMP/uwsgi.log"
start json --logto "$TMP/json.log" --log-json

echo "request logging: wrk -t1 -c$CONNS -d${DURATION}s, $ROUNDS rounds, server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
printf '%-8s %-10s %-6s %12s %10s\n' round mode log rps us/req
declare -A R
for r in $(seq 1 "$ROUNDS"); do
  for mode in keepalive close; do
    c=0; [ $mode = close ] && c=1
    for s in off uwsgi json; do
      # shellcheck disable=SC2086
      read -r rps us _ < <(run_wrk "$s" "http://127.0.0.1:${PORT[$s]}/" $c ${PIDS[$s]})
      R[$mode,$s]+="$rps "
      printf '%-8s %-10s %-6s %12s %10s\n' "$r" $mode $s "$rps" "$us"
    done
  done
done
echo
for mode in keepalive close; do
  base=$(tr ' ' '\n' <<<"${R[$mode,off]}" | grep . | mean)
  for s in uwsgi json; do
    m=$(tr ' ' '\n' <<<"${R[$mode,$s]}" | grep . | mean)
    printf 'mean %-10s off %8s rps  %-6s %8s rps  ratio %s\n' $mode "$base" $s "$m" "$(ratio "$m" "$base")"
  done
done
echo "lines written: uwsgi $(wc -l <"$TMP/uwsgi.log"), json $(wc -l <"$TMP/json.log")"
