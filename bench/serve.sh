#!/usr/bin/env bash
# Sourced by bench/scale.sh and bench/ipc/echo.sh: runs one benchmark server at a time in
# the background and makes sure the figures measured are its own. A port that already
# answers is moved past (serve_free_port) and never loaded; a server is "started" only when
# its port answers while it is alive, and a server that exited (bind: Address already in
# use, ...) is reported with its last stderr line. serve_stop (also from the runner's
# EXIT/INT/TERM/HUP traps, serve_traps) kills the server and the load client and waits.
#
#   serve_free_port FIRST            prints the first port from FIRST on that nobody answers on
#   serve_start PORT COMMAND...      0: serve_pid runs COMMAND and PORT answers;
#                                    1: serve_error says why (the server is stopped)
#   serve_alive                      the server is still running
#   serve_load COMMAND...            runs the load client COMMAND in the background (its
#                                    output in $serve_dir/load.out) and waits for it; 0: it
#                                    succeeded and the server is still alive; 1: serve_error
#                                    says why (the server is stopped)
#   serve_stop                       kills and reaps the server and the load client (serve_load_pid)
#   serve_traps                      stop on EXIT; on INT/TERM/HUP stop, then exit 130/143/129
# serve_dir is a temporary folder for the runner's own files too; the EXIT trap removes it.

serve_pid=""
serve_load_pid=""
serve_error=""
serve_dir=$(mktemp -d)
serve_log=$serve_dir/server.err

serve_answers() {  # serve_answers PORT: something accepts connections on 127.0.0.1:PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

serve_free_port() {
  local p=$1
  for _ in $(seq 100); do
    if ! serve_answers "$p"; then
      echo "$p"
      return 0
    fi
    echo "# port $p already answers (another program's): moving past it" >&2
    p=$((p + 1))
  done
  return 1
}

serve_alive() {
  [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null
}

serve_start() {
  local port=$1 rc
  shift
  serve_error=""
  if serve_answers "$port"; then
    serve_error="port $port already answers (another program's), not loading it"
    return 1
  fi
  "$@" >/dev/null 2>"$serve_log" &
  serve_pid=$!
  for _ in $(seq 200); do
    if ! serve_alive; then  # exited: bash reaped it, wait gives its status
      rc=0
      wait "$serve_pid" 2>/dev/null || rc=$?
      serve_pid=""
      serve_error="exited with status $rc: $(grep -v '^ *$' "$serve_log" | tail -n 1)"
      return 1
    fi
    if serve_answers "$port"; then
      sleep 0.05  # a server that answered but failed right after (or was never the one answering)
      if serve_alive; then
        return 0
      fi
      continue
    fi
    sleep 0.05
  done
  serve_error="port $port did not answer within 10 s"
  serve_stop
  return 1
}

serve_load() {
  local rc=0
  "$@" >"$serve_dir/load.out" 2>"$serve_dir/load.err" &
  serve_load_pid=$!
  wait "$serve_load_pid" || rc=$?  # (a trapped INT/TERM ends the wait and runs its trap)
  serve_load_pid=""
  if [ "$rc" -ne 0 ]; then
    serve_error="the load client exited with status $rc: $(tail -n 1 "$serve_dir/load.err")"
  elif ! serve_alive; then
    serve_error="the server exited during the load: $(tail -n 1 "$serve_log")"
  else
    return 0
  fi
  serve_stop
  return 1
}

serve_stop() {
  local p
  for p in "$serve_load_pid" "$serve_pid"; do
    [ -n "$p" ] || continue
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  serve_load_pid=""
  serve_pid=""
}

serve_traps() {
  trap 'serve_stop; rm -rf "$serve_dir"' EXIT
  trap 'serve_stop; exit 130' INT
  trap 'serve_stop; exit 143' TERM
  trap 'serve_stop; exit 129' HUP
}
