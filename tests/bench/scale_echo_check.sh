#!/usr/bin/env bash
# bench/scale.sh's echo runs load only the server they started, with the shortest
# settings (1 worker, 1 repeat, a 1 s window) and stand-ins for the runtime and sync
# benchmarks (they are not what is checked; the echo server and load client are real):
#   - a port that another program listens on is moved past: that program gets no load,
#     and the corio echo line comes from the real server on a later port;
#   - a server that cannot start (the port bound by another socket: bind: Address already
#     in use) gives a `# echo: corio at 1 workers did not start: ...` line, no corio echo
#     line, and a failing exit status (it used to wait 10 s, write nothing and exit 0);
#   - SIGTERM or SIGINT to the script alone, or SIGINT to its process group (Ctrl-C),
#     during the echo phase stops it with status 143 or 130 and leaves no echo_server or
#     echo_load (before the traps, a signal to the script alone left the server running,
#     reparented to pid 1 and listening);
# and no echo_server is left running after any of it.
#   scale_echo_check.sh SOURCE_ROOT ECHO_SERVER ECHO_LOAD
set -uo pipefail
root=$1
work=$(mktemp -d)
holder=""
cleanup() {
  [ -z "$holder" ] || kill "$holder" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
bin=$work/bin
mkdir -p "$bin"
ln -s "$(realpath "$2")" "$bin/echo_server"
ln -s "$(realpath "$3")" "$bin/echo_load"
for b in runtime_bench sync_bench; do  # stand-ins: one figure each, instantly
  printf '#!/bin/sh\necho "$1 corio-$3w 1.0 ns/task"\n' >"$bin/$b"
  chmod +x "$bin/$b"
done

# hold_port MODE: a Python socket on a free port (MODE listen: listening, never accepting;
# bound: bound only). Sets port and holder; on SIGTERM the holder prints how many of the
# connections waiting in its queue carried data (were loaded).
hold_port() {
  coproc HOLD { exec python3 -u -c '
import signal, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
if sys.argv[1] == "listen":
    s.listen(128)
print(s.getsockname()[1])
def done(*_):
    loaded = 0
    if sys.argv[1] == "listen":
        s.setblocking(False)
        while True:
            try:
                c, _ = s.accept()
            except BlockingIOError:
                break
            c.settimeout(0.2)
            try:
                loaded += len(c.recv(1)) > 0
            except OSError:
                pass
    print("loaded", loaded)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
while True:
    signal.pause()
' "$1"; }
  holder=$HOLD_PID
  read -r port <&"${HOLD[0]}" || fail "the port holder did not start"
  exec {hold_out}<&"${HOLD[0]}"
}
release_port() {  # prints the holder's "loaded N"
  kill "$holder"
  cat <&"$hold_out"
  wait "$holder" 2>/dev/null
  holder=""
}
scale() {  # scale PORT: the shortest run, its output in $work/log, results in $work/r.txt
  rm -f "$work/r.txt"
  timeout 60 bash "$root/bench/scale.sh" --bin "$bin" --workers 1 --repeat 1 --seconds 1 \
    --port "$1" --out "$work/r.txt" >"$work/log" 2>&1
}
no_server_left() {
  local p
  for p in echo_server echo_load; do
    if pgrep -f -- "$bin/$p" >/dev/null; then
      pkill -f -- "$bin/$p"
      fail "$1: an $p was left running"
    fi
  done
}

# 1. Another program listens on the first port: moved past, never loaded.
hold_port listen
scale "$port"
rc=$?
loaded=$(release_port)
[ "$rc" -eq 0 ] || fail "listener case: scale.sh exited $rc: $(tail -n 5 "$work/log")"
[ "$loaded" = "loaded 0" ] || fail "the other program's listener on $port was loaded ($loaded connections with data)"
awk '$1 == "echo_64B_rps" && $2 == "corio-1w" && $3 > 0 { ok = 1 } END { exit !ok }' "$work/r.txt" ||
  fail "listener case: no corio echo figure from the server on the next port: $(grep echo "$work/r.txt")"
grep -q '^# client: corio at 1 workers: [0-9.]* us/req, [0-9]*% of its 1 CPU(s)$' "$work/r.txt" ||
  fail "listener case: no '# client:' line with the load client's CPU: $(grep '^#' "$work/r.txt" | tail -n 3)"
no_server_left "listener case"
echo "ok: a port another program listens on is moved past and not loaded"

# 1b. echo_load --threads 2 (the client scale.sh gives K CPUs): its line sums the threads'
#     requests and gives the client's own CPU per request. Started with a soft descriptor
#     limit of 64 for 100 connections: it raises its own limit to fit them (a scaling run
#     opens 50 per server worker: 1,600 at 32, above a stock soft limit of 1,024).
"$bin/echo_server" --port 0 --workers 1 >"$work/server.out" 2>&1 &
server=$!
port=""
for _ in $(seq 100); do  # it prints "echo_server listening on 127.0.0.1:PORT ..."
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/server.out")
  [ -z "$port" ] || break
  sleep 0.05
done
line=""
[ -z "$port" ] || line=$( (ulimit -Sn 64 && exec timeout 20 "$bin/echo_load" --port "$port" --conns 100 --threads 2 \
  --seconds 0.3 --warmup 0.1 --stat-pid "$server") )
kill "$server"
wait "$server" 2>/dev/null
[ -n "$port" ] || fail "echo_server --port 0 printed no port: $(cat "$work/server.out")"
awk '{ for (i = 1; i < NF; i++) f[$i] = $(i + 1) }
     END { exit !(f["requests"] > 0 && f["threads"] == 2 && f["client_us_per_request"] > 0 && f["us_per_request"] > 0) }' \
  <<<"$line" || fail "echo_load --threads 2: unexpected line '$line'"
echo "ok: echo_load --threads 2: $line"

# 2. The port is bound by another socket: echo_server cannot bind and exits.
hold_port bound
scale "$port"
rc=$?
release_port >/dev/null
[ "$rc" -ne 0 ] || fail "bound case: scale.sh exited 0 although the echo server did not start"
grep -q '^# echo: corio at 1 workers did not start: .*Address already in use' "$work/r.txt" ||
  fail "bound case: no '# echo: ... did not start' line naming the bind error: $(grep echo "$work/r.txt")"
if grep -q '^echo_64B_[a-z]* corio' "$work/r.txt"; then
  fail "bound case: a corio echo figure was written: $(grep '^echo_' "$work/r.txt")"
fi
no_server_left "bound case"
echo "ok: a server that did not start is reported, with no figure and a failing status"

# 3. A signal during the echo phase: the script stops with 128 + the signal's number, and
#    takes its server (and load client) with it. setsid: its own process group, as a
#    terminal gives a command, so that SIGINT can go to the whole group like Ctrl-C; and
#    SIGINT back to its default (bash ignores it in a command it starts with &, and a
#    script cannot trap a signal ignored when it started).
interrupt() {  # interrupt SIGNAL STATUS TARGET (TARGET: script or group)
  setsid python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execvp(sys.argv[1], sys.argv[1:])' bash "$root/bench/scale.sh" --bin "$bin" --workers 1 --repeat 1 --seconds 5 \
    --out "$work/r.txt" >"$work/log" 2>&1 &
  local pid=$! rc=0
  for _ in $(seq 200); do
    pgrep -f -- "$bin/echo_load" >/dev/null && break
    sleep 0.05
  done
  pgrep -f -- "$bin/echo_load" >/dev/null || fail "$1: scale.sh never reached its echo run: $(tail -n 3 "$work/log")"
  sleep 0.3
  if [ "$3" = group ]; then kill -"$1" -- "-$pid"; else kill -"$1" "$pid"; fi
  wait "$pid" || rc=$?
  sleep 0.2  # (a server left behind would still be there; give a dying one its moment)
  no_server_left "$1 to the $3"
  [ "$rc" -eq "$2" ] || fail "$1 to the $3: scale.sh exited $rc, not $2: $(tail -n 3 "$work/log")"
  echo "ok: $1 to the $3 during the echo run: status $rc, no server or client left"
}
interrupt TERM 143 script
interrupt INT 130 script
interrupt INT 130 group
