#!/usr/bin/env bash
# Benchmark: what appending request log lines to a file costs the writer, by
# the size of each write. A zergling gathers its lines and writes them to the
# pool's log file in batches (crates/zergling/src/stats.rs, SEND_AT); this
# tells how large a batch must be for the write to cost little per line.
#
# Each write comes after a few milliseconds of other work (a busy loop), as a
# server's writes come between requests: the kernel's write path is then out
# of the caches and a write pays a fixed cost on top of its bytes, which
# back-to-back writes (GAP_MS=0) never show. 110-byte lines (uWSGI's default
# line is about that), CPU time of the writes only (CLOCK_THREAD_CPUTIME_ID).
#
# Decision it informs (issue 15): the batch size, against the 5 % that request
# logging may cost.
#
# Usage: benches/logwrite.sh   (DIR=/tmp GAP_MS=4 MB=20 SIZES="16 32 64 128 256 512 1024")
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need python3; need taskset util-linux
FILE=$(mktemp "${DIR:-/tmp}/zergpool-logwrite.XXXXXX")
trap 'cleanup; rm -f "$FILE"' EXIT
echo "appending 110-byte lines to $FILE, ${GAP_MS:-4} ms of busy work between writes, ${MB:-20} MB a size"
printf '%10s %10s %14s\n' "write KiB" "us/KiB" "ns per line"
for kib in ${SIZES:-16 32 64 128 256 512 1024}; do
  taskset -c "$SERVER_CPU" python3 - "$FILE" "$kib" "${GAP_MS:-4}" "${MB:-20}" <<'PY'
import os, sys, time
path, kib, gap, mb = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) / 1000, int(sys.argv[4])
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_TRUNC)
line = b"x" * 109 + b"\n"
buf = line * (kib * 1024 // len(line))
spent = written = 0
while written < mb << 20:
    t0 = time.thread_time_ns()
    os.write(fd, buf)
    spent += time.thread_time_ns() - t0
    written += len(buf)
    end = time.perf_counter() + gap
    while time.perf_counter() < end:
        pass
os.close(fd)
print(f"{kib:10d} {spent / 1e3 / (written / 1024):10.3f} {spent / (written / len(line)):14.0f}")
PY
  : >"$FILE"
done
