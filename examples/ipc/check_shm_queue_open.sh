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
# and, with MAKE_SHM_QUEUE (make_shm_queue.cpp), on queues another program made, whose
# messages cannot hold what this example sends through them:
#   ... small-jobs MAKE_SHM_QUEUE      NAME-jobs holds messages of at most 1 byte (one of
#                                      1 byte queued, then closed); NAME-results is fine
#   ... small-results MAKE_SHM_QUEUE   NAME-results holds at most 1 byte; NAME-jobs is
#                                      fine (one job queued, then closed)
#     the consumer exits 1 at once, saying that it is not this example's queue and to
#     remove it, before it receives (it used to read 8 bytes out of a 1-byte buffer and
#     square what lay beyond), and leaves both queues alone
#   ... short-job MAKE_SHM_QUEUE       NAME-jobs (8-byte messages, a job's size) holds one
#                                      message of 1 byte, then is closed: the consumer
#                                      exits 1 naming the length (it used to square stale
#                                      bytes of its buffer)
#   ... short-answer MAKE_SHM_QUEUE    a producer (no consumers, 1 job) receives a 1-byte
#                                      message on NAME-results: it exits 1 naming the
#                                      length (it used to add stale bytes to its sum), and
#                                      removes both names
set -u
exe=$1
what=$2
make=${3:-}
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
  small-jobs | small-results | short-job | short-answer) [[ -x $make ]] || { echo "$what needs MAKE_SHM_QUEUE" >&2; exit 2; } ;;
  *) echo "unknown mode '$what'" >&2; exit 2 ;;
esac
# make_shm_queue ARGS..., failing the check if it fails.
queue() { "$make" "$@" 2>>"$err" || fail "make_shm_queue $* failed"; }

if [[ $what == short-answer ]]; then
  "$exe" --role producer --name "$name" --consumers 0 --timeout-ms 20000 1 >"$pout" 2>&1 </dev/null &
  ppid_=$!
  for ((i = 0; i < 200; ++i)); do  # its line comes once both queues are made
    grep -q 'jobs through' "$pout" && break
    sleep 0.1
  done
  queue send "${name}-results" 1
  gone_within "$ppid_" 100 || fail "the producer still runs 10 s after the short answer"
  wait "$ppid_"
  rc=$?
  ppid_=
  [[ $rc -eq 1 ]] || fail "producer: exit status $rc, expected 1"
  grep -q "producer: receive from ${name}-results: a message of 1 bytes, an answer takes 24" "$pout" ||
    fail "producer: no 'receive from ${name}-results: a message of 1 bytes, an answer takes 24'"
  [[ -e "/dev/shm${name}-jobs" || -e "/dev/shm${name}-results" ]] && fail "the producer left its names behind"
  echo "shm_queue: a producer that receives a 1-byte answer: exit 1, naming its length"
  exit 0
fi
# The queues another program made (8 bytes: a job; 24: an answer), NAME-jobs closed
# after its one message so that a consumer that takes it ends.
case $what in
  small-jobs) queue create "${name}-jobs" 1; queue send "${name}-jobs" 1; queue create "${name}-results" 24 ;;
  small-results) queue create "${name}-jobs" 8; queue send "${name}-jobs" 8; queue create "${name}-results" 1 ;;
  short-job) queue create "${name}-jobs" 8; queue send "${name}-jobs" 1; queue create "${name}-results" 24 ;;
esac
[[ $what == small-* || $what == short-job ]] && queue close "${name}-jobs"

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
if [[ $what == short-job ]]; then
  grep -q "consumer: receive from ${name}-jobs: a message of 1 bytes, a job takes 8" "$err" ||
    fail "no 'receive from ${name}-jobs: a message of 1 bytes, a job takes 8' on stderr"
  echo "shm_queue: a consumer that receives a 1-byte job: exit 1, naming its length"
  exit 0
fi
if [[ $what == small-* ]]; then
  small=${name}-${what#small-}
  size=$([[ $what == small-jobs ]] && echo "a job takes 8" || echo "an answer takes 24")
  grep -q "consumer: open $small: its messages hold at most 1 bytes, $size: not this example's queue" "$err" ||
    fail "no 'open $small: its messages hold at most 1 bytes, $size: not this example's queue' on stderr"
  grep -q "rm /dev/shm$small" "$err" || fail "the message does not say to remove /dev/shm$small"
  [[ -e "/dev/shm${name}-jobs" && -e "/dev/shm${name}-results" ]] || fail "a queue is gone: the consumer must leave them"
  echo "shm_queue: a consumer on $small whose messages hold 1 byte: exit 1 with what to do"
  exit 0
fi
grep -q "open ${name}-jobs: $error" "$err" || fail "no 'open ${name}-jobs: $error' on stderr"
grep -q "rm /dev/shm${name}-jobs" "$err" || fail "the message does not say to remove /dev/shm${name}-jobs"
[[ -e "/dev/shm${name}-jobs" ]] || fail "the object is gone: the consumer must leave it to the user"
echo "shm_queue: a consumer on a name that holds no queue ($error): exit 1 with what to do"
