#!/usr/bin/env bash
# Checks that shm_server, stopped by SIGNAL (INT, TERM) while it waits for its client,
# exits 0 and leaves no shared-memory name behind:
#   check_shm_server_signal.sh SHM_SERVER SIGNAL
set -u
exe=$1
sig=$2
name=/corio-check-shm-$$
out=$(mktemp)
pid=
cleanup() {
  [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null
  rm -f "$out" "/dev/shm${name}"
}
trap cleanup EXIT
fail() {
  echo "check_shm_server_signal: shm_server SIG$sig: $*" >&2
  sed 's/^/  | /' "$out" >&2
  exit 1
}
"$exe" --name "$name" >"$out" 2>&1 </dev/null &
pid=$!
for ((i = 0; i < 600; ++i)); do  # up to 60 s for a slow or loaded machine
  if grep -q 'event set' "$out" || ! kill -0 "$pid" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
grep -q 'event set' "$out" || fail "never reached its wait for the client"
[[ -e "/dev/shm${name}" ]] || fail "no /dev/shm${name} while it waits"
kill -"$sig" "$pid"
wait "$pid"
rc=$?
pid=
[[ $rc -eq 0 ]] || fail "exit status $rc (a status above 128 is death by signal $((rc - 128)))"
grep -q 'shutting down' "$out" || fail "no 'shutting down' line"
[[ ! -e "/dev/shm${name}" ]] || fail "/dev/shm${name} left behind"
echo "shm_server: SIG$sig while waiting for the client: exit 0, name removed"
