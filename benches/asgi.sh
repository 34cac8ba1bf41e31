#!/usr/bin/env bash
# Benchmark: ASGI servers side by side, one application process each, in one run.
#
#   zergpool      zergpool + the Python zergling (ASGI, uvloop)
#   zp-direct     the same with `zerg-direct-accept-http` (no hand-off per connection)
#   granian       granian --interface asgi --workers 1
#   uvicorn       uvicorn --http httptools --loop uvloop --workers 1
#
# Application (benches/data/asgi_bench.py): `/` answers 13 bytes. Measured with
# keep-alive and with `Connection: close` (`wrk -t1 -c$CONNS`), and WebSocket
# echo of 1 KiB messages over $CONNS connections (`ws-bench`, a binary of
# crates/zergling-demo: each connection sends and waits for its echo). Every
# server process is pinned to CPU $SERVER_CPU, the clients to CPU $CLIENT_CPU
# (benches/lib.sh). Prints req/s (messages/s for WebSockets), the server's CPU
# per request for HTTP (every process of the setup, the pool included) and
# ratios to Granian.
#
# Decision it informs (issue 14): ≥ 1.0 of Granian on every row.
#
# Needs: wrk, curl, taskset; the virtualenv of scripts/python-env.sh
# (target/pyenv), with granian and uvicorn[standard] (installed here if missing).
#
# Usage: benches/asgi.sh   (DURATION=10 ROUNDS=1 CONNS=50 to change)
set -euo pipefail
ROUNDS=${ROUNDS:-1}
source "$(dirname "$0")/lib.sh"
need wrk; need curl; need taskset util-linux
VENV=${ZERGPOOL_TEST_VENV:-$ROOT/target/pyenv}
[ -x "$VENV/bin/zergling" ] || "$ROOT/scripts/python-env.sh" >/dev/null
"$VENV/bin/pip" install --quiet --disable-pip-version-check granian "uvicorn[standard]"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --workspace --bins
BIN=$ROOT/target/release
APPDIR=$ROOT/benches/data
TMP=$(mktemp -d); trap 'cleanup; rm -rf "$TMP"' EXIT

declare -A PORT PIDS
start() { # NAME → sets PORT[NAME], PIDS[NAME] (every process of the setup)
  local name=$1 port; port=$(free_port); PORT[$name]=$port
  case $name in
    zergpool|zp-direct)
      local direct=(); [ "$name" = zp-direct ] && direct=(--zerg-direct-accept-http)
      ZERGPOOL_LOG=warn setsid taskset -c "$SERVER_CPU" "$BIN/zergpool" --disable-logging --http 127.0.0.1:$port --listen 4096 \
        --zerg-server "$TMP/$name.sock" --chdir "$APPDIR" --module asgi_bench:app --virtualenv "$VENV" \
        --asgi-loop uvloop "${direct[@]}" 2>"$TMP/$name.log" &
      ;;
    granian)
      (cd "$APPDIR" && exec setsid taskset -c "$SERVER_CPU" "$VENV/bin/granian" --interface asgi --workers 1 \
        --host 127.0.0.1 --port $port --log-level warning asgi_bench:app) 2>"$TMP/$name.log" &
      ;;
    uvicorn)
      (cd "$APPDIR" && exec setsid taskset -c "$SERVER_CPU" "$VENV/bin/uvicorn" --http httptools --loop uvloop \
        --workers 1 --host 127.0.0.1 --port $port --log-level warning --no-access-log --backlog 4096 asgi_bench:app) \
        2>"$TMP/$name.log" &
      ;;
  esac
  local leader=$!; PIDS_TO_KILL+=($leader)
  wait_http "http://127.0.0.1:$port/"
  PIDS[$name]=$(pgrep -s "$leader" | tr '\n' ' ')
}

SETUPS=(zergpool zp-direct granian uvicorn)
for s in "${SETUPS[@]}"; do start "$s"; done

echo "ASGI servers: wrk -t1 -c$CONNS -d${DURATION}s, $ROUNDS round(s), servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
printf '%-10s %-10s %10s %12s\n' server mode req/s cpu_us/req
declare -A R
for r in $(seq 1 "$ROUNDS"); do
  for mode in keepalive close; do
    c=0; [ $mode = close ] && c=1
    for s in "${SETUPS[@]}"; do
      # shellcheck disable=SC2086
      read -r rps us _ < <(run_wrk "$s" "http://127.0.0.1:${PORT[$s]}/" $c ${PIDS[$s]})
      R[$s,$mode]+="$rps "
      printf '%-10s %-10s %10s %12s\n' "$s" $mode "$rps" "$us"
    done
  done
done
for r in $(seq 1 "$ROUNDS"); do
  for s in "${SETUPS[@]}"; do
    read -r mps errors < <(taskset -c "$CLIENT_CPU" "$BIN/ws-bench" "ws://127.0.0.1:${PORT[$s]}/ws" "$CONNS" "$DURATION" 1024)
    R[$s,ws]+="$mps "
    printf '%-10s %-10s %10s %12s\n' "$s" ws-1KiB "$mps" "errors=$errors"
  done
done
echo
echo "means, and ratios to granian (req/s; messages/s for ws)"
printf '%-10s %20s %20s %20s\n' server keepalive close ws-1KiB
for s in "${SETUPS[@]}"; do
  printf '%-10s' "$s"
  for mode in keepalive close ws; do
    m=$(tr ' ' '\n' <<<"${R[$s,$mode]}" | grep . | mean)
    g=$(tr ' ' '\n' <<<"${R[granian,$mode]}" | grep . | mean)
    printf ' %11s (%5s)' "$m" "$(ratio "$m" "$g")"
  done
  echo
done
