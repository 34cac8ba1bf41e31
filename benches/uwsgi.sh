#!/usr/bin/env bash
# Benchmark: nginx in front of an application server over the uwsgi protocol (issue 6),
# keep-alive between wrk and nginx, one server core for everything server-side:
#
#   zergpool   nginx → uwsgi_pass 127.0.0.1:P → zergpool --socket (release build) →
#              2 zergling-demo spawned by the pool (--zergling); the pool accepts
#              every connection, reads the packet and hands the descriptor over
#   direct     the same with --zerg-direct-accept: the zerglings accept on the
#              pool's uwsgi socket themselves (the pool pauses its own accept)
#   direct1    the same with one zergling: on one core a tokio zergling needs no
#              second process for concurrency (uWSGI's sync workers do)
#   uwsgi      nginx → uwsgi_pass 127.0.0.1:P → Debian's uWSGI, python3 plugin,
#              --processes 2 --master, a WSGI app returning the same 13 bytes
#   proxy      nginx → proxy_pass (upstream keepalive 32, HTTP/1.1) →
#              zergling-demo --listen 127.0.0.1:P (no pool)
#
# One nginx (worker_processes 1, access_log off) with one server per setup; only one
# setup is loaded at a time. nginx never reuses uwsgi upstream connections
# (../shared/reference/uwsgi-compat.md §2.3): every uwsgi row costs one loopback TCP
# connection per request between nginx and the server, the proxy row does not.
# Every figure is req/s with the server-side CPU time per request (nginx master and
# worker plus the backend's processes) and nginx's own share of it, then the means
# and the ratios to the uwsgi and proxy_pass rows measured in the same run.
# Last, the ceiling against proxy_pass: nginx's own CPU per uwsgi_pass request
# (uwsgi row) against the whole proxy_pass row's CPU per request; no server behind
# uwsgi_pass, even one costing nothing, can do better than that ratio on one core.
#
# Decision it informs: whether the uwsgi path is cheap enough to put the pool behind
# nginx instead of uWSGI (goal: ≥ 1.0 of uWSGI) and instead of a plain keep-alive
# proxy_pass to the application (goal: ≥ 1.0; the ceiling line says whether that is
# possible at all), and what zerg-direct-accept buys.
#
# Usage: benches/uwsgi.sh   (DURATION=10 ROUNDS=3 CONNS=50 to change)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need wrk; need curl; need taskset util-linux; need nginx; need uwsgi "uwsgi uwsgi-plugin-python3"
need python3
[ -r /etc/nginx/uwsgi_params ] || { echo "missing /etc/nginx/uwsgi_params (nginx-common)" >&2; exit 1; }
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin zergpool --bin zergling-demo
BIN=$ROOT/target/release
TMP=$(mktemp -d); trap 'cleanup; rm -rf "$TMP"' EXIT
chmod 755 "$TMP"

# --- zergpool + 2 zerglings -----------------------------------------------------
ZPORT=$(free_port)
ZERGPOOL_LOG=warn taskset -c "$SERVER_CPU" "$BIN/zergpool" --disable-logging --socket 127.0.0.1:$ZPORT --listen 4096 \
  --zerg-server "$TMP/zerg.sock" --zergling "$BIN/zergling-demo" --zergling "$BIN/zergling-demo" \
  2>"$TMP/zergpool.log" &
ZPID=$!; PIDS_TO_KILL+=($ZPID)
XPORT=$(free_port)
ZERGPOOL_LOG=warn taskset -c "$SERVER_CPU" "$BIN/zergpool" --disable-logging --socket 127.0.0.1:$XPORT --listen 4096 --zerg-direct-accept \
  --zerg-server "$TMP/zerg-direct.sock" --zergling "$BIN/zergling-demo" --zergling "$BIN/zergling-demo" \
  2>"$TMP/zergpool-direct.log" &
XPID=$!; PIDS_TO_KILL+=($XPID)
YPORT=$(free_port)
ZERGPOOL_LOG=warn taskset -c "$SERVER_CPU" "$BIN/zergpool" --disable-logging --socket 127.0.0.1:$YPORT --listen 4096 --zerg-direct-accept \
  --zerg-server "$TMP/zerg-direct1.sock" --zergling "$BIN/zergling-demo" 2>"$TMP/zergpool-direct1.log" &
YPID=$!; PIDS_TO_KILL+=($YPID)

# --- uWSGI, 2 processes ---------------------------------------------------------
UPORT=$(free_port)
cat >"$TMP/hello.py" <<'PY'
BODY = b"Hello, world!"


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
PY
taskset -c "$SERVER_CPU" uwsgi --plugin python3 --socket 127.0.0.1:$UPORT --wsgi-file "$TMP/hello.py" \
  --processes 2 --master --die-on-term --disable-logging --listen 1024 >"$TMP/uwsgi.log" 2>&1 &
UPID=$!; PIDS_TO_KILL+=($UPID)

# --- zergling-demo alone (the proxy_pass backend) -------------------------------
DPORT=$(free_port)
taskset -c "$SERVER_CPU" "$BIN/zergling-demo" --listen 127.0.0.1:$DPORT 2>"$TMP/demo.log" &
DPID=$!; PIDS_TO_KILL+=($DPID)

