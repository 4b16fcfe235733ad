#!/usr/bin/env bash
# Checks what a shm_queue producer does when one of its names exists already (left by a
# killed run, say):
#   check_shm_queue_create.sh SHM_QUEUE jobs      NAME-jobs exists
#   check_shm_queue_create.sh SHM_QUEUE results   NAME-results exists
#     the producer exits 1 at once, naming the name and saying to remove it (or to pick
#     another --name); it leaves that object as it was, and removes the other name if
#     it created it
set -u
exe=$1
which=$2
name=/corio-check-create-$$
err=$(mktemp)
ppid_=
cleanup() {
  [[ -n $ppid_ ]] && kill -9 "$ppid_" 2>/dev/null
  rm -f "$err" "/dev/shm${name}-jobs" "/dev/shm${name}-results"
}
trap cleanup EXIT
fail() {
  echo "check_shm_queue_create: stale ${name}-$which: $*" >&2
  sed 's/^/  producer | /' "$err" >&2
  exit 1
}
. "$(dirname "${BASH_SOURCE[0]}")/../common/gone_within.sh"

case $which in
  jobs | results) ;;
  *) echo "unknown mode '$which'" >&2; exit 2 ;;
esac
stale=/dev/shm${name}-$which
other=/dev/shm${name}-$([[ $which == jobs ]] && echo results || echo jobs)
printf 'left by an earlier run\n' >"$stale" || exit 77

"$exe" --role producer --name "$name" --timeout-ms 20000 10 >/dev/null 2>"$err" </dev/null &
ppid_=$!
gone_within "$ppid_" 100 || fail "still running after 10 s"
wait "$ppid_"
rc=$?
ppid_=
[[ $rc -eq 1 ]] || fail "exit status $rc, expected 1"
grep -q "create ${name}-$which: .*the name is taken" "$err" || fail "no 'create ${name}-$which: ... the name is taken' on stderr"
grep -q "rm $stale" "$err" || fail "the message does not say to remove $stale"
grep -q -- "another --name" "$err" || fail "the message does not offer another --name"
[[ $(cat "$stale" 2>/dev/null) == 'left by an earlier run' ]] || fail "$stale is gone or changed: the producer must leave it to the user"
[[ -e $other ]] && fail "$other is left behind: the producer created it, and must remove it"
echo "shm_queue: a producer whose name ${name}-$which exists exits 1, saying to remove it, and leaves it alone"
