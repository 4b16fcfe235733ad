#!/usr/bin/env bash
# Checks what a shm_queue consumer started on its own does when it cannot open the
# producer's queues:
#   check_shm_queue_open.sh SHM_QUEUE not-a-queue   NAME-jobs holds a zero-filled object
#                                                   (not a queue of this version: wrong_protocol_type)
#   check_shm_queue_open.sh SHM_QUEUE abandoned     NAME-jobs holds an empty object that
#                                                   no creator sized (owner_dead once 5 s old)
#     in both, waiting cannot help: the consumer exits 1 within 20 s (it retries for 30 s
#     only while the name does not exist yet), naming the error and the name to remove,
#     and leaves the object alone
#   check_shm_queue_open.sh SHM_QUEUE late-producer  the consumer starts before the names
#                                                   exist; a producer started 1 s later
#                                                   finds it waiting: both exit 0
set -u
exe=$1
what=$2
name=/corio-check-open-$$
err=$(mktemp)
pout=$(mktemp)
cpid=
ppid_=
cleanup() {
  [[ -n $cpid ]] && kill -9 "$cpid" 2>/dev/null
  [[ -n $ppid_ ]] && kill -9 "$ppid_" 2>/dev/null
  rm -f "$err" "$pout" "/dev/shm${name}-jobs" "/dev/shm${name}-results"
}
trap cleanup EXIT
fail() {
  echo "check_shm_queue_open: shm_queue $what: $*" >&2
  sed 's/^/  consumer | /' "$err" >&2
  sed 's/^/  producer | /' "$pout" >&2
  exit 1
}
. "$(dirname "${BASH_SOURCE[0]}")/../common/gone_within.sh"

case $what in
  not-a-queue) head -c 4096 /dev/zero >"/dev/shm${name}-jobs" || exit 77; error=wrong_protocol_type ;;
  abandoned) : >"/dev/shm${name}-jobs" || exit 77; error=owner_dead ;;
  late-producer) ;;
  *) echo "unknown mode '$what'" >&2; exit 2 ;;
esac

"$exe" --role consumer --name "$name" >/dev/null 2>"$err" </dev/null &
cpid=$!
if [[ $what == late-producer ]]; then
  sleep 1
  gone_within "$cpid" 1 && fail "the consumer ended before the producer came"
  "$exe" --role producer --name "$name" --timeout-ms 20000 50 >"$pout" 2>&1 </dev/null &
  ppid_=$!
  gone_within "$ppid_" 600 || fail "the producer still runs after 60 s"
  wait "$ppid_"
  rc=$?
  ppid_=
  [[ $rc -eq 0 ]] || fail "producer: exit status $rc, expected 0"
  gone_within "$cpid" 100 || fail "the consumer still runs 10 s after the producer ended"
  wait "$cpid"
  rc=$?
  cpid=
  [[ $rc -eq 0 ]] || fail "consumer: exit status $rc, expected 0"
  echo "shm_queue: a consumer started 1 s before its producer waited for it: both exit 0"
  exit 0
fi
# (Before it ended at once, it retried every error for 30 s.)
gone_within "$cpid" 200 || fail "still running after 20 s: it waits for a queue that cannot come"
wait "$cpid"
rc=$?
cpid=
[[ $rc -eq 1 ]] || fail "exit status $rc, expected 1"
grep -q "open ${name}-jobs: $error" "$err" || fail "no 'open ${name}-jobs: $error' on stderr"
grep -q "rm /dev/shm${name}-jobs" "$err" || fail "the message does not say to remove /dev/shm${name}-jobs"
[[ -e "/dev/shm${name}-jobs" ]] || fail "the object is gone: the consumer must leave it to the user"
echo "shm_queue: a consumer on a name that holds no queue ($error): exit 1 with what to do"
