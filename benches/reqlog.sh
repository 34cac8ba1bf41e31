#!/usr/bin/env bash
# Benchmark: what request logging costs. Three pools with one zergling-demo
# each, side by side: logging off (`disable-logging`), uWSGI's line to a file
# (`logto`), JSON lines to a file (`log-json`); `wrk -t1 -c$CONNS` keep-alive
# and `Connection: close`, in one run.
#
# Decision it informs (issue 15): logging on must cost no more than 5 % of
# keep-alive throughput.
#
# The log files go to $LOGDIR (default: a new directory under /tmp, on disk
# here); LOGDIR=/dev/shm measures what logging costs the processes without
# the disk (this machine's virtual disk stalls everything when the page cache
# flushes a few hundred megabytes of lines).
#
# Each run starts with empty log files (truncated, as logrotate's
# `copytruncate` does; the pools keep writing at the new end): a run writes
# ~80 MB a file, and on these virtual machines the first write into memory
# the guest never used costs ten times a write into memory it used before
# (the host backs guest memory lazily: 32 KiB appends cost ~0.2 us/KiB of
# CPU until the page cache outgrows what the machine ever touched, then
# ~2.4 us/KiB, on ext4 and tmpfs alike, and again ~0.2 once the file is
# truncated). Without the truncation the later rounds measured that, not
# logging, and the ratios sank round after round.
#
# The machines this runs on are shared and noisy (the same setup swings by
# 20 % from one run to the next), so each round runs the three pools one after
# the other and the verdict is the median of the rounds' ratios, not a ratio
# of means; the order of the three turns from round to round. Then the same
# pools side by side (see `paired`), the steadier figure; SEQUENTIAL=0 runs
# only that. MODES=keepalive skips the `Connection: close` runs.
#
# Usage: benches/reqlog.sh   (DURATION=10 ROUNDS=3 CONNS=50 LOGDIR=DIR MODES="keepalive close")
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need wrk; need curl; need taskset util-linux
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release
TMP=$(mktemp -d); trap 'cleanup; rm -rf "$TMP" "$LOGS"' EXIT
LOGS=$(mktemp -d "${LOGDIR:-/tmp}/zergpool-reqlog.XXXXXX")

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
start uwsgi --logto "$LOGS/uwsgi.log"
start json --logto "$LOGS/json.log" --log-json

echo "request logging: wrk -t1 -c$CONNS -d${DURATION}s, $ROUNDS rounds, server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
printf '%-8s %-10s %-6s %12s %10s\n' round mode log rps us/req
declare -A R U
for r in $(seq 1 "$ROUNDS"); do
  [ "${SEQUENTIAL:-1}" = 0 ] && break
  for mode in ${MODES:-keepalive close}; do
    c=0; [ $mode = close ] && c=1
    # The order turns every round: no setup always runs first or last.
    order="off uwsgi json"
    case $((r % 3)) in 2) order="uwsgi json off" ;; 0) order="json off uwsgi" ;; esac
    for s in $order; do
      [ $s = off ] || : >"$LOGS/$s.log"
      # shellcheck disable=SC2086
      read -r rps us _ < <(run_wrk "$s" "http://127.0.0.1:${PORT[$s]}/" $c ${PIDS[$s]})
      R[$mode,$s]+="$rps "
      U[$mode,$s]+="$us "
      printf '%-8s %-10s %-6s %12s %10s\n' "$r" $mode $s "$rps" "$us"
    done
  done
done
echo
for mode in ${MODES:-keepalive close}; do
  [ "${SEQUENTIAL:-1}" = 0 ] && break
  base=$(tr ' ' '\n' <<<"${R[$mode,off]}" | grep . | mean)
  read -ra offs <<<"${R[$mode,off]}"
  read -ra offu <<<"${U[$mode,off]}"
  for s in uwsgi json; do
    m=$(tr ' ' '\n' <<<"${R[$mode,$s]}" | grep . | mean)
    read -ra ons <<<"${R[$mode,$s]}"
    read -ra onu <<<"${U[$mode,$s]}"
    med=$(for i in "${!ons[@]}"; do ratio "${ons[$i]}" "${offs[$i]}"; echo; done | median)
    medu=$(for i in "${!onu[@]}"; do awk -v a="${onu[$i]}" -v b="${offu[$i]}" 'BEGIN { printf "%.2f\n", a - b }'; done | median)
    medc=$(for i in "${!onu[@]}"; do awk -v a="${offu[$i]}" -v b="${onu[$i]}" 'BEGIN { if (b > 0) printf "%.3f\n", a / b }'; done | median)
    printf '%-10s %-6s mean %8s rps (off %8s)  median of round ratios %s  median extra CPU %s us/req  CPU per request off/on %s\n' \
      $mode $s "$m" "$base" "$med" "$medu" "$medc"
  done
done
# Side by side: the pool without logging and one with it, loaded at the same
# time (two wrk on the client CPU, both pools on the server CPU), so that
# whatever else the machine does falls on both alike. The CPU each pool spends
# per request is compared; on a CPU-bound server, throughput is its inverse.
# The two loads start one after the other, and the first measured ~0.5 % more
# CPU per request in an A/A run (the same pool twice): the order turns every
# round (ROUND), so that neither side always has it.
paired() { # ON CLOSE ROUND → "us_off us_on rps_off rps_on"
  local uo un ro rn
  if (($3 % 2)); then
    paired_wrk "http://127.0.0.1:${PORT[off]}/" "${PIDS[off]}" "http://127.0.0.1:${PORT[$1]}/" "${PIDS[$1]}" "$2"
  else
    read -r un uo rn ro < <(paired_wrk "http://127.0.0.1:${PORT[$1]}/" "${PIDS[$1]}" "http://127.0.0.1:${PORT[off]}/" "${PIDS[off]}" "$2")
    echo "$uo $un $ro $rn"
  fi
}
echo
echo "side by side (both pools loaded at once, $ROUNDS rounds of ${DURATION}s):"
printf '%-8s %-10s %-6s %10s %10s %12s %12s %8s\n' round mode log us_off us_on rps_off rps_on cpu_ratio
declare -A P
for r in $(seq 1 "$ROUNDS"); do
  for mode in ${MODES:-keepalive close}; do
    c=0; [ $mode = close ] && c=1
    for s in uwsgi json; do
      : >"$LOGS/$s.log"
      read -r uo un ro rn < <(paired $s $c "$r")
      q=$(awk -v a="$uo" -v b="$un" 'BEGIN { printf "%.3f", a / b }')
      P[$mode,$s]+="$q "
      printf '%-8s %-10s %-6s %10s %10s %12s %12s %8s\n' "$r" $mode $s "$uo" "$un" "$ro" "$rn" "$q"
    done
  done
done
for mode in ${MODES:-keepalive close}; do
  for s in uwsgi json; do
    printf '%-10s %-6s CPU per request off/on, median of %s rounds: %s (the throughput a CPU-bound server keeps)\n' \
      $mode $s "$ROUNDS" "$(tr ' ' '\n' <<<"${P[$mode,$s]}" | grep . | median)"
  done
done
echo "lines in the last run: uwsgi $(wc -l <"$LOGS/uwsgi.log") ($(du -h "$LOGS/uwsgi.log" | cut -f1)), json $(wc -l <"$LOGS/json.log") ($(du -h "$LOGS/json.log" | cut -f1))"