# --- nginx: three servers --------------------------------------------------------
NZ=$(free_port); NU=$(free_port); NP=$(free_port); NX=$(free_port); NY=$(free_port)
start_nginx "$TMP/nginx" "
  upstream demo {
    server 127.0.0.1:$DPORT;
    keepalive 32;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$NZ backlog=4096;
    location / { include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:$ZPORT; }
  }
  server {
    listen 127.0.0.1:$NY backlog=4096;
    location / { include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:$YPORT; }
  }
  server {
    listen 127.0.0.1:$NX backlog=4096;
    location / { include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:$XPORT; }
  }
  server {
    listen 127.0.0.1:$NU backlog=4096;
    location / { include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:$UPORT; }
  }
  server {
    listen 127.0.0.1:$NP backlog=4096;
    location / {
      proxy_pass http://demo;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host \$host;
    }
  }"

for port in $NZ $NU $NP $NX $NY; do wait_http "http://127.0.0.1:$port/"; done
for _ in $(seq 1 100); do
  [ "$(pgrep -c -P "$ZPID" || true)" -ge 2 ] && [ "$(pgrep -c -P "$XPID" || true)" -ge 2 ] \
    && [ "$(pgrep -c -P "$YPID" || true)" -ge 1 ] && break
  sleep 0.05
done
# Children forked by the masters (nginx worker, uWSGI workers, the pool's zerglings):
# measured (CPU) and killed by PID too.
NPIDS=("$NPID" $(pgrep -P "$NPID" || true))
UPIDS=("$UPID" $(pgrep -P "$UPID" || true))
ZPIDS=("$ZPID" $(pgrep -P "$ZPID" || true))
XPIDS=("$XPID" $(pgrep -P "$XPID" || true))
YPIDS=("$YPID" $(pgrep -P "$YPID" || true))
PIDS_TO_KILL+=("${NPIDS[@]:1}" "${UPIDS[@]:1}" "${ZPIDS[@]:1}" "${XPIDS[@]:1}" "${YPIDS[@]:1}")
[ "${#ZPIDS[@]}" -eq 3 ] || { echo "expected 2 zerglings under the pool, found: ${ZPIDS[*]:1}" >&2; exit 1; }
[ "${#XPIDS[@]}" -eq 3 ] || { echo "expected 2 zerglings under the direct pool, found: ${XPIDS[*]:1}" >&2; exit 1; }

# Every setup must send the very same bytes.
for port in $NZ $NU $NP $NX $NY; do
  body=$(curl -sf "http://127.0.0.1:$port/")
  [ "$body" = "Hello, world!" ] || { echo "nginx port $port answers $body" >&2; exit 1; }
done

echo "nginx in front, keep-alive client: wrk -t1 -c$CONNS -d${DURATION}s, $ROUNDS round(s), servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
echo "(us: server CPU per request, nginx included; nginx_us: nginx's own share)"
SETUPS=(zergpool direct direct1 uwsgi proxy_pass)
declare -A PORT=([zergpool]=$NZ [direct]=$NX [direct1]=$NY [uwsgi]=$NU [proxy_pass]=$NP)
declare -A BACK=([zergpool]="${ZPIDS[*]}" [direct]="${XPIDS[*]}" [direct1]="${YPIDS[*]}" [uwsgi]="${UPIDS[*]}" [proxy_pass]="$DPID")
declare -A RPS US NGX
printf '%-6s %-11s %10s %8s %9s\n' round setup rps us nginx_us
for r in $(seq 1 "$ROUNDS"); do
  for s in "${SETUPS[@]}"; do
    read -r rps us ngx < <(FRONT_PIDS="${NPIDS[*]}" run_wrk "$s" "http://127.0.0.1:${PORT[$s]}/" 0 "${NPIDS[@]}" ${BACK[$s]})
    RPS[$s]+="$rps "; US[$s]+="$us "; NGX[$s]+="$ngx "
    printf '%-6s %-11s %10s %8s %9s\n' "$r" "$s" "$rps" "$us" "$ngx"
  done
done
avg() { tr ' ' '\n' | grep . | awk '{ s += $1; n++ } END { printf "%.1f", n ? s / n : 0 }'; }
echo
printf '%-11s %10s %8s %9s %12s %17s\n' mean rps us nginx_us "ratio/uwsgi" "ratio/proxy_pass"
u=$(mean <<<"$(tr ' ' '\n' <<<"${RPS[uwsgi]}" | grep .)"); p=$(mean <<<"$(tr ' ' '\n' <<<"${RPS[proxy_pass]}" | grep .)")
for s in "${SETUPS[@]}"; do
  m=$(mean <<<"$(tr ' ' '\n' <<<"${RPS[$s]}" | grep .)")
  printf '%-11s %10s %8s %9s %12s %17s\n' "$s" "$m" "$(avg <<<"${US[$s]}")" "$(avg <<<"${NGX[$s]}")" "$(ratio "$m" "$u")" "$(ratio "$m" "$p")"
done
# The ceiling of any uwsgi server against the proxy_pass row: with everything on one
# core, a uwsgi_pass row can at best do 1 / (nginx's own CPU per uwsgi request), the
# proxy_pass row does 1 / (its whole CPU per request).
ngx=$(avg <<<"${NGX[uwsgi]}"); prx=$(avg <<<"${US[proxy_pass]}")
echo
echo "nginx alone costs $ngx us per uwsgi_pass request (uwsgi row); the whole proxy_pass row costs $prx us per request:"
echo "no server behind uwsgi_pass, even one costing nothing, can exceed $(ratio "$prx" "$ngx") of proxy_pass on one core."
for log in "$TMP/nginx/logs/error.log"; do
  if grep -q '\[error\]' "$log"; then
    echo "nginx logged errors:" >&2; grep '\[error\]' "$log" | sort | uniq -c | sort -rn | head -5 >&2
  fi
done
