#!/usr/bin/env bash
# Checks that sysv_queue, stopped by SIGNAL (INT, TERM) while its queue exists, removes
# the queue (a SysV queue otherwise lasts until reboot) and exits 1, not killed:
#   check_sysv_queue_signal.sh SYSV_QUEUE SIGNAL
set -u
exe=$1
sig=$2
out=$(mktemp)
pid=
id=
cleanup() {
  [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null
  [[ -n $id ]] && ipcrm -q "$id" 2>/dev/null
  rm -f "$out"
}
trap cleanup EXIT
fail() {
  echo "check_sysv_queue_signal: sysv_queue SIG$sig: $*" >&2
  sed 's/^/  | /' "$out" >&2
  exit 1
}
queue_exists() {  # /proc/sysvipc/msg: key msqid perms ... (one row per queue)
  awk -v id="$1" 'NR > 1 && $2 == id { found = 1 } END { exit !found }' /proc/sysvipc/msg
}
"$exe" --hold-ms 60000 10 >"$out" 2>&1 </dev/null &
pid=$!
for ((i = 0; i < 600; ++i)); do  # up to 60 s for a slow or loaded machine
  if grep -q 'queue id' "$out" || ! kill -0 "$pid" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
id=$(sed -n 's/^parent: queue id \([0-9]*\)$/\1/p' "$out")
[[ -n $id ]] || fail "printed no queue id"
queue_exists "$id" || fail "queue $id is not in /proc/sysvipc/msg while it waits"
sleep 0.2
kill -"$sig" "$pid"
for ((i = 0; i < 200; ++i)); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$pid" 2>/dev/null && fail "still running 20 s after SIG$sig"
wait "$pid"
rc=$?
pid=
[[ $rc -eq 1 ]] || fail "exit status $rc, expected 1 (a status above 128 is death by signal $((rc - 128)))"
! queue_exists "$id" || fail "queue $id left behind"
id=
echo "sysv_queue: SIG$sig: exit 1, queue removed"
