#!/usr/bin/env bash
# Benchmark: TLS termination, zergpool (+ one spawned zergling-demo; the TLS session
# stays in the pool, which relays plaintext to the zergling through a socket pair)
# against nginx terminating TLS in front of `zergling-demo --listen` (proxy_pass with
# upstream keepalive). Same certificate (certs/localhost.pem, ECDSA P-256), same
# protocol and suite (TLS 1.3, TLS_AES_256_GCM_SHA384, checked with openssl s_client
# before measuring), every server-side process pinned to CPU $SERVER_CPU, clients to
# CPU $CLIENT_CPU, nginx with one worker.
#
# Rows:
#   keepalive   wrk -t1 -c$CONNS over TLS 1.3, keep-alive: relay/proxy throughput once the
#               handshakes are done (rps, and server CPU µs per request).
#   handshake   examples/loadgen.rs (`loadgen handshakes`): $HANDSHAKES connection loops
#               for $DURATION s, each one connecting, doing a full TLS 1.3 handshake
#               (rustls client, session resumption off, certificate verified against
#               certs/ca.pem), sending one GET, reading the response and closing: every
#               request costs one new full handshake. Printed: handshakes per second,
#               the server CPU µs per handshake, and loadgen's own CPU share of its core
#               (client_cpu near 1.00 would mean the client, not the server, was the
#               limit). h2load was used before: at ~600 µs per handshake on its one core
#               it was the limit for both servers (1,650 hs/s), so its ratio said
#               nothing about the servers; loadgen needs ~250 µs.
#
# Decision it informs: whether terminating TLS in the pool (rustls + relay) costs more
# than putting nginx in front. Goal (issue 4): ratio zergpool/nginx >= 1.0 on both rows
# (for rps; <= 1.0 for CPU µs per request/handshake).
#
# Usage: benches/tls.sh   (DURATION=10 ROUNDS=3 CONNS=50 HANDSHAKES=50)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need wrk; need curl; need openssl; need nginx; need taskset util-linux
HANDSHAKES=${HANDSHAKES:-50}
SUITE=TLS_AES_256_GCM_SHA384
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bins --example loadgen
LOADGEN=$ROOT/target/release/examples/loadgen
BIN=$ROOT/target/release
CERT=$ROOT/certs/localhost.pem
KEY=$ROOT/certs/localhost-key.pem
TMP=$(mktemp -d); trap 'cleanup; rm -rf "$TMP"' EXIT

wait_https() { # URL
  for _ in $(seq 1 200); do curl -skf -o /dev/null "$1" && return 0; sleep 0.05; done
  echo "server at $1 did not come up" >&2; return 1
}

# --- zergpool: https listener with the suite pinned by the CIPHERS field.
PPORT=$(free_port)
ZERGPOOL_LOG=warn taskset -c "$SERVER_CPU" "$BIN/zergpool" --disable-logging --https "127.0.0.1:$PPORT,$CERT,$KEY,$SUITE" \
  --listen 4096 --zerg-server "$TMP/zerg.sock" --zergling "$BIN/zergling-demo" 2>"$TMP/pool.log" &
POOL=$!; PIDS_TO_KILL+=($POOL)

