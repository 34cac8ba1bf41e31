#!/usr/bin/env bash
# idle-memory.sh: what one idle keep-alive connection costs a zergling, against
# nginx, measured in the same run (the hardening issue's requirement 7: within 4×
# nginx's cost).
#
# For each server: open N connections (default 10000) on loopback, send one
# `GET /` on each and read the answer, keep them all open and idle, wait 2 s (a
# zergling takes an idle connection apart after 250 ms), then read the server's
# resident memory (VmRSS; nginx: its worker). Cost per connection = (RSS with the
# connections − RSS before) / N. The zergling is zergling-demo behind the pool
# (capacity above N, so none is handed back); the pool's own growth is printed too.
# A second zergling row runs with GLIBC_TUNABLES=glibc.malloc.mmap_threshold=2048.
#
# Usage: N=10000 benches/idle-memory.sh   (needs nginx and python3)
set -eo pipefail
source "$(dirname "$0")/lib.sh"
need nginx
N=${N:-10000}
ulimit -n "$(ulimit -Hn)"  # each process needs N descriptors (the hard limit here: 20000)
POOL_BIN="$ROOT/target/release/zergpool"
DEMO_BIN="$ROOT/target/release/zergling-demo"
[[ -x $POOL_BIN && -x $DEMO_BIN ]] || { echo "build first: cargo build --release" >&2; exit 1; }
tmp=$(mktemp -d)
PIDS_TO_KILL=()
trap 'cleanup; rm -rf "$tmp"' EXIT

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; } # kB

# Opens N idle connections to 127.0.0.1:PORT after one request each, then waits
# for a line on stdin (so the caller measures while they are open).
cat >"$tmp/hold.py" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
conns = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got or not got.endswith(b"Hello, world!"):
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(f"connection {i} closed")
        got += chunk
    conns.append(s)
print("open", flush=True)
sys.stdin.readline()
PY
hold() { # PORT
  python3 "$tmp/hold.py" "$1" "$N"
}

measure() { # NAME PORT PID [EXTRA_PID]
  local name=$1 port=$2 pid=$3 extra=${4:-}
  local before extra_before after extra_after
  before=$(rss "$pid"); [[ -n $extra ]] && extra_before=$(rss "$extra")
  coproc HOLD { hold "$port"; }
  read -r line <&"${HOLD[0]}"
  sleep 2
  after=$(rss "$pid"); [[ -n $extra ]] && extra_after=$(rss "$extra")
  local hold_pid=$HOLD_PID
  echo done >&"${HOLD[1]}"; wait "$hold_pid" 2>/dev/null || true
  local per=$(( (after - before) * 1024 / N ))
  printf '%-10s RSS %6d kB → %6d kB with %d idle connections: %5d bytes per connection' "$name" "$before" "$after" "$N" "$per"
  [[ -n $extra ]] && printf ' (pool: %d kB → %d kB)' "$extra_before" "$extra_after"
  printf '\n'
  echo "$per" >"$tmp/$name.per"
}

# zergpool + one zergling.
port=$(free_port)
"$POOL_BIN" --http "127.0.0.1:$port" --zerg-server "$tmp/z.sock" --zerg-queue 100000 >"$tmp/pool.log" 2>&1 &
pool=$!; PIDS_TO_KILL+=("$pool")
"$DEMO_BIN" --attach "$tmp/z.sock" --capacity $(( N * 2 )) >"$tmp/demo.log" 2>&1 &
demo=$!; PIDS_TO_KILL+=("$demo")
wait_http "http://127.0.0.1:$port/"
measure zergling "$port" "$demo" "$pool"
kill "$demo"; wait "$demo" 2>/dev/null || true

# The same zergling with glibc's malloc told to serve allocations of 2 KiB and more
# from mmap: hyper's per-connection buffers then never sit between the small
# objects an idle connection keeps, so their pages go back to the system when the
# connection goes idle (glibc's heap otherwise keeps them; see docs/ARCHITECTURE.md).
GLIBC_TUNABLES=glibc.malloc.mmap_threshold=2048 \
  "$DEMO_BIN" --attach "$tmp/z.sock" --capacity $(( N * 2 )) >"$tmp/demo2.log" 2>&1 &
demo=$!; PIDS_TO_KILL+=("$demo")
wait_http "http://127.0.0.1:$port/"
sleep 1
measure zergling-mmap "$port" "$demo" "$pool"

# nginx, one worker.
nport=$(free_port)
mkdir -p "$tmp/nginx/logs"
cat >"$tmp/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $tmp/nginx/logs/error.log;
pid $tmp/nginx/nginx.pid;
events { worker_connections $(( N + 1024 )); }
http {
  access_log off;
  server {
    listen 127.0.0.1:$nport;
    location / { return 200 "Hello, world!"; }
  }
}
CONF
nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" &
PIDS_TO_KILL+=("$!")
wait_http "http://127.0.0.1:$nport/"
worker=$(pgrep -P "$(cat "$tmp/nginx/nginx.pid")" | head -1)
PIDS_TO_KILL+=("$worker")
measure nginx "$nport" "$worker"

z=$(cat "$tmp/zergling.per"); zm=$(cat "$tmp/zergling-mmap.per"); n=$(cat "$tmp/nginx.per")
echo "zergling / nginx per idle connection: $(ratio "$z" "$n"); with mmap_threshold=2048: $(ratio "$zm" "$n") (goal: at most 4)"
