#!/usr/bin/env bash
# Benchmark: WSGI servers side by side, one application process each, in one run.
#
#   zergpool-1t   zergpool + the Python zergling (`zergling`, 1 thread)
#   zergpool-4t   zergpool + the Python zergling (4 threads)
#   zp-direct-1t  zergpool-1t with `zerg-direct-accept-http`: the zergling accepts
#                 on the http listener itself (no hand-off per connection)
#   granian       granian --interface wsgi --workers 1 --blocking-threads 1
#   uwsgi         uWSGI --http11-socket, 1 process (Debian's python3 plugin)
#   gunicorn      gunicorn -k gthread -w 1 --threads 4
#
# Applications (benches/data/wsgi_bench.py): `/` answers 13 bytes (Hello, world!),
# `/64k` 64 KiB. Each is measured with keep-alive and with `Connection: close`
# (`wrk -t1 -c$CONNS`). Every server process is pinned to CPU $SERVER_CPU, wrk to
# CPU $CLIENT_CPU (benches/lib.sh). Prints req/s, the server's CPU per request
# (every process of the setup, the pool included), ratios to Granian, and the
# resident memory of each application process after the run.
#
# Decision it informs (issue 13): keep-alive ≥ 1.0 of Granian, per-connection
# ≥ 0.9 of Granian, ≥ 4× uWSGI.
#
# Needs: wrk, curl, taskset; the virtualenv of scripts/python-env.sh (target/pyenv)
# with granian and gunicorn (installed here if missing); uwsgi with its python3
# plugin (apt-get install uwsgi-core uwsgi-plugin-python3).
#
# Usage: benches/python.sh   (DURATION=10 ROUNDS=1 CONNS=50 to change; ROUNDS
# defaults to 1 here: five servers × four cases already take about 4 minutes)
set -euo pipefail
ROUNDS=${ROUNDS:-1}
source "$(dirname "$0")/lib.sh"
need wrk; need curl; need taskset util-linux; need uwsgi "uwsgi-core uwsgi-plugin-python3"
VENV=${ZERGPOOL_TEST_VENV:-$ROOT/target/pyenv}
[ -x "$VENV/bin/zergling" ] || "$ROOT/scripts/python-env.sh" >/dev/null
"$VENV/bin/pip" install --quiet --disable-pip-version-check granian gunicorn
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release
APPDIR=$ROOT/benches/data
TMP=$(mktemp -d); trap 'cleanup; rm -rf "$TMP"' EXIT

declare -A PORT PIDS APP_PIDS
start() { # NAME → sets PORT[NAME], PIDS[NAME] (every process), APP_PIDS[NAME]
  local name=$1 port; port=$(free_port); PORT[$name]=$port
  case $name in
    zergpool-1t|zergpool-4t|zp-direct-1t)
      local threads=1 direct=(); [ "$name" = zergpool-4t ] && threads=4
      [ "$name" = zp-direct-1t ] && direct=(--zerg-direct-accept-http)
      ZERGPOOL_LOG=warn setsid taskset -c "$SERVER_CPU" "$BIN/zergpool" --disable-logging --http 127.0.0.1:$port --listen 4096 \
        --zerg-server "$TMP/$name.sock" --chdir "$APPDIR" --module wsgi_bench --virtualenv "$VENV" \
        --threads $threads "${direct[@]}" 2>"$TMP/$name.log" &
      ;;
    granian)
      (cd "$APPDIR" && exec setsid taskset -c "$SERVER_CPU" "$VENV/bin/granian" --interface wsgi --workers 1 \
        --blocking-threads 1 --host 127.0.0.1 --port $port --log-level warning --no-ws wsgi_bench:application) \
        2>"$TMP/$name.log" &
      ;;
    uwsgi)
      setsid taskset -c "$SERVER_CPU" uwsgi --plugin python3 --http11-socket 127.0.0.1:$port --processes 1 \
        --chdir "$APPDIR" --wsgi-file wsgi_bench.py --disable-logging --listen 1024 --master \
        >"$TMP/$name.log" 2>&1 &
      ;;
    gunicorn)
      (cd "$APPDIR" && exec setsid taskset -c "$SERVER_CPU" "$VENV/bin/gunicorn" -k gthread -w 1 --threads 4 \
        -b 127.0.0.1:$port --backlog 1024 --log-level warning wsgi_bench:application) 2>"$TMP/$name.log" &
      ;;
  esac
  local leader=$!; PIDS_TO_KILL+=($leader)
  wait_http "http://127.0.0.1:$port/"
  # Every process of the session the server started (its group), for CPU times.
  PIDS[$name]=$(pgrep -s "$leader" | tr '\n' ' ')
  # The application processes: those that answer /pid.
  APP_PIDS[$name]=$(for _ in 1 2 3 4 5 6; do curl -s -H 'Connection: close' "http://127.0.0.1:$port/pid"; echo; done | sort -u | tr '\n' ' ')
}

