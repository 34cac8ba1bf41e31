#!/usr/bin/env bash
# Soak test: mixed traffic through every kind of listener while zerglings are
# reloaded, stopped and killed at random. Bounded: $DURATION s of traffic (default
# 600), then a settle time, a graceful stop, and a verdict. Loopback only.
#
# What runs (everything on free 127.0.0.1 ports, sockets and configs in a temporary
# folder):
#   pool     target/release/zergpool: --http, --https (certs/, --http2), --socket
#            (uwsgi), --static-map /static=static/ (--static-index index.html),
#            $ZERGLINGS (default 3) spawned target/release/zergling-demo;
#            DIRECT_ACCEPT=1 adds --zerg-direct-accept
#   nginx    a private nginx (benches/lib.sh start_nginx): uwsgi_pass to the pool's
#            uwsgi socket
#   clients  python3 (stdlib) loops, each paced at $RATE requests/s (default 40) and
#            bounded in count and time, one result counted per request:
#              http-ka ×2   keep-alive to the pool: GET /, /sleep, POST /echo,
#                           /whoami, a static file (the connection moves between
#                           the pool and the zerglings)
#              http-close   the same mix, a new connection and `Connection: close` each
#              https-ka     the mix over TLS (SNI localhost), keep-alive
#              https-close  the mix over TLS, a new connection each
#              h2           curl --http2, five requests per connection (HTTP/2 is
#                           dispatched to a zergling whole)
#              nginx ×2     the mix through nginx (uwsgi_pass), keep-alive to nginx
#              static       keep-alive, static files only (whole, index, Range): such a
#                           connection never leaves the pool
#   chaos    every $CHAOS_MIN..$CHAOS_MAX s (default 2..5) one of, at random:
#              reload  SIGHUP to the pool (chain reload)
#              term    SIGTERM to one zergling (it drains and hands back its
#                      keep-alive connections; the pool respawns it)
#              kill    SIGKILL to one zergling
#            A victim is a child of the pool (pgrep -P) that has lived at least
#            $MIN_AGE s (default 3: attached and serving), and only while at least
#            two are running, so the pool is never left without a zergling.
#
# Every request ends as ok or as one error kind: refused, reset, eof (closed before
# a whole response), timeout ($TIMEOUT s, default 15), tls, 5xx, status (another
# unexpected status), body (wrong bytes), other.
#
# Verdict (exit 1 when any rule fails):
#   1. A SIGKILLed zergling loses what it held: the requests in flight in it and the
#      keep-alive connections it owned (their next request fails). Each client
#      connection loses at most one request per SIGKILL, and one zergling of three
#      holds about a third of the eight client connections that reach zerglings, so:
#        errors <= kills * ERR_PER_KILL (default 3)
#      (The summary also prints the pool's own count of the connections the killed
#      zerglings owned, from its "vanished while owning connections" lines; in the
#      runs so far the errors matched it exactly.)
#   2. No other failure is acceptable: an error more than $KILL_WINDOW s (default
#      3) after the last SIGKILL, or any error of the static client (its
#      connections never reach a zergling), is "unexplained": there must be none.
#   3. After the traffic, once $ZERGLINGS zerglings run again and $SETTLE s (default
#      5) have passed, the pool's open descriptors (ls /proc/PID/fd) are at most
#      FD_SLACK (default 4) above the count taken after the warm-up.
#   4. The pool is alive at the end and a graceful stop (SIGTERM) ends it with
#      status 0 within reload-mercy (5 s) + 10 s.
#   5. The pool's resident memory returns to its level of the steady state: at
#      the end (after $SETTLE s) VmRSS is at most RSS_SLACK_KB (default 1024)
#      above the one sampled $WARMUP s (default 60) into the chaos. The pool's
#      bounded caches (the TLS session cache, 256 sessions; the static-map
#      resolution cache; tokio's and the allocator's pools) fill during the
#      first minute of traffic and then stay: measured against the 2-s warm-up,
#      the end is about 1.6 MB higher in every run, and flat from there. A leak
#      grows past the slack over ten minutes; a filled cache does not.
# Also printed, not judged: VmRSS start/end, peak descriptors, chain reloads
# completed, respawns, pool WARN/ERROR lines and nginx [error] lines by message.
#
# Usage: benches/chaos.sh                (10 minutes)
#        DURATION=60 benches/chaos.sh    (RATE=40 ZERGLINGS=3 DIRECT_ACCEPT=1 KEEP=1 ...)
# Logs (pool, nginx, clients, chaos events) stay in the printed folder when the
# verdict fails or KEEP=1; otherwise the folder is removed.
set -euo pipefail
DURATION=${DURATION:-600} # before lib.sh, whose default (10) would win otherwise
source "$(dirname "$0")/lib.sh"
need curl; need nginx; need python3; need pgrep procps
[ -r /etc/nginx/uwsgi_params ] || { echo "missing /etc/nginx/uwsgi_params (nginx-common)" >&2; exit 1; }
RATE=${RATE:-40}
ZERGLINGS=${ZERGLINGS:-3}
CHAOS_MIN=${CHAOS_MIN:-2}
CHAOS_MAX=${CHAOS_MAX:-5}
MIN_AGE=${MIN_AGE:-3}
TIMEOUT=${TIMEOUT:-15}
ERR_PER_KILL=${ERR_PER_KILL:-3}
KILL_WINDOW=${KILL_WINDOW:-3}
FD_SLACK=${FD_SLACK:-4}
SETTLE=${SETTLE:-5}
WARMUP=${WARMUP:-60}
RSS_SLACK_KB=${RSS_SLACK_KB:-1024}
DIRECT_ACCEPT=${DIRECT_ACCEPT:-0}
KEEP=${KEEP:-0}
BIN=$ROOT/target/release
for b in zergpool zergling-demo; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: cargo build --release" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/zergpool-chaos.XXXXXX)
chmod 755 "$TMP"
ZP=""        # the pool
CHAOS=""     # the chaos loop
CLIENTS=()   # the client loops
FAILED=0
# Cleanup, by pid: the chaos loop and the clients, then the pool's children (whoever
# they are at that moment), the pool, then nginx (lib.sh's cleanup). Logs stay when
# the verdict failed or KEEP=1.
finish() {
  local rc=$?
  [ -n "$CHAOS" ] && { kill "$CHAOS" 2>/dev/null || true; }
  for p in "${CLIENTS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$ZP" ] && kill -0 "$ZP" 2>/dev/null; then
    for c in $(pgrep -P "$ZP" || true); do kill -9 "$c" 2>/dev/null || true; done
    kill -9 "$ZP" 2>/dev/null || true
  fi
  # nginx: SIGTERM to its master, which reaps its worker (lib.sh's cleanup then
  # SIGKILLs whatever is left, by pid).
  if [ -n "${NPID:-}" ] && kill -TERM "$NPID" 2>/dev/null; then
    for _ in $(seq 1 50); do kill -0 "$NPID" 2>/dev/null || break; sleep 0.1; done
  fi
  cleanup
  if [ "$rc" != 0 ] || [ "$FAILED" != 0 ] || [ "$KEEP" = 1 ]; then
    echo "logs kept in $TMP" >&2
  else
    rm -rf "$TMP"
  fi
}
trap finish EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
zerglings() { pgrep -P "$ZP" || true; }

