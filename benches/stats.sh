#!/usr/bin/env bash
# Benchmark: what watching the pool costs. zergpool + one zergling-demo, `wrk
# -t1 -c$CONNS` keep-alive and `Connection: close`, measured three ways in one
# run: plain; with `stats` and a client reading the stats document 10 times a
# second (as uwsgitop or an exporter would, faster); with `metrics` scraped 10
# times a second. The zerglings report their counters (STATS) in every case.
#
# Decision it informs (issue 15): watching must cost no visible throughput
# (ratios against plain ≈ 1.0, within the machine's noise).
#
# The rounds one after the other swing with the machine (±20 % here); the
# side-by-side runs at the end are the steadier figure: the watched pool and an
# unwatched twin loaded at once (both on the server CPU, the poller and the two
# wrk on the client CPU), their CPU per request compared, the order of the two
# loads turning every round.
#
# Usage: benches/stats.sh   (DURATION=10 ROUNDS=3 CONNS=50 to change)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need wrk; need curl; need taskset util-linux; need python3
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release
TMP=$(mktemp -d); trap 'cleanup; rm -rf "$TMP"' EXIT

# start_pool NAME: a pool with `stats` and `metrics` and one zergling-demo;
# prints "HTTP_PORT STATS_PORT METRICS_PORT POOL_PID ZERGLING_PID".
start_pool() {
  local port sport mport
  port=$(free_port); sport=$(free_port); mport=$(free_port)
  ZERGPOOL_LOG=warn taskset -c "$SERVER_CPU" "$BIN/zergpool" --disable-logging --http 127.0.0.1:$port --listen 4096 \
    --stats 127.0.0.1:$sport --metrics 127.0.0.1:$mport \
    --zerg-server "$TMP/$1.sock" --zergling "$BIN/zergling-demo" 2>"$TMP/$1.log" >/dev/null &
  echo $! >"$TMP/$1.pid"
  wait_http "http://127.0.0.1:$port/"
  echo "$port $sport $mport $(cat "$TMP/$1.pid") $(curl -s "http://127.0.0.1:$port/pid")"
}
read -r PORT SPORT MPORT PPID_ ZPID < <(start_pool watched)
PIDS_TO_KILL+=($PPID_)
# Its twin, never watched, for the side-by-side runs at the end.
read -r PORT2 _ _ PPID2 ZPID2 < <(start_pool plain)
PIDS_TO_KILL+=($PPID2)

# poll KIND: reads the stats document (stats) or /metrics (metrics) 10 times a
# second until killed.
poll() {
  taskset -c "$CLIENT_CPU" python3 - "$1" "$SPORT" "$MPORT" <<'PY' &
import socket, sys, time
kind, sport, mport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
while True:
    t = time.time()
    if kind == "stats":
        s = socket.create_connection(("127.0.0.1", sport))
        while s.recv(65536):
            pass
    else:
        s = socket.create_connection(("127.0.0.1", mport))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        while s.recv(65536):
            pass
    s.close()
    time.sleep(max(0.0, 0.1 - (time.time() - t)))
PY
  POLLER=$!; PIDS_TO_KILL+=($POLLER)
}

echo "watching the pool: wrk -t1 -c$CONNS -d${DURATION}s, $ROUNDS rounds, server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
printf '%-8s %-10s %-8s %12s %14s\n' round mode watch rps us/req
declare -A R
for r in $(seq 1 "$ROUNDS"); do
  for mode in keepalive close; do
    c=0; [ $mode = close ] && c=1
    for watch in none stats metrics; do
      POLLER=""
      [ $watch != none ] && poll $watch
      read -r rps us _ < <(run_wrk "$watch" "http://127.0.0.1:$PORT/" $c $PPID_ $ZPID)
      [ -n "$POLLER" ] && { kill "$POLLER" 2>/dev/null || true; wait "$POLLER" 2>/dev/null || true; }
      R[$mode,$watch]+="$rps "
      printf '%-8s %-10s %-8s %12s %14s\n' "$r" $mode $watch "$rps" "$us"
    done
  done
done
echo
for mode in keepalive close; do
  base=$(tr ' ' '\n' <<<"${R[$mode,none]}" | grep . | mean)
  for watch in stats metrics; do
    m=$(tr ' ' '\n' <<<"${R[$mode,$watch]}" | grep . | mean)
    printf 'mean %-10s plain %8s rps  with %-8s %8s rps  ratio %s\n' $mode "$base" $watch "$m" "$(ratio "$m" "$base")"
  done
done

echo
echo "side by side (the watched pool and its unwatched twin loaded at once, $ROUNDS rounds of ${DURATION}s):"
printf '%-8s %-10s %-8s %12s %12s %10s\n' round mode watch us_plain us_watched cpu_ratio
declare -A P
for r in $(seq 1 "$ROUNDS"); do
  for mode in keepalive close; do
    c=0; [ $mode = close ] && c=1
    for watch in stats metrics; do
      poll $watch
      if ((r % 2)); then
        read -r up uw _ _ < <(paired_wrk "http://127.0.0.1:$PORT2/" "$PPID2 $ZPID2" "http://127.0.0.1:$PORT/" "$PPID_ $ZPID" $c)
      else
        read -r uw up _ _ < <(paired_wrk "http://127.0.0.1:$PORT/" "$PPID_ $ZPID" "http://127.0.0.1:$PORT2/" "$PPID2 $ZPID2" $c)
      fi
      kill "$POLLER" 2>/dev/null || true; wait "$POLLER" 2>/dev/null || true
      q=$(awk -v a="$up" -v b="$uw" 'BEGIN { printf "%.3f", a / b }')
      P[$mode,$watch]+="$q "
      printf '%-8s %-10s %-8s %12s %12s %10s\n' "$r" $mode $watch "$up" "$uw" "$q"
    done
  done
done
for mode in keepalive close; do
  for watch in stats metrics; do
    printf '%-10s %-8s CPU per request plain/watched, median of %s rounds: %s\n' \
      $mode $watch "$ROUNDS" "$(tr ' ' '\n' <<<"${P[$mode,$watch]}" | grep . | median)"
  done
done
