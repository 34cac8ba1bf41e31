# Shared helpers of the benchmark scripts (sourced, not run).
#
# Method (../shared/reference/running-the-anchors.md): server-side processes pinned
# to CPU 1, wrk pinned to CPU 0, a 2 s warm-up, then `wrk -t1 -c50 -d$DURATION`,
# setups interleaved over $ROUNDS rounds; every figure is printed next to the
# others measured in the same run, and compared as ratios.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-50}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
PIDS_TO_KILL=()

need() { command -v "$1" >/dev/null || { echo "missing $1: apt-get install -y ${2:-$1}" >&2; exit 1; }; }

# Servers that fork (uWSGI) are started with `setsid`, so their pid is also their
# process group: killing the group takes their children too.
# `|| true`: the scripts run with `set -e`, and a kill that finds nothing to kill
# (not a group leader, already gone) must not end the cleanup half-way.
cleanup() {
  for p in "${PIDS_TO_KILL[@]}"; do kill -9 -- "-$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "${TMPDIR:-/tmp}/zergpool-bench-ports.$$"
}
trap cleanup EXIT

# A free loopback port, never one this script was given before (the kernel may
# hand the same ephemeral port out twice in a row once it is released; the ports
# already given are kept in a file named after the script's pid, $$, which a
# $(free_port) subshell shares).
free_port() {
  python3 - "${TMPDIR:-/tmp}/zergpool-bench-ports.$$" <<'PY'
import socket, sys
path = sys.argv[1]
try:
    used = set(open(path).read().split())
except OSError:
    used = set()
for _ in range(100):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = str(s.getsockname()[1])
    s.close()
    if port not in used:
        break
with open(path, "a") as f:
    f.write(port + "\n")
print(port)
PY
}

