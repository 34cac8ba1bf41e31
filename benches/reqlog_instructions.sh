#!/usr/bin/env bash
# Benchmark: the instructions a request's log line costs the zergling, counted
# by `valgrind --tool=callgrind` (user space only; the kernel's work and the
# caches are not in it). Unlike the timings of `benches/reqlog.sh`, the counts
# repeat from run to run on these shared machines, so a change to the line's
# code can be judged by them before the timings say whether it shows.
#
# For each setup (logging off, uWSGI's line, JSON): a pool whose one
# zergling-demo runs under callgrind, a warm-up, the counters zeroed, then
# `wrk -t1 -c10 -d$DURATION`; the instructions counted divided by the requests
# wrk saw. The counts include the flusher's copies and its writes' user-space
# part; glibc's `rep movsb` copies count one instruction a byte.
#
# Decision it informs (issue 15): where a logged request's instructions go
# (`FUNCS=1` prints the functions that differ most from the request not logged).
#
# Usage: benches/reqlog_instructions.sh   (DURATION=10 FUNCS=1)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10}
need wrk; need curl; need valgrind; need callgrind_annotate valgrind
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release
TMP=$(mktemp -d); trap 'cleanup; rm -rf "$TMP"' EXIT
cat >"$TMP/zergling" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$TMP/callgrind.%p $BIN/zergling-demo "\$@"
EOF
chmod +x "$TMP/zergling"

declare -A PER
count() { # NAME OPTIONS...
  local name=$1; shift
  local port; port=$(free_port)
  "$BIN/zergpool" --http 127.0.0.1:$port --listen 4096 "$@" --logto "$TMP/$name.log" \
    --zerg-server "$TMP/$name.sock" --zergling "$TMP/zergling" 2>"$TMP/$name.stderr" &
  local pool=$!; PIDS_TO_KILL+=($pool)
  for _ in $(seq 1 200); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  local zpid; zpid=$(curl -s "http://127.0.0.1:$port/pid")
  wrk -t1 -c10 -d2s "http://127.0.0.1:$port/" >/dev/null
  callgrind_control -z "$zpid" >/dev/null 2>&1
  local out; out=$(wrk -t1 -c10 -d"${DURATION}s" "http://127.0.0.1:$port/")
  callgrind_control -d "$zpid" >/dev/null 2>&1
  local n; n=$(awk '/requests in/ {print $1}' <<<"$out")
  # The first dump asked for is part 1.
  mv "$TMP/callgrind.$zpid.1" "$TMP/$name.out"
  local total; total=$(callgrind_annotate "$TMP/$name.out" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  PER[$name]=$((total / n))
  printf '%-6s %8d requests  %7d instructions a request\n' "$name" "$n" "${PER[$name]}"
  echo "$n" >"$TMP/$name.n"
  kill "$pool"; wait "$pool" 2>/dev/null || true
}
echo "instructions a request (callgrind, zergling-demo, wrk -t1 -c10 -d${DURATION}s):"
count off --disable-logging
count uwsgi
count json --log-json
for s in uwsgi json; do
  printf '%-6s logging costs %5d instructions a request (%.1f %% of one not logged)\n' \
    $s $((PER[$s] - PER[off])) "$(awk -v a="${PER[$s]}" -v b="${PER[off]}" 'BEGIN { print (a - b) * 100 / b }')"
done
[ "${FUNCS:-0}" = 1 ] || exit 0
for s in uwsgi json; do
  echo; echo "$s: functions (self instructions a request, on top of the request not logged)"
  python3 - "$TMP" off $s $((PER[$s] - PER[off])) <<'PY'
import collections, re, subprocess, sys
tmp, base, name, total = sys.argv[1:]
total = float(total)
def load(n):
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=no", "--auto=no",
                          f"{tmp}/{n}.out"], capture_output=True, text=True).stdout
    reqs = int(open(f"{tmp}/{n}.n").read())
    d, on = collections.Counter(), False
    for line in out.splitlines():
        if "file:function" in line:
            on = True
            continue
        m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(.*)", line)
        if on and m:
            f = re.sub(r"\[/.*?\]", "", m.group(2)).strip()
            f = f.split(":", 1)[1] if ":" in f else f
            d[f[:100]] += int(m.group(1).replace(",", "")) / reqs
    return d
a, b = load(base), load(name)
diff = {k: b[k] - a[k] for k in set(a) | set(b)}
# The threads' roots (and callgrind's cycles) carry the whole difference: left out.
diff = {k: v for k, v in diff.items() if abs(v) < 0.9 * abs(total)}
for k, v in sorted(diff.items(), key=lambda t: -abs(t[1]))[:15]:
    print(f"{v:+8.1f}  {k}")
PY
done
