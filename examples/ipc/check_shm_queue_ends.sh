#!/usr/bin/env bash
# Checks that shm_queue's producer, however it ends, leaves no /dev/shm name and no
# consumer waiting:
#   check_shm_queue_ends.sh SHM_QUEUE timeout   no consumer, --timeout-ms 300: exits 1
#                                               within 30 s
#   check_shm_queue_ends.sh SHM_QUEUE SIGNAL    (INT, TERM) sent to the producer alone
#                                               mid-work (consumers paused), with one consumer
#                                               it started and one started separately: it
#                                               exits 1 (not killed), and both consumers end
#   check_shm_queue_ends.sh SHM_QUEUE KILL      the producer (`shm_queue 1000000`, its own
#                                               two consumers) killed with SIGKILL once its
#                                               consumers run: each of them ends within 5 s
#                                               (its names stay: the check removes them)
set -u
exe=$1
what=$2
name=/corio-check-queue-$$
out=$(mktemp)
cout=$(mktemp)
pid=
cpid=
cleanup() {
  [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null
  [[ -n $cpid ]] && kill -9 "$cpid" 2>/dev/null
  for p in ${spawned:-}; do kill -9 "$p" 2>/dev/null; done
  rm -f "$out" "$cout" "/dev/shm${name}-jobs" "/dev/shm${name}-results"
}
trap cleanup EXIT
fail() {
  echo "check_shm_queue_ends: shm_queue $what: $*" >&2
  sed 's/^/  producer | /' "$out" >&2
  sed 's/^/  consumer | /' "$cout" >&2
  exit 1
}
. "$(dirname "${BASH_SOURCE[0]}")/../common/gone_within.sh"
names_left() {
  [[ -e "/dev/shm${name}-jobs" || -e "/dev/shm${name}-results" ]]
}

if [[ $what == timeout ]]; then
  "$exe" --role producer --name "$name" --timeout-ms 300 100 >"$out" 2>&1 </dev/null &
  pid=$!
  gone_within "$pid" 300 || fail "still running after 30 s"
  wait "$pid"
  rc=$?
  pid=
  [[ $rc -eq 1 ]] || fail "exit status $rc, expected 1"
  ! names_left || fail "a /dev/shm${name}-* name left behind"
  echo "shm_queue: no consumer, no answer in 300 ms: exit 1, names removed"
  exit 0
fi

if [[ $what == KILL ]]; then
  "$exe" 1000000 >"$out" 2>&1 </dev/null &
  pid=$!
  name=/corio-example-jobs-$pid  # its default name: the cleanup removes what is left
  consumers_of_it() {            # the consumers it started (exec'd), by their --name
    pgrep -f -- "--role consumer --name $name\$"
  }
  for ((i = 0; i < 600; ++i)); do  # up to 60 s for a slow or loaded machine
    spawned=$(consumers_of_it | paste -sd " ")
    if [[ $(wc -w <<<"$spawned") -ge 2 ]] || ! kill -0 "$pid" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  [[ $(wc -w <<<"$spawned") -eq 2 ]] || fail "not 2 consumers running: ${spawned:-none}"
  sleep 0.2  # at work
  kill -0 "$pid" 2>/dev/null || fail "the producer ended before the kill"
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null
  pid=
  for p in $spawned; do
    gone_within "$p" 50 || fail "the consumer it started ($p) still runs 5 s after kill -9 of the producer"
  done
  echo "shm_queue: kill -9 of the producer: its consumers ($spawned) ended"
  exit 0
fi

"$exe" --role producer --name "$name" --consumers 1 1000000 >"$out" 2>&1 </dev/null &
pid=$!
for ((i = 0; i < 600; ++i)); do  # up to 60 s for a slow or loaded machine
  if grep -q 'jobs through' "$out" || ! kill -0 "$pid" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
grep -q 'jobs through' "$out" || fail "never started"
"$exe" --role consumer --name "$name" >"$cout" 2>&1 </dev/null &
cpid=$!
spawned=
for ((i = 0; i < 100 && ${#spawned} == 0; ++i)); do
  spawned=$(pgrep -P "$pid")
  sleep 0.1
done
[[ -n $spawned ]] || fail "started no consumer"
sleep 0.2  # all three at work
# The consumers pause (SIGSTOP) so that the work cannot end before the signal does.
kill -STOP $spawned "$cpid"
kill -0 "$pid" 2>/dev/null || fail "the producer ended before the signal"
names_left || fail "no /dev/shm${name}-* names while it works"
kill -"$what" "$pid"
sleep 0.2
kill -CONT $spawned "$cpid"
gone_within "$pid" 200 || fail "still running 20 s after SIG$what"
wait "$pid"
rc=$?
pid=
[[ $rc -eq 1 ]] || fail "exit status $rc, expected 1 (a status above 128 is death by signal $((rc - 128)))"
grep -q 'shutting down' "$out" || fail "no 'shutting down' line"
! names_left || fail "a /dev/shm${name}-* name left behind"
for p in $spawned; do
  gone_within "$p" 100 || fail "the consumer it started ($p) still runs"
done
gone_within "$cpid" 100 || fail "the consumer started separately still runs"
cpid=
echo "shm_queue: SIG$what to the producer: exit 1, names removed, consumers ended"
