#!/usr/bin/env bash
# Benchmark: restarts under load. wrk runs for $DURATION s (default 30) at about
# $RATE requests/s (default: half of what one pool core serves; see
# benches/pool-vs-direct.sh), keep-alive and `Connection: close`, while the
# application processes are restarted every 2 s:
#
#   zergpool   pool + 2 spawned zergling-demo, chain reload (SIGHUP) every 2 s
#   uwsgi-zerg uWSGI zergpool plugin + 2 python zerglings, one zergling replaced
#              every 2 s (start a new one, then SIGINT the oldest: the "zerg dance")
#   uwsgi-http uWSGI --http router with --processes 2, SIGHUP every 2 s
#
# Prints requests, non-2xx, socket errors and p50/p99 latency for each.
# Decision it informs: whether the pool's drain + hand-back makes restarts
# invisible (goal: zergpool 0 errors and 0 non-2xx), next to uWSGI's figures.
set -euo pipefail
DURATION=${DURATION:-30} # before lib.sh, whose default (10) would win otherwise
source "$(dirname "$0")/lib.sh"
need wrk; need curl; need uwsgi "uwsgi uwsgi-plugin-python3"
RATE=${RATE:-8000}
CONNS=${CONNS:-50}
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release
TMP=$(mktemp -d)
# Zerglings started by the dance run in a subshell: their pids go to a file too.
trap 'cleanup; [ -f "$TMP/all-pids" ] && for p in $(cat "$TMP/all-pids"); do kill -9 -- "-$p" "$p" 2>/dev/null || true; done; rm -rf "$TMP"' EXIT

cat >"$TMP/hello.py" <<'PY'
def application(env, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '13')])
    return [b'Hello, world!']
PY
# wrk paces each connection so that all of them together send about $RATE req/s.
cat >"$TMP/pace.lua" <<LUA
function delay() return math.floor($CONNS * 1000 / $RATE) end
LUA

measure() { # NAME URL CLOSE
  local hdr=(); [ "$3" = 1 ] && hdr=(-H 'Connection: close')
  local out; out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$TMP/pace.lua" "${hdr[@]}" "$2" 2>&1)
  local reqs non2xx errs p50 p99
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); non2xx=${non2xx:-0}
  errs=$(awk '/Socket errors/ {gsub(",",""); print "connect=" $4 " read=" $6 " write=" $8 " timeout=" $10}' <<<"$out"); errs=${errs:-none}
  p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  printf '%-11s %-9s %9s %8s %-44s %8s %8s\n' "$1" "$([ "$3" = 1 ] && echo close || echo keepalive)" "$reqs" "$non2xx" "$errs" "$p50" "$p99"
}

restart_loop() { # COMMAND... run every 2 s until killed
  while sleep 2; do "$@"; done
}

printf '%-11s %-9s %9s %8s %-44s %8s %8s\n' setup mode requests non-2xx socket-errors p50 p99

# --- zergpool
PORT=$(free_port)
ZERGPOOL_LOG=info taskset -c "$SERVER_CPU" "$BIN/zergpool" --disable-logging --http 127.0.0.1:$PORT --listen 4096 \
  --zerg-server "$TMP/zp.sock" --zergling "$BIN/zergling-demo" --zergling "$BIN/zergling-demo" 2>"$TMP/zp.log" &
ZP=$!; PIDS_TO_KILL+=($ZP)
wait_http "http://127.0.0.1:$PORT/"
for close in 0 1; do
  restart_loop kill -HUP $ZP & RL=$!
  measure zergpool "http://127.0.0.1:$PORT/" $close
  kill $RL 2>/dev/null || true; wait $RL 2>/dev/null || true
done
echo "    (zergpool chain reloads completed: $(grep -c 'chain reload complete' "$TMP/zp.log" || true))"
kill -TERM $ZP; wait $ZP 2>/dev/null || true

# --- uWSGI zerg mode
PORT=$(free_port)
setsid taskset -c "$SERVER_CPU" uwsgi --master --plugin zergpool --zergpool "$TMP/uz.sock:127.0.0.1:$PORT" --die-on-term \
  >"$TMP/uz.log" 2>&1 &
UZ=$!; PIDS_TO_KILL+=($UZ)
for _ in $(seq 1 100); do [ -S "$TMP/uz.sock" ] && break; sleep 0.05; done
zergling() {
  setsid taskset -c "$SERVER_CPU" uwsgi --zerg "$TMP/uz.sock" --protocol http --plugin python3 --wsgi-file "$TMP/hello.py" \
    --processes 1 --add-header 'Connection: close' --disable-logging --die-on-term >>"$TMP/uzl.log" 2>&1 &
  echo $! >>"$TMP/all-pids"
  echo $!
}
Z1=$(zergling); Z2=$(zergling); PIDS_TO_KILL+=($Z1 $Z2)
wait_http "http://127.0.0.1:$PORT/"
echo "$Z1 $Z2" >"$TMP/zerglings"
dance() { # start a new zergling, give it time to attach, stop the oldest
  local new; new=$(zergling); PIDS_TO_KILL+=($new)
  sleep 0.5
  read -r oldest rest <"$TMP/zerglings"
  kill -INT -- "-$oldest" 2>/dev/null || true
  echo "$rest $new" >"$TMP/zerglings"
}
for close in 0 1; do
  restart_loop dance & RL=$!
  measure uwsgi-zerg "http://127.0.0.1:$PORT/" $close
  kill $RL 2>/dev/null || true; wait $RL 2>/dev/null || true
done
for p in $(cat "$TMP/zerglings"); do kill -INT -- "-$p" 2>/dev/null || true; done
kill -INT -- "-$UZ" 2>/dev/null || true; wait $UZ 2>/dev/null || true

# --- uWSGI --http router
PORT=$(free_port)
setsid taskset -c "$SERVER_CPU" uwsgi --plugin http,python3 --master --http 127.0.0.1:$PORT --wsgi-file "$TMP/hello.py" \
  --processes 2 --add-header 'Connection: close' --disable-logging --die-on-term >"$TMP/uh.log" 2>&1 &
UH=$!; PIDS_TO_KILL+=($UH)
wait_http "http://127.0.0.1:$PORT/"
for close in 0 1; do
  restart_loop kill -HUP $UH & RL=$!
  measure uwsgi-http "http://127.0.0.1:$PORT/" $close
  kill $RL 2>/dev/null || true; wait $RL 2>/dev/null || true
done
kill -INT -- "-$UH" 2>/dev/null || true; wait $UH 2>/dev/null || true