# --- the pool --------------------------------------------------------------------
HTTP=$(free_port); HTTPS=$(free_port); UWSGI=$(free_port); NGINX=$(free_port)
args=(--http 127.0.0.1:$HTTP
  --https "127.0.0.1:$HTTPS,$ROOT/certs/localhost.pem,$ROOT/certs/localhost-key.pem" --http2
  --socket 127.0.0.1:$UWSGI
  --static-map "/static=$ROOT/static" --static-index index.html
  --zerg-server "$TMP/zerg.sock" --listen 1024
  --reload-mercy 5 --worker-reload-mercy 20)
[ "$DIRECT_ACCEPT" = 1 ] && args+=(--zerg-direct-accept)
for _ in $(seq 1 "$ZERGLINGS"); do args+=(--zergling "$BIN/zergling-demo"); done
ZERGPOOL_LOG=${ZERGPOOL_LOG:-info} "$BIN/zergpool" --disable-logging "${args[@]}" >"$TMP/pool.log" 2>&1 &
ZP=$!

# --- nginx -----------------------------------------------------------------------
start_nginx "$TMP/nginx" "
  client_max_body_size 16m;
  server {
    listen 127.0.0.1:$NGINX;
    location / { include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:$UWSGI; }
  }"

wait_http "http://127.0.0.1:$HTTP/static/zergpool.txt"
wait_http "http://127.0.0.1:$NGINX/static/zergpool.txt"
PIDS_TO_KILL+=($(pgrep -P "$NPID" || true)) # nginx's worker: killed by pid too
for _ in $(seq 1 200); do [ "$(zerglings | wc -l)" -ge "$ZERGLINGS" ] && break; sleep 0.05; done
[ "$(zerglings | wc -l)" -ge "$ZERGLINGS" ] || { echo "the pool did not spawn $ZERGLINGS zerglings" >&2; exit 1; }
wait_http "http://127.0.0.1:$HTTP/"

