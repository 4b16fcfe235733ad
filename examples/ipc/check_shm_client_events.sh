#!/usr/bin/env bash
# Checks that shm_client, attached to a block whose "done" event (offset 64) is built but
# whose "filled" event (offset 0) is not, says so and exits 1 instead of using the event
# it could not attach:
#   check_shm_client_events.sh SHM_SERVER SHM_CLIENT [no-filled]
# The block is a copy of a running shm_server's, its first 64 bytes zeroed; the server is
# then stopped (it removes its own name) and the client started on the copy. 64 is
# shm_array's kDoneAt (examples/ipc/shm_array.hpp), where the "done" event begins.
# And that it ends within 5 s, not after its 30 s of retries, on a block whose "done"
# event can never be attached, naming the block, the offset and the error, and leaves
# the block as it was (it is not the client's):
#   check_shm_client_events.sh SHM_SERVER SHM_CLIENT garbage   16 KiB of random bytes
#                                                              (wrong_protocol_type)
#   check_shm_client_events.sh SHM_SERVER SHM_CLIENT tiny      8 bytes, too small for an
#                                                              event at 64 (invalid_argument)
# And that, on the first 4,096 bytes of a block shm_server --count 1000 filled (both events
# built, the count 1,000 set, the array cut short), it says the block is too small and
# exits 1, without reading or printing an array that would lie past the mapping's end:
#   check_shm_client_events.sh SHM_SERVER SHM_CLIENT truncated
set -u
server=$1
client=$2
mode=${3:-no-filled}
name=/corio-check-events-$$
out=$(mktemp)
err=$(mktemp)
cout=$(mktemp)
spid=
cpid=
cleanup() {
  [[ -n $spid ]] && kill -9 "$spid" 2>/dev/null
  [[ -n $cpid ]] && kill -9 "$cpid" 2>/dev/null
  rm -f "$out" "$err" "$cout" "/dev/shm${name}" "/dev/shm${name}-copy"
}
trap cleanup EXIT
trap 'exit 143' TERM INT  # (a test timeout's SIGTERM runs the EXIT trap too)
fail() {
  echo "check_shm_client_events: $*" >&2
  sed 's/^/  server | /' "$out" >&2
  sed 's/^/  client | /' "$cout" "$err" >&2
  exit 1
}
. "$(dirname "${BASH_SOURCE[0]}")/../common/gone_within.sh"

[[ -d /dev/shm && -w /dev/shm ]] || { echo "SKIP: /dev/shm is not writable"; exit 77; }
case $mode in
  no-filled) ;;
  garbage | tiny)
    head -c "$([[ $mode == garbage ]] && echo 16384 || echo 8)" /dev/urandom >"/dev/shm${name}-copy" ||
      fail "cannot write /dev/shm${name}-copy"
    error=$([[ $mode == garbage ]] && echo 'Protocol wrong type for socket' || echo 'Invalid argument')
    before=$(cksum <"/dev/shm${name}-copy")
    "$client" --name "${name}-copy" >/dev/null 2>"$err" </dev/null &
    cpid=$!
    # (It used to retry every error for 30 s, then say "operation timed out".)
    gone_within "$cpid" 50 || fail "the client still runs after 5 s: it waits for an event that cannot come"
    wait "$cpid"
    rc=$?
    cpid=
    [[ $rc -eq 1 ]] || fail "client: exit status $rc, expected 1 (a signal adds 128)"
    grep -q "client: ${name}-copy holds no process_event at offset 64: $error" "$err" ||
      fail "client: no 'holds no process_event at offset 64: $error' on stderr"
    [[ $(cksum <"/dev/shm${name}-copy" 2>/dev/null) == "$before" ]] ||
      fail "the block is gone or changed: the client must leave it alone"
    echo "shm_client: a $mode block: exit 1 at once, naming the block, the offset and the error"
    exit 0
    ;;
  truncated) ;;
  *) echo "unknown mode '$mode'" >&2; exit 2 ;;
esac
"$server" --name "$name" $([[ $mode == truncated ]] && echo --count 1000) >"$out" 2>&1 </dev/null &
spid=$!
for ((i = 0; i < 300; ++i)); do
  grep -q 'event set' "$out" && break
  gone_within "$spid" 0 && fail "the server ended before it set its event"
  sleep 0.1
done
grep -q 'event set' "$out" || fail "the server did not set its event within 30 s"
if [[ $mode == truncated ]]; then  # the copy: the block's first page
  head -c 4096 "/dev/shm${name}" >"/dev/shm${name}-copy" || fail "cannot copy the block"
else  # the copy: the block as the server built it, without the event at offset 0
  { head -c 64 /dev/zero && tail -c +65 "/dev/shm${name}"; } >"/dev/shm${name}-copy" || fail "cannot copy the block"
fi
kill -TERM "$spid"
gone_within "$spid" 100 || fail "the server still runs 10 s after SIGTERM"
wait "$spid"
spid=

"$client" --name "${name}-copy" >"$cout" 2>"$err" </dev/null &
cpid=$!
gone_within "$cpid" 200 || fail "the client still runs after 20 s"
wait "$cpid"
rc=$?
cpid=
[[ $rc -eq 1 ]] || fail "client: exit status $rc, expected 1 (a signal adds 128)"
if [[ $mode == truncated ]]; then
  grep -q "client: ${name}-copy is 4096 bytes, shm_server's block 8192: not shm_server's block" "$err" ||
    fail "client: no 'is 4096 bytes, shm_server's block 8192' on stderr"
  grep -q 'Shared Array' "$cout" && fail "client: it printed an array read past the end of the block"
  echo "shm_client: a block cut to 4096 bytes: exit 1, saying it is too small, no array read"
  exit 0
fi
grep -q "client: ${name}-copy holds no process_event at offset 0" "$err" ||
  fail "client: no 'holds no process_event at offset 0' on stderr"
echo "shm_client: a block without its 'filled' event: exit 1, naming the block and the offset"