wait_http() { # URL
  for _ in $(seq 1 200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.05; done
  echo "server at $1 did not come up" >&2; return 1
}

quiet_second() { # wait (up to 10 s) for both CPUs under 10 % busy
  for _ in $(seq 1 10); do
    local a b
    a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
    local idle=$(( (b[4]+b[5]) - (a[4]+a[5]) )) total=0
    for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
    [ "$total" -gt 0 ] && [ $(( 100 * (total - idle) / total )) -lt 10 ] && return 0
  done
  return 0 # best effort: a machine that never quiets down is measured as it is
}

cpu_ticks() { # PIDS... → utime+stime summed (clock ticks)
  local sum=0
  for p in "$@"; do
    [ -r /proc/$p/stat ] || continue
    local f; f=($(sed 's/^.*) //' /proc/$p/stat))
    sum=$(( sum + f[11] + f[12] ))
  done
  echo $sum
}

# cpu_ns PIDS... → nanoseconds on a CPU, all the threads of the processes
# summed (/proc/PID/task/*/schedstat: the scheduler's own account, exact to
# the nanosecond, where utime+stime come in 10 ms ticks, sampled). A thread
# that ends between two readings takes its time with it (and one that ends
# while being read is skipped): the servers measured here keep their threads
# while loaded. On a kernel without schedstat, ticks (×10^9/CLK_TCK).
cpu_ns() {
  if [ ! -r /proc/self/schedstat ]; then
    echo $(( $(cpu_ticks "$@") * 1000000000 / $(getconf CLK_TCK) ))
    return
  fi
  local sum=0 p t ns
  for p in "$@"; do
    for t in /proc/$p/task/*/schedstat; do
      read -r ns _ <"$t" 2>/dev/null && sum=$((sum + ns))
    done
  done
  echo $sum
}

# run_wrk NAME URL CLOSE(0/1) PIDS... → prints "rps cpu_us_per_req front_us_per_req"
# (front: the CPU per request of the processes listed in $FRONT_PIDS, such as nginx in
# front of the measured server; "-" when it is not set)
run_wrk() {
  local url=$2 close=$3; shift 3
  local hdr=()
  [ "$close" = 1 ] && hdr=(-H 'Connection: close')
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d2s "${hdr[@]}" "$url" >/dev/null 2>&1
  quiet_second
  local t0; t0=$(cpu_ns "$@")
  local f0=0; [ -n "${FRONT_PIDS:-}" ] && f0=$(cpu_ns $FRONT_PIDS)
  local out; out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${hdr[@]}" "$url" 2>&1)
  local t1; t1=$(cpu_ns "$@")
  local f1=0; [ -n "${FRONT_PIDS:-}" ] && f1=$(cpu_ns $FRONT_PIDS)
  local rps; rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  local reqs; reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  local errs; errs=$(awk '/Socket errors/ {print $0}' <<<"$out")
  local non2xx; non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  local us=0
  [ "${reqs:-0}" -gt 0 ] && us=$(awk -v t=$((t1 - t0)) -v n="$reqs" 'BEGIN { printf "%.2f", t / 1e3 / n }')
  local front=-
  [ -n "${FRONT_PIDS:-}" ] && [ "${reqs:-0}" -gt 0 ] && front=$(awk -v t=$((f1 - f0)) -v n="$reqs" 'BEGIN { printf "%.2f", t / 1e3 / n }')
  [ -n "$errs" ] && echo "    ($1: $errs)" >&2
  [ -n "$non2xx" ] && echo "    ($1: non-2xx $non2xx)" >&2
  echo "$rps $us $front"
}

# run_loadgen "PIDS" LOADGEN_ARGS... → "rate cpu_us_per_request client_cpu": examples/
# loadgen ($LOADGEN) on $CLIENT_CPU for $DURATION s after a 2 s warm-up, with the CPU
# time of PIDS per request and loadgen's own share of its core; errors are printed.
run_loadgen() {
  local pids=$1; shift
  taskset -c "$CLIENT_CPU" "$LOADGEN" "$@" --duration 2 >/dev/null
  quiet_second
  local t0 t1 out n rate errors client
  t0=$(cpu_ns $pids)
  out=$(taskset -c "$CLIENT_CPU" "$LOADGEN" "$@" --duration "$DURATION")
  t1=$(cpu_ns $pids)
  n=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$out")
  rate=$(sed -n 's/.*rate=\([0-9]*\).*/\1/p' <<<"$out")
  errors=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$out")
  client=$(sed -n 's/.*client_cpu=\([0-9.]*\).*/\1/p' <<<"$out")
  [ "${errors:-x}" = 0 ] || echo "    (loadgen $*: ${errors:-?} errors)" >&2
  awk -v n="${n:-0}" -v r="${rate:-0}" -v t=$((t1 - t0)) -v c="${client:-0}" \
    'BEGIN { if (n > 0) printf "%s %.2f %s\n", r, t / 1e3 / n, c; else print "0 0 0" }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
mean() { awk '{ s += $1; n++ } END { if (n) printf "%.0f", s / n; else print 0 }'; }
# paired_wrk URL_A PIDS_A URL_B PIDS_B CLOSE(0/1) → "us_a us_b rps_a rps_b": two
# setups loaded at the same time (one wrk each, both on $CLIENT_CPU; the servers
# share $SERVER_CPU), so that whatever else the machine does falls on both
# alike; each one's CPU per request (PIDS: quoted, space-separated). On a
# CPU-bound server, the throughput ratio is the inverse of the CPU ratio. The
# CPU comes from `cpu_ns`: with ticks, the same pool twice (an A/A run) read
# 0.98-1.01 round to round; with the scheduler's nanoseconds, 0.99-1.01, and a
# setup 7 % dearer read 0.925-0.935 in five rounds out of five.
paired_wrk() {
  local ua=$1 pa=$2 ub=$3 pb=$4 c=$5 hdr=()
  [ "$c" = 1 ] && hdr=(-H 'Connection: close')
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d1s "${hdr[@]}" "$ua" >/dev/null 2>&1 &
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d1s "${hdr[@]}" "$ub" >/dev/null 2>&1
  wait
  local a0 b0 a1 b1
  # shellcheck disable=SC2086
  a0=$(cpu_ns $pa); b0=$(cpu_ns $pb)
  local oa ob; oa=$(mktemp); ob=$(mktemp)
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "${hdr[@]}" "$ua" >"$oa" 2>&1 &
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "${hdr[@]}" "$ub" >"$ob" 2>&1
  wait
  # shellcheck disable=SC2086
  a1=$(cpu_ns $pa); b1=$(cpu_ns $pb)
  local na nb; na=$(awk '/requests in/ {print $1}' "$oa"); nb=$(awk '/requests in/ {print $1}' "$ob")
  rm -f "$oa" "$ob"
  awk -v ta=$((a1 - a0)) -v tb=$((b1 - b0)) -v na="${na:-0}" -v nb="${nb:-0}" -v d="$DURATION" \
    'BEGIN { if (na == 0 || nb == 0) { print "0 0 0 0"; exit } printf "%.3f %.3f %.0f %.0f\n", ta / 1e3 / na, tb / 1e3 / nb, na / d, nb / d }'
}

# median of the numbers on stdin, one a line (three decimals)
median() { sort -g | awk '{ v[n++] = $1 } END { if (!n) print "n/a"; else if (n % 2) printf "%.3f", v[int(n/2)]; else printf "%.3f", (v[n/2-1] + v[n/2]) / 2 }'; }

# start_nginx PREFIX HTTP_DIRECTIVES: a private nginx (its own prefix, pid, logs and
# temp folders under PREFIX; the Debian service stays untouched), one worker pinned
# to $SERVER_CPU, access log off, keep-alive from clients without limit; the
# caller's own `http {}` directives (sendfile, upstreams, servers) follow the
# common ones. Sets NPID and registers it for cleanup.
start_nginx() {
  local prefix=$1 directives=$2
  mkdir -p "$prefix/logs" "$prefix/tmp"
  cat >"$prefix/nginx.conf" <<CONF
worker_processes 1;
pid $prefix/nginx.pid;
error_log $prefix/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  client_body_temp_path $prefix/tmp/body;
  proxy_temp_path $prefix/tmp/proxy;
  fastcgi_temp_path $prefix/tmp/fastcgi;
  uwsgi_temp_path $prefix/tmp/uwsgi;
  scgi_temp_path $prefix/tmp/scgi;
$directives
}
CONF
  taskset -c "$SERVER_CPU" nginx -p "$prefix" -e "$prefix/logs/error.log" -c "$prefix/nginx.conf" \
    -g 'daemon off;' 2>"$prefix/logs/stderr.log" &
  NPID=$!; PIDS_TO_KILL+=($NPID)
}