# --- the clients -----------------------------------------------------------------
cat >"$TMP/client.py" <<'PY'
# One paced, bounded client loop: NAME MODE PORT DURATION RATE OUTDIR.
# Writes OUTDIR/NAME.err (one line per failed request: time, error kind, details)
# and OUTDIR/NAME.json (counts) at the end.
import http.client, json, os, random, socket, ssl, subprocess, sys, time

name, mode, port, duration, rate, outdir = sys.argv[1:7]
port, duration, rate = int(port), float(duration), float(rate)
CA, STATIC, TIMEOUT = os.environ["CHAOS_CA"], os.environ["CHAOS_STATIC"], float(os.environ["CHAOS_TIMEOUT"])
FILES = {f: open(os.path.join(STATIC, f), "rb").read() for f in ("zergpool.txt", "style.css", "index.html")}
tls = mode.startswith("https") or mode == "h2"
close = mode.endswith("-close")
counts = {"requests": 0, "ok": 0, "errors": {}, "max_ms": 0, "slow": 0}
err = open(os.path.join(outdir, name + ".err"), "w", buffering=1)
ctx = ssl.create_default_context(cafile=CA)


class TLSConn(http.client.HTTPSConnection):
    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(s, server_hostname="localhost")


def new_conn():
    if tls:
        return TLSConn("localhost", port, timeout=TIMEOUT, context=ctx)
    return http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)


def pick():
    """(method, path, headers, body, expected status, check(body) -> error or None)"""
    r = random.random()
    if mode == "static":
        f = random.choice(list(FILES))
        if r < 0.2:
            return "GET", "/static/", {}, None, 200, lambda b: None if b == FILES["index.html"] else "index"
        if r < 0.4:
            return "GET", "/static/" + f, {"Range": "bytes=0-9"}, None, 206, lambda b: None if b == FILES[f][:10] else "range"
        return "GET", "/static/" + f, {}, None, 200, lambda b: None if b == FILES[f] else "file"
    if r < 0.55:
        return "GET", "/", {}, None, 200, lambda b: None if b == b"Hello, world!" else "hello"
    if r < 0.65:
        ms = random.randint(50, 300)
        return "GET", "/sleep?ms=%d" % ms, {}, None, 200, lambda b: None if b == b"slept %d ms" % ms else "sleep"
    if r < 0.75:
        body = os.urandom(random.randint(1, 65536))
        return "POST", "/echo", {"Content-Type": "application/octet-stream"}, body, 200, lambda b: None if b == body else "echo"
    if r < 0.85:
        def whoami(b):
            try:
                return None if "pid" in json.loads(b) else "whoami"
            except ValueError:
                return "whoami-json"
        return "GET", "/whoami", {}, None, 200, whoami
    f = random.choice(list(FILES))
    return "GET", "/static/" + f, {}, None, 200, lambda b: None if b == FILES[f] else "file"