SETUPS=(zergpool-1t zergpool-4t zp-direct-1t granian uwsgi gunicorn)
for s in "${SETUPS[@]}"; do start "$s"; done

echo "WSGI servers: wrk -t1 -c$CONNS -d${DURATION}s, $ROUNDS round(s), servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
printf '%-12s %-6s %-10s %10s %12s\n' server body mode req/s cpu_us/req
declare -A R U
for r in $(seq 1 "$ROUNDS"); do
  for body in 13b 64k; do
    path=/; [ $body = 64k ] && path=/64k
    for mode in keepalive close; do
      c=0; [ $mode = close ] && c=1
      for s in "${SETUPS[@]}"; do
        # shellcheck disable=SC2086
        read -r rps us _ < <(run_wrk "$s" "http://127.0.0.1:${PORT[$s]}$path" $c ${PIDS[$s]})
        R[$s,$body,$mode]+="$rps "; U[$s,$body,$mode]+="$us "
        printf '%-12s %-6s %-10s %10s %12s\n' "$s" $body $mode "$rps" "$us"
      done
    done
  done
done

echo
echo "means, and ratios to granian (req/s)"
printf '%-12s' server
for body in 13b 64k; do for mode in keepalive close; do printf ' %18s' "$body/$mode"; done; done
echo
for s in "${SETUPS[@]}"; do
  printf '%-12s' "$s"
  for body in 13b 64k; do for mode in keepalive close; do
    m=$(tr ' ' '\n' <<<"${R[$s,$body,$mode]}" | grep . | mean)
    g=$(tr ' ' '\n' <<<"${R[granian,$body,$mode]}" | grep . | mean)
    printf ' %9s (%5s)' "$m" "$(ratio "$m" "$g")"
  done; done
  echo
done
echo
echo "zp-direct-1t against uwsgi (req/s ratio):"
for body in 13b 64k; do for mode in keepalive close; do
  z=$(tr ' ' '\n' <<<"${R[zp-direct-1t,$body,$mode]}" | grep . | mean)
  u=$(tr ' ' '\n' <<<"${R[uwsgi,$body,$mode]}" | grep . | mean)
  printf '  %-16s %s\n' "$body/$mode" "$(ratio "$z" "$u")"
done; done

# Side by side with Granian: each zergpool setup and Granian loaded at the same
# time (benches/lib.sh paired_wrk), PAIRED_ROUNDS rounds; the verdict is the
# median of the rounds' CPU-per-request ratios, granian/zergpool (above 1: less
# CPU per request than Granian, more throughput on a CPU-bound server). Steadier
# than the table above on a shared machine. PAIRED_ROUNDS=0 skips it.
echo
echo "side by side with granian (both loaded at once), ${PAIRED_ROUNDS:-3} rounds of ${DURATION}s: median CPU per request, granian/zergpool"
declare -A PR
for r in $(seq 1 "${PAIRED_ROUNDS:-3}"); do
  for s in zp-direct-1t zergpool-1t; do
    for body in 13b 64k; do
      path=/; [ $body = 64k ] && path=/64k
      for mode in keepalive close; do
        c=0; [ $mode = close ] && c=1
        read -r uz ug rz rg < <(paired_wrk "http://127.0.0.1:${PORT[$s]}$path" "${PIDS[$s]}" \
          "http://127.0.0.1:${PORT[granian]}$path" "${PIDS[granian]}" $c)
        q=$(awk -v a="$ug" -v b="$uz" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print 0 }')
        PR[$s,$body,$mode]+="$q "
        printf '  round %s %-12s %-4s %-10s us/req %6s vs granian %6s  req/s %8s vs %8s  ratio %s\n' \
          "$r" "$s" $body $mode "$uz" "$ug" "$rz" "$rg" "$q"
      done
    done
  done
done
for s in zp-direct-1t zergpool-1t; do
  printf '%-12s' "$s"
  for body in 13b 64k; do for mode in keepalive close; do
    printf ' %s/%s %s' $body $mode "$(tr ' ' '\n' <<<"${PR[$s,$body,$mode]}" | grep . | median)"
  done; done
  echo
done
echo
echo "resident memory of each application process after the run (VmRSS, kB)"
for s in "${SETUPS[@]}"; do
  for p in ${APP_PIDS[$s]}; do
    printf '  %-12s pid %-8s %s\n' "$s" "$p" "$(awk '/VmRSS/ {print $2}' /proc/$p/status 2>/dev/null || echo '?')"
  done
done
