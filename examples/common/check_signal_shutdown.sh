#!/usr/bin/env bash
# Checks that a server example shuts down cleanly on a signal (ipc/signals.hpp):
#   [EXTRA_IDLE_CONNECTION=1] [PORT_OPTIONS='...'] check_signal_shutdown.sh EXAMPLE SIGNAL [ARGS...]
# Starts `EXAMPLE --port 0 ARGS...` (PORT_OPTIONS replaces `--port 0`, e.g. job_server's
# `--port-sender 0 --port-receiver 0`), waits for its first "listening on HOST:PORT" line,
# opens a connection to that port (for echo_server: one echoed line, so a connection task
# is serving it),
# sends SIGNAL (INT, TERM) and checks: the example exits with status 0 and prints a
# "shutting down" line, and the open connection sees its end (after what the server sent
# on it).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/listening.sh"
exe=$1
sig=$2
shift 2
name=$(basename "$exe")
out=$(mktemp)
pid=
trap 'rm -f "$out"; if [[ -n $pid ]]; then kill -9 "$pid" 2>/dev/null; fi' EXIT

fail() {
  echo "FAIL: $name SIG$sig: $*"
  echo "--- its output:"
  cat "$out"
  exit 1
}

# (Run in the background by a script, the example starts with SIGINT ignored; its signal
# stream takes the signal over all the same.)
read -r -a port_options <<<"${PORT_OPTIONS:---port 0}"
"$exe" "${port_options[@]}" "$@" >"$out" 2>&1 </dev/null &
pid=$!
wait_listening "$pid" "$out"
if [[ -z ${port:-} ]]; then
  fail "no 'listening on' line"
fi
exec 3<>"/dev/tcp/$host/$port" || fail "cannot connect to $host:$port"
if [[ $name == echo_server ]]; then
  printf 'ping' >&3
  read -r -t 60 -N 4 back <&3 || fail "no echo"
  [[ $back == ping ]] || fail "echo was '$back'"
fi

# EXTRA_IDLE_CONNECTION=1 (with --max-connections 1): one more connection, accepted but
# waiting for a free slot, so the signal finds the accept loop waiting at the limit.
if [[ ${EXTRA_IDLE_CONNECTION:-0} == 1 ]]; then
  exec 4<>"/dev/tcp/$host/$port" || fail "cannot open the second connection"
  sleep 0.5  # let the server accept it and wait for a slot
fi

kill -s "$sig" "$pid"
for ((i = 0; i < 600; ++i)); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
  fail "still running 60 s after SIG$sig"
fi
wait "$pid"
rc=$?
pid=
[[ $rc -eq 0 ]] || fail "exit status $rc (a status above 128 is death by signal $((rc - 128)))"
grep -q 'shutting down' "$out" || fail "no 'shutting down' line"
# What the server sent first is read past (socket_server's and job_server's handshake
# challenge) up to the end; a read that times out (status above 128) means no end came.
for ((i = 0; i < 1000; ++i)); do
  read -r -t 60 -N 4096 rest <&3
  rrc=$?
  [[ $rrc -eq 0 ]] || break
done
if [[ $rrc -eq 0 || $rrc -gt 128 ]]; then
  fail "the open connection did not see its end (read status $rrc)"
fi
echo "ok:   $name shuts down cleanly on SIG$sig with a connection open: $(grep 'shutting down' "$out" | head -n 1)"