def kind_of(e):
    if isinstance(e, (http.client.RemoteDisconnected, http.client.IncompleteRead, http.client.BadStatusLine,
                      ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "eof"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    if isinstance(e, TimeoutError):
        return "timeout"
    if isinstance(e, ssl.SSLError):
        return "tls"
    return "other"


def record(kind, detail, t0):
    ms = (time.time() - t0) * 1000
    counts["requests"] += 1
    counts["max_ms"] = max(counts["max_ms"], round(ms))
    if ms > 2000:
        counts["slow"] += 1
    if kind is None:
        counts["ok"] += 1
    else:
        counts["errors"][kind] = counts["errors"].get(kind, 0) + 1
        err.write("%.3f %s %s %s %dms\n" % (time.time(), name, kind, detail, ms))


H2 = [("/", 13), ("/", 13), ("/sleep?ms=100", 12), ("/static/zergpool.txt", len(FILES["zergpool.txt"])), ("/", 13)]
CURL_KIND = {7: "refused", 28: "timeout", 56: "reset", 52: "eof", 35: "tls", 16: "eof", 92: "reset", 55: "reset", 18: "eof"}


def h2_batch():
    """Five requests over one HTTP/2 connection (curl), one result each."""
    t0 = time.time()
    cmd = ["curl", "--http2", "--cacert", CA, "--resolve", "localhost:%d:127.0.0.1" % port, "-s", "--retry", "0",
           "-m", str(TIMEOUT), "-w", "%{http_code} %{http_version} %{size_download} %{exitcode}\\n"]
    for path, _ in H2:
        cmd += ["-o", "/dev/null", "https://localhost:%d%s" % (port, path)]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout.split("\n")
    for i, (path, size) in enumerate(H2):
        f = out[i].split() if i < len(out) and out[i] else ["000", "0", "0", "-1"]
        code, version, got, rc = f[0], f[1], int(f[2]), int(f[3])
        if code == "000":
            record(CURL_KIND.get(rc, "other"), "GET %s curl-exit=%d" % (path, rc), t0)
        elif code.startswith("5"):
            record("5xx", "GET %s status=%s" % (path, code), t0)
        elif code != "200" or version != "2":
            record("status", "GET %s status=%s http=%s" % (path, code, version), t0)
        elif got != size:
            record("body", "GET %s size=%d" % (path, got), t0)
        else:
            record(None, "", t0)


start = time.time()
deadline = start + duration
limit = int(rate * duration * 1.2) + 10
conn, used, i = None, 0, 0
while time.time() < deadline and counts["requests"] < limit:
    due = start + i / rate
    i += 1
    if due > time.time():
        time.sleep(max(0.0, due - time.time()))
    elif time.time() - due > 1:
        start, i = time.time(), 1  # fell behind (a slow request): no burst to catch up
    if mode == "h2":
        i += len(H2) - 1
        h2_batch()
        continue
    method, path, headers, body, status, check = pick()
    if close:
        headers["Connection"] = "close"
    if conn is None:
        conn, used = new_conn(), 0
    t0 = time.time()
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        used += 1
        if resp.status >= 500:
            record("5xx", "%s %s status=%d reused=%d" % (method, path, resp.status, used > 1), t0)
        elif resp.status != status:
            record("status", "%s %s status=%d reused=%d" % (method, path, resp.status, used > 1), t0)
        else:
            bad = check(data)
            record("body" if bad else None, "%s %s %s reused=%d" % (method, path, bad, used > 1), t0)
        if close or resp.will_close:
            conn.close()
            conn = None
    except Exception as e:  # one error kind per failed request
        record(kind_of(e), "%s %s %s:%s reused=%d" % (method, path, type(e).__name__, e, used > 0), t0)
        conn.close()
        conn = None
json.dump(dict(counts, name=name, mode=mode), open(os.path.join(outdir, name + ".json"), "w"))
PY
mkdir -p "$TMP/out"
export CHAOS_CA=$ROOT/certs/ca.pem CHAOS_STATIC=$ROOT/static CHAOS_TIMEOUT=$TIMEOUT
client() { # NAME MODE PORT DURATION
  python3 "$TMP/client.py" "$1" "$2" "$3" "$4" "$RATE" "$TMP/out" 2>"$TMP/out/$1.stderr" &
  CLIENTS+=($!)
}
run_clients() { # DURATION
  client http-ka1 http-ka $HTTP "$1"; client http-ka2 http-ka $HTTP "$1"
  client http-close http-close $HTTP "$1"
  client https-ka https-ka $HTTPS "$1"; client https-close https-close $HTTPS "$1"
  client h2 h2 $HTTPS "$1"
  client nginx1 nginx $NGINX "$1"; client nginx2 nginx $NGINX "$1"
  client static static $HTTP "$1"
}
wait_clients() {
  for p in "${CLIENTS[@]}"; do wait "$p" || true; done
  CLIENTS=()
}

# --- warm-up, then the starting figures ---------------------------------------
# Every client kind for 2 s without chaos: TLS, static cache and connections as in the
# steady state; a failure here is a failure without any chaos.
run_clients 2
wait_clients
WARM_ERRORS=$(cat "$TMP"/out/*.err | wc -l)
[ "$WARM_ERRORS" = 0 ] || { echo "warm-up (no chaos) had $WARM_ERRORS failed requests:" >&2; cat "$TMP"/out/*.err >&2; FAILED=1; exit 1; }
sleep "$SETTLE"
FD0=$(fds "$ZP"); RSS0=$(rss_kb "$ZP")
rm -f "$TMP"/out/*
echo "pool pid $ZP: http :$HTTP, https :$HTTPS (h2), uwsgi :$UWSGI, nginx :$NGINX, $ZERGLINGS zerglings$([ "$DIRECT_ACCEPT" = 1 ] && echo ', direct accept')"
echo "start: fds=$FD0 rss=${RSS0} kB; ${DURATION} s of traffic, 9 clients at $RATE req/s each, chaos every $CHAOS_MIN..$CHAOS_MAX s"

# --- chaos -----------------------------------------------------------------------
chaos() {
  local end=$(( SECONDS + DURATION )) action victim t
  while [ $SECONDS -lt $end ]; do
    sleep "$(( CHAOS_MIN + RANDOM % (CHAOS_MAX - CHAOS_MIN + 1) )).$(( RANDOM % 10 ))"
    [ $SECONDS -lt $end ] || break
    echo "$(now) fds $(fds "$ZP")" >>"$TMP/fds"
    if [ ! -s "$TMP/rss_warm" ] && [ $(( SECONDS - CHAOS_START )) -ge "$WARMUP" ]; then
      rss_kb "$ZP" >"$TMP/rss_warm"
    fi
    case $(( RANDOM % 3 )) in
      0) t=$(now); kill -HUP "$ZP" 2>/dev/null && echo "$t reload $ZP" >>"$TMP/events" ;;
      *) action=$([ $(( RANDOM % 2 )) = 0 ] && echo term || echo kill)
         local alive=() eligible=()
         for c in $(zerglings); do
           alive+=("$c")
           [ "$(ps -o etimes= -p "$c" 2>/dev/null | tr -d ' ' || echo 0)" -ge "$MIN_AGE" ] 2>/dev/null && eligible+=("$c")
         done
         if [ ${#alive[@]} -lt 2 ] || [ ${#eligible[@]} = 0 ]; then
           echo "$(now) skip-$action alive=${#alive[@]} eligible=${#eligible[@]}" >>"$TMP/events"
           continue
         fi
         victim=${eligible[$(( RANDOM % ${#eligible[@]} ))]}
         t=$(now) # taken before the signal: a failure it causes comes after
         if [ "$action" = term ]; then kill -TERM "$victim" 2>/dev/null || continue
         else kill -KILL "$victim" 2>/dev/null || continue; fi
         echo "$t $action $victim" >>"$TMP/events" ;;
    esac
  done
}
touch "$TMP/events" "$TMP/fds" "$TMP/rss_warm"
CHAOS_START=$SECONDS
chaos &
CHAOS=$!
run_clients "$DURATION"
wait_clients
wait "$CHAOS" || true
CHAOS=""
T_END=$(now)

# --- settle, the ending figures --------------------------------------------------
POOL_ALIVE=1
kill -0 "$ZP" 2>/dev/null || POOL_ALIVE=0
for _ in $(seq 1 120); do [ "$(zerglings | wc -l)" = "$ZERGLINGS" ] && break; sleep 0.5; done
NZ=$(zerglings | wc -l)
sleep "$SETTLE"
FD1=$(fds "$ZP"); RSS1=$(rss_kb "$ZP")
RSSW=$(cat "$TMP/rss_warm"); RSSW=${RSSW:-$RSS0} # a run shorter than WARMUP: the start
FDPEAK=$( (cat "$TMP/fds"; echo "x fds $FD1") | awk '$3 > m { m = $3 } END { print m + 0 }')

# Graceful stop: exit status 0 within reload-mercy + 10 s.
STOP_RC=none
if [ "$POOL_ALIVE" = 1 ]; then
  kill -TERM "$ZP"
  for _ in $(seq 1 150); do kill -0 "$ZP" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$ZP" 2>/dev/null; then STOP_RC=hung
  else STOP_RC=0; wait "$ZP" || STOP_RC=$?; fi
  [ "$STOP_RC" = hung ] || ZP=""
fi

# --- the verdict ----------------------------------------------------------------
cat "$TMP"/out/*.err >"$TMP/errors" 2>/dev/null || true
KILLS=$(grep -c ' kill ' "$TMP/events" || true)
TERMS=$(grep -c ' term ' "$TMP/events" || true)
RELOADS=$(grep -c ' reload ' "$TMP/events" || true)
SKIPS=$(grep -c ' skip-' "$TMP/events" || true)
CHAINS=$(grep -c 'chain reload complete' "$TMP/pool.log" || true)
CHAIN_STOPS=$(grep -c 'chain reload stopped' "$TMP/pool.log" || true)
RESPAWNS=$(grep -c 'exited; respawning' "$TMP/pool.log" || true)
MERCY_KILLS=$(grep -c 'after worker-reload-mercy; SIGKILL' "$TMP/pool.log" || true)
# The pool's own count of the connections the vanished (SIGKILLed) zerglings owned:
# with the pool accepting, each is at most one failed request.
OWNED=$(sed -n 's/.*vanished while owning connections.* connections=\([0-9]*\).*/\1/p' "$TMP/pool.log" | awk '{ s += $1 } END { print s + 0 }')
read -r TOTAL OK ERRS BYKIND UNEXPLAINED SLOW MAXMS < <(python3 - "$TMP/out" "$TMP/events" "$KILL_WINDOW" <<'PY'
import glob, json, os, sys
out, events, window = sys.argv[1], sys.argv[2], float(sys.argv[3])
kills = [float(l.split()[0]) for l in open(events) if l.split()[1:2] == ["kill"]]
total = ok = slow = maxms = 0
kinds = {}
for f in glob.glob(os.path.join(out, "*.json")):
    c = json.load(open(f))
    total += c["requests"]; ok += c["ok"]; slow += c["slow"]; maxms = max(maxms, c["max_ms"])
    for k, n in c["errors"].items():
        kinds[k] = kinds.get(k, 0) + n
unexplained = 0
for f in glob.glob(os.path.join(out, "*.err")):
    for line in open(f):
        t, name = float(line.split()[0]), line.split()[1]
        if name == "static" or not any(0 <= t - k <= window for k in kills):
            unexplained += 1
by = ",".join("%s=%d" % kv for kv in sorted(kinds.items())) or "none"
print(total, ok, sum(kinds.values()), by, unexplained, slow, maxms)
PY
)
CLIENTS_DONE=$(ls "$TMP"/out/*.json 2>/dev/null | wc -l)

echo
echo "summary (${DURATION} s)"
printf '  %-22s %s\n' requests "$TOTAL (ok $OK; slower than 2 s: $SLOW; slowest ${MAXMS} ms)" \
  errors "$ERRS ($BYKIND)" \
  "unexplained errors" "$UNEXPLAINED (not within ${KILL_WINDOW} s after a SIGKILL, or on the static client)" \
  "chaos sent" "SIGKILL $KILLS, SIGTERM $TERMS, SIGHUP $RELOADS (skipped: $SKIPS, fewer than 2 zerglings or none ${MIN_AGE} s old)" \
  "pool saw" "chain reloads complete $CHAINS, stopped $CHAIN_STOPS; respawns $RESPAWNS; mercy SIGKILLs $MERCY_KILLS" \
  "" "connections owned by the SIGKILLed zerglings: $OWNED$([ "$DIRECT_ACCEPT" = 1 ] && echo ' (directly accepted uwsgi ones not counted)')" \
  "zerglings at the end" "$NZ of $ZERGLINGS" \
  fds "start $FD0, end $FD1, peak $FDPEAK (slack $FD_SLACK)" \
  "rss (kB)" "start $RSS0, after ${WARMUP} s of chaos $RSSW, end $RSS1 (slack $RSS_SLACK_KB)" \
  "graceful stop" "$([ "$POOL_ALIVE" = 1 ] && echo "status $STOP_RC" || echo 'the pool had died')"
for kind in $(cut -d' ' -f3 "$TMP/errors" | sort -u); do
  echo "  first $kind errors:"; grep " $kind " "$TMP/errors" | head -3 | sed 's/^/    /'
done
if grep -qE ' (WARN|ERROR) ' "$TMP/pool.log"; then
  echo "  pool WARN/ERROR lines (by message, counted):"
  grep -E ' (WARN|ERROR) ' "$TMP/pool.log" | sed -E 's/^[^ ]+ +//; s/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -12 | sed 's/^/    /'
fi
if grep -q '\[error\]' "$TMP/nginx/logs/error.log" 2>/dev/null; then
  echo "  nginx [error] lines (by message, counted):"
  grep '\[error\]' "$TMP/nginx/logs/error.log" | sed -E 's/^.*\[error\] [0-9#]+: \*[0-9]+ //; s/, client:.*//' | sort | uniq -c | sort -rn | head -8 | sed 's/^/    /'
fi

verdict=()
[ "$CLIENTS_DONE" = 9 ] || verdict+=("only $CLIENTS_DONE of 9 clients finished (see $TMP/out/*.stderr)")
[ "$ERRS" -le $(( KILLS * ERR_PER_KILL )) ] || verdict+=("errors $ERRS > SIGKILLs $KILLS x $ERR_PER_KILL")
[ "$UNEXPLAINED" = 0 ] || verdict+=("$UNEXPLAINED unexplained errors")
[ "$FD1" -le $(( FD0 + FD_SLACK )) ] || verdict+=("descriptors grew from $FD0 to $FD1 (slack $FD_SLACK)")
[ "$RSS1" -le $(( RSSW + RSS_SLACK_KB )) ] || verdict+=("resident memory grew from $RSSW kB (steady state) to $RSS1 kB (slack $RSS_SLACK_KB)")
[ "$NZ" = "$ZERGLINGS" ] || verdict+=("$NZ zerglings running at the end, not $ZERGLINGS")
[ "$POOL_ALIVE" = 1 ] || verdict+=("the pool died")
[ "$POOL_ALIVE" = 0 ] || [ "$STOP_RC" = 0 ] || verdict+=("graceful stop: $STOP_RC")
if [ ${#verdict[@]} = 0 ]; then
  echo "PASS"
else
  FAILED=1
  for v in "${verdict[@]}"; do echo "FAIL: $v"; done
  exit 1
fi
