#!/usr/bin/env bash
# Benchmark: static files (issue 5), keep-alive, one server core each:
#
#   zergpool  target/release/zergpool --static-map /s=DIR (no zergling: the pool serves
#             every request itself, sendfile(2) on plain TCP)
#   nginx     worker_processes 1, sendfile on, access_log off, alias DIR
#   uwsgi     --plugin python3 --http-socket --static-map /s=DIR --processes 1 --master
#             (no application loaded)
#
# Files of 1 KiB, 100 KiB and 10 MiB; figures printed as req/s and MB/s (body bytes,
# 10^6 bytes per MB) with the server CPU time per request, then the means with the
# ratios zergpool/nginx and zergpool/uwsgi measured in the same run.
#
# The client is examples/loadgen.rs (`loadgen download`, $CONNS keep-alive connections,
# one thread, pinned to CPU $CLIENT_CPU): it reads each response head and moves the body
# with splice(2) into /dev/null, so it never copies the bytes. wrk, which copies every
# byte into user space, was the limit for both servers at 100 KiB and 10 MiB (its one
# core at 100 % while the servers idled), so its ratios said nothing about the
# servers. The client_cpu column is loadgen's share of its core: near 1.00 would mean
# the client was the limit again.
#
# Decision it informs: whether the pool's static path (one spawn_blocking to resolve
# and open, a head written with MSG_MORE, then sendfile) is fast enough to be the
# static server itself (goal: ≥ 1.0 of nginx for all three sizes), or needs a cache
# of opened files / of resolved paths.
#
# Notes (../shared/reference/running-the-anchors.md): uWSGI runs with --http-socket,
# not the --http router (which stalls ~44 ms per 100 KiB: Nagle + delayed ACK). Its
# plain HTTP protocol closes after each response; --add-header 'Connection: close'
# says so, so that the client reconnects instead of counting read errors: its row is really
# one connection per request. The Debian nginx service stays stopped: this copy has
# its own prefix, configuration, pid, log and temp folders in a temporary folder.
#
# Usage: benches/static.sh   (DURATION=10 ROUNDS=3 CONNS=50 to change)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need curl; need taskset util-linux; need nginx; need uwsgi "uwsgi uwsgi-plugin-python3"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin zergpool --example loadgen
BIN=$ROOT/target/release
LOADGEN=$BIN/examples/loadgen
TMP=$(mktemp -d); trap 'cleanup; rm -rf "$TMP"' EXIT
# nginx's worker runs as an unprivileged user when started by root: it must be able
# to read the files.
chmod 755 "$TMP"