# --- nginx: own prefix, configuration, pid and temp folders; one worker; TLS 1.3 only.
BPORT=$(free_port)
taskset -c "$SERVER_CPU" "$BIN/zergling-demo" --listen "127.0.0.1:$BPORT" 2>"$TMP/backend.log" &
BACKEND=$!; PIDS_TO_KILL+=($BACKEND)
NPORT=$(free_port)
mkdir -p "$TMP/nginx/logs" "$TMP/nginx/temp"
NGINX_USER=""; [ "$(id -u)" = 0 ] && NGINX_USER="user root;"
cat >"$TMP/nginx/nginx.conf" <<CONF
$NGINX_USER
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/temp/body;
  proxy_temp_path $TMP/nginx/temp/proxy;
  fastcgi_temp_path $TMP/nginx/temp/fastcgi;
  uwsgi_temp_path $TMP/nginx/temp/uwsgi;
  scgi_temp_path $TMP/nginx/temp/scgi;
  keepalive_requests 100000;
  upstream demo { server 127.0.0.1:$BPORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NPORT ssl backlog=4096;
    ssl_certificate $CERT;
    ssl_certificate_key $KEY;
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites $SUITE;
    location / {
      proxy_pass http://demo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
taskset -c "$SERVER_CPU" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" 2>"$TMP/nginx/stderr.log" &
NGINX=$!; PIDS_TO_KILL+=($NGINX)

wait_https "https://127.0.0.1:$PPORT/"; wait_https "https://127.0.0.1:$NPORT/"
ZPID=$(curl -sk "https://127.0.0.1:$PPORT/pid")
NWORKER=$(pgrep -P "$NGINX" | head -1)
[ -n "$NWORKER" ] || { echo "no nginx worker" >&2; cat "$TMP/nginx/stderr.log" "$TMP/nginx/logs/error.log" >&2; exit 1; }
PIDS_TO_KILL+=($NWORKER)

# Both must negotiate the same protocol and suite, or the comparison means nothing.
for p in $PPORT $NPORT; do
  got=$(openssl s_client -brief -connect "127.0.0.1:$p" </dev/null 2>&1 | awk -F': ' '/^Protocol version|^Ciphersuite/ {printf "%s ", $2}')
  [ "$got" = "TLSv1.3 $SUITE " ] || { echo "port $p negotiates '$got', not 'TLSv1.3 $SUITE'" >&2; exit 1; }
done

echo "TLS 1.3 ($SUITE, ECDSA P-256): zergpool + zergling-demo vs nginx → zergling-demo"
echo "keep-alive: wrk -t1 -c$CONNS -d${DURATION}s; handshakes: loadgen handshakes --conns $HANDSHAKES --duration $DURATION;"
echo "$ROUNDS round(s), servers on CPU $SERVER_CPU, clients on CPU $CLIENT_CPU"
printf '%-6s %-10s %12s %12s %14s %14s %10s\n' round row nginx zergpool nginx_us/req pool_us/req client_cpu
declare -A N P NU PU
for r in $(seq 1 "$ROUNDS"); do
  read -r nrps nus _ < <(run_wrk nginx "https://127.0.0.1:$NPORT/" 0 $NGINX $NWORKER $BACKEND)
  read -r prps pus _ < <(run_wrk zergpool "https://127.0.0.1:$PPORT/" 0 $POOL $ZPID)
  N[keepalive]+="$nrps "; P[keepalive]+="$prps "; NU[keepalive]+="$nus "; PU[keepalive]+="$pus "
  printf '%-6s %-10s %12s %12s %14s %14s\n' "$r" keepalive "$nrps" "$prps" "$nus" "$pus"
  hs=(--ca "$ROOT/certs/ca.pem" --suite "$SUITE" --conns "$HANDSHAKES")
  read -r nhs nus ncl < <(run_loadgen "$NGINX $NWORKER $BACKEND" handshakes "127.0.0.1:$NPORT" "${hs[@]}")
  read -r phs pus pcl < <(run_loadgen "$POOL $ZPID" handshakes "127.0.0.1:$PPORT" "${hs[@]}")
  N[handshake]+="$nhs "; P[handshake]+="$phs "; NU[handshake]+="$nus "; PU[handshake]+="$pus "
  printf '%-6s %-10s %12s %12s %14s %14s %10s\n' "$r" handshake "$nhs" "$phs" "$nus" "$pus" "$ncl/$pcl"
done
echo
for row in keepalive handshake; do
  n=$(tr ' ' '\n' <<<"${N[$row]}" | grep . | mean); p=$(tr ' ' '\n' <<<"${P[$row]}" | grep . | mean)
  nu=$(tr ' ' '\n' <<<"${NU[$row]}" | grep . | awk '{ s += $1; k++ } END { printf "%.1f", k ? s / k : 0 }')
  pu=$(tr ' ' '\n' <<<"${PU[$row]}" | grep . | awk '{ s += $1; k++ } END { printf "%.1f", k ? s / k : 0 }')
  unit=rps; [ $row = handshake ] && unit=hs/s
  printf 'mean %-10s nginx %8s %-5s zergpool %8s %-5s ratio zergpool/nginx %s   server CPU us nginx %s zergpool %s (ratio %s)\n' \
    $row "$n" $unit "$p" $unit "$(ratio "$p" "$n")" "$nu" "$pu" "$(ratio "$pu" "$nu")"
done