SIZES=(1KiB 100KiB 10MiB)
declare -A BYTES=([1KiB]=1024 [100KiB]=102400 [10MiB]=10485760)
DIR=$TMP/www
mkdir -p "$DIR"
for s in "${SIZES[@]}"; do head -c "${BYTES[$s]}" /dev/urandom >"$DIR/$s.bin"; done
chmod 755 "$DIR"; chmod 644 "$DIR"/*

# --- zergpool -------------------------------------------------------------------
ZPORT=$(free_port)
ZERGPOOL_LOG=warn taskset -c "$SERVER_CPU" "$BIN/zergpool" --disable-logging --http 127.0.0.1:$ZPORT --listen 4096 \
  --zerg-server "$TMP/zerg.sock" --static-map "/s=$DIR" 2>"$TMP/zergpool.log" &
ZPID=$!; PIDS_TO_KILL+=($ZPID)

# --- nginx ----------------------------------------------------------------------
NPORT=$(free_port)
start_nginx "$TMP/nginx" "
  sendfile on;
  tcp_nopush on;
  server {
    listen 127.0.0.1:$NPORT backlog=4096;
    location /s/ { alias $DIR/; }
  }"

# --- uWSGI ----------------------------------------------------------------------
UPORT=$(free_port)
# Debian's uwsgi core has no request plugin built in: without one, every request
# (static-map hits included) fails with "unavailable modifier requested: 0". The
# python3 plugin handles static-map hits; no application is loaded.
taskset -c "$SERVER_CPU" uwsgi --plugin python3 --http-socket 127.0.0.1:$UPORT --static-map "/s=$DIR" --processes 1 --master \
  --die-on-term --disable-logging --add-header 'Connection: close' --listen 1024 >"$TMP/uwsgi.log" 2>&1 &
UPID=$!; PIDS_TO_KILL+=($UPID)

for port in $ZPORT $NPORT $UPORT; do wait_http "http://127.0.0.1:$port/s/1KiB.bin"; done
# The workers the masters forked: measured (CPU) and killed by PID too.
NPIDS=("$NPID" $(pgrep -P "$NPID" || true)); UPIDS=("$UPID" $(pgrep -P "$UPID" || true))
PIDS_TO_KILL+=("${NPIDS[@]:1}" "${UPIDS[@]:1}")

# Every server must send the very same bytes.
for s in "${SIZES[@]}"; do
  for port in $ZPORT $NPORT $UPORT; do
    curl -sf "http://127.0.0.1:$port/s/$s.bin" | cmp -s - "$DIR/$s.bin" \
      || { echo "port $port serves /s/$s.bin wrong" >&2; exit 1; }
  done
done

mbps() { awk -v r="$1" -v b="$2" 'BEGIN { printf "%.1f", r * b / 1e6 }'; }

echo "static files, keep-alive: loadgen download --conns $CONNS --duration $DURATION, $ROUNDS round(s), server on CPU $SERVER_CPU, client on CPU $CLIENT_CPU"
printf '%-6s %-7s | %10s %9s %7s | %10s %9s %7s | %10s %9s %7s | %s\n' round size \
  zp_rps zp_MB/s zp_us nginx_rps ngx_MB/s ngx_us uwsgi_rps uws_MB/s uws_us client_cpu_z/n/u
declare -A Z N U
for r in $(seq 1 "$ROUNDS"); do
  for s in "${SIZES[@]}"; do
    read -r zrps zus zcl < <(run_loadgen "$ZPID" download "127.0.0.1:$ZPORT" --path "/s/$s.bin" --conns "$CONNS")
    read -r nrps nus ncl < <(run_loadgen "${NPIDS[*]}" download "127.0.0.1:$NPORT" --path "/s/$s.bin" --conns "$CONNS")
    read -r urps uus ucl < <(run_loadgen "${UPIDS[*]}" download "127.0.0.1:$UPORT" --path "/s/$s.bin" --conns "$CONNS")
    Z[$s]+="$zrps "; N[$s]+="$nrps "; U[$s]+="$urps "
    b=${BYTES[$s]}
    printf '%-6s %-7s | %10s %9s %7s | %10s %9s %7s | %10s %9s %7s | %s\n' "$r" "$s" \
      "$zrps" "$(mbps "$zrps" "$b")" "$zus" "$nrps" "$(mbps "$nrps" "$b")" "$nus" "$urps" "$(mbps "$urps" "$b")" "$uus" \
      "$zcl/$ncl/$ucl"
  done
done
echo
printf '%-7s | %10s %9s | %10s %9s | %10s %9s | %14s %14s\n' size zp_rps zp_MB/s nginx_rps ngx_MB/s uwsgi_rps uws_MB/s \
  zergpool/nginx zergpool/uwsgi
for s in "${SIZES[@]}"; do
  z=$(tr ' ' '\n' <<<"${Z[$s]}" | grep . | mean)
  n=$(tr ' ' '\n' <<<"${N[$s]}" | grep . | mean)
  u=$(tr ' ' '\n' <<<"${U[$s]}" | grep . | mean)
  b=${BYTES[$s]}
  printf '%-7s | %10s %9s | %10s %9s | %10s %9s | %14s %14s\n' "$s" "$z" "$(mbps "$z" "$b")" "$n" "$(mbps "$n" "$b")" \
    "$u" "$(mbps "$u" "$b")" "$(ratio "$z" "$n")" "$(ratio "$z" "$u")"
done
