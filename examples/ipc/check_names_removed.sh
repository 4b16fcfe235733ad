#!/usr/bin/env bash
# Checks that an example which creates named POSIX objects (shared memory in /dev/shm, a
# message queue) removes every name however it ends, and is never killed by a signal:
#   NAMES='KIND:/NAME ...' [READY=REGEX] [PYTHON=python3] \
#     check_names_removed.sh EXAMPLE SIGNAL|none STATUS [ARGS...]
# Starts `EXAMPLE ARGS...` (in a process group of its own, which is killed at the end of the
# check with whatever children of the example are left) and waits (up to 60 s) until a line of its output matches REGEX
# or, without READY, until every name of NAMES exists. Then it stops the example (SIGSTOP,
# so that it can neither remove a name nor end while we look) and checks that every name
# exists, and lets it go on (SIGCONT): a READY line alone proves nothing. KIND is shm
# (/dev/shm/NAME) or mq (a POSIX message queue: /dev/mqueue/NAME where mounted, else asked
# with mq_open through Python's ctypes); `{pid}` in a NAME stands for the example's process
# id (their default names).
# Then, with a SIGNAL (INT, TERM), sends it and checks that the example prints
# "SIGxxx received", exits within 20 s with STATUS (not killed: a status above 128 is death
# by a signal) and that no name is left. With `none`, the example must end by itself
# within 60 s with STATUS and no name left; it must hold its names long enough after its
# READY line for the check to see the line and stop it (the examples' tests give 5 s).
set -u
exe=$1
sig=$2
want=$3
shift 3
what=$(basename "$exe")
case_name=$([[ $sig == none ]] && echo "ending by itself" || echo "SIG$sig")
out=$(mktemp)
pid=
group=
names=()
cleanup() {
  # The example's process group: the example if still running, and every child it made
  # (a failed check kills a stopped example, whose children its own end would not reach).
  [[ -n $group ]] && kill -9 -- -"$group" 2>/dev/null
  [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null  # (if it had not made its group yet)
  local n
  for n in "${names[@]}"; do remove_name "$n"; done
  rm -f "$out"
}
trap cleanup EXIT
fail() {
  echo "check_names_removed: $what, $case_name: $*" >&2
  tail -n 40 "$out" | sed 's/^/  | /' >&2
  exit 1
}

# mq_open(NAME, O_RDONLY) through ctypes: exit 0 if the queue exists, 1 if not, 3 if the
# question cannot be answered (no mq_open found, another error).
mq_probe() {
  "${PYTHON:-python3}" - "$1" <<'EOF'
import ctypes, ctypes.util, errno, os, sys
name = sys.argv[1].encode()
for lib in (None, ctypes.util.find_library("rt")):
    try:
        c = ctypes.CDLL(lib, use_errno=True)
        mq_open, mq_close = c.mq_open, c.mq_close
        break
    except (OSError, AttributeError):
        continue
else:
    sys.exit(3)
fd = mq_open(name, os.O_RDONLY)
if fd >= 0:
    mq_close(fd)
    sys.exit(0)
err = ctypes.get_errno()
sys.exit(1 if err == errno.ENOENT else 0 if err == errno.EACCES else 3)
EOF
}
mq_mounted() {
  awk '$2 == "/dev/mqueue" && $3 == "mqueue" { found = 1 } END { exit !found }' /proc/mounts
}
name_exists() {  # KIND:/NAME
  local kind=${1%%:*} name=${1#*:}
  case $kind in
    shm) [[ -e /dev/shm$name ]] ;;
    mq)
      if mq_mounted; then
        [[ -e /dev/mqueue$name ]]
      else
        mq_probe "$name"
        local rc=$?
        [[ $rc -le 1 ]] || fail "cannot tell whether message queue $name exists (mq_open through ${PYTHON:-python3})"
        return $rc
      fi
      ;;
    *) fail "unknown kind of name '$1'" ;;
  esac
}
remove_name() {  # what the example left behind, so that a failed check leaves nothing
  local kind=${1%%:*} name=${1#*:}
  case $kind in
    shm) rm -f "/dev/shm$name" ;;
    mq) "${PYTHON:-python3}" -c 'import ctypes, sys; ctypes.CDLL(None).mq_unlink(sys.argv[1].encode())' "$name" \
          2>/dev/null ;;
  esac
}
# gone_within PID TENTHS (with 0, looks once).
. "$(dirname "${BASH_SOURCE[0]}")/../common/gone_within.sh"
# Waits up to $2 tenths of a second until every thread of process $1 is stopped (state T:
# kill -STOP returns before the threads have stopped): 0; 1 if they are not by then; 2 if
# the process has ended.
stopped_within() {
  local i state others
  for ((i = 0; i <= $2; ++i)); do
    # (The state follows the name in parentheses, which may hold spaces.)
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $1}')
    [[ -z $state || $state == Z ]] && return 2
    others=$(cat /proc/"$1"/task/*/stat 2>/dev/null | sed 's/.*) //' | awk '$1 != "T" { n++ } END { print n + 0 }')
    [[ $others -eq 0 ]] && return 0
    ((i < $2)) && sleep 0.1
  done
  return 1
}

# In a session and process group of its own, whose id is its pid (setsid execs it: a
# background job of this script leads no group, so setsid does not fork), so that the
# cleanup can end its children with it. The signals of the check go to its pid alone.
setsid "$exe" "$@" >"$out" 2>&1 </dev/null &
pid=$!
group=$pid
read -r -a patterns <<<"${NAMES:?NAMES lists the names to check}"
for n in "${patterns[@]}"; do names+=("${n//\{pid\}/$pid}"); done
all_exist() {
  local n
  for n in "${names[@]}"; do name_exists "$n" || return 1; done
}
# Ready: the READY line is out (the examples print it once their names exist) or, without
# READY, every name exists.
for ((i = 0; i < 600; ++i)); do  # up to 60 s for a slow or loaded machine
  # Exited (a zombie until waited for): it will not get there. Looked at first, so that
  # the output looked at next is all there will be: an example that ends right after its
  # READY line is told apart (below) from one that never printed it.
  ended=
  gone_within "$pid" 0 && ended=1
  if [[ -n ${READY:-} ]]; then
    grep -Eq "$READY" "$out" && ready=1 && break
  elif all_exist; then
    ready=1
    break
  fi
  [[ -n $ended ]] && break
  sleep 0.1
done
waited_for=${names[*]}
[[ -n ${READY:-} ]] && waited_for="a line matching '$READY'"
[[ -n ${ready:-} ]] || fail "never had $waited_for (running: $(kill -0 "$pid" 2>/dev/null && echo yes || echo no))"
# Every name exists now, looked at with the example stopped: an example that ends soon
# after its READY line (`none`) cannot remove its names before a slow look (a Python
# process per message queue) finds them, and one that never made them fails here.
kill -STOP "$pid" 2>/dev/null  # (an example already ended is told below)
stopped_within "$pid" 100
case $? in
  0) ;;
  2) fail "ended before it could be stopped (READY seen too late: is its hold long enough?)" ;;
  *) fail "not stopped 10 s after SIGSTOP" ;;
esac
for n in "${names[@]}"; do
  name_exists "$n" || fail "${n#*:} does not exist${READY:+ after the line matching '$READY'}"
done
kill -CONT "$pid"

if [[ $sig == none ]]; then
  gone_within "$pid" 600 || fail "still running after 60 s"
else
  kill -"$sig" "$pid"
  gone_within "$pid" 200 || fail "still running 20 s after SIG$sig"
fi
wait "$pid"
rc=$?
pid=
[[ $rc -eq $want ]] || fail "exit status $rc, expected $want (a status above 128 is death by signal $((rc - 128)))"
if [[ $sig != none ]]; then
  grep -q "SIG$sig received" "$out" || fail "no 'SIG$sig received' line"
fi
for n in "${names[@]}"; do
  ! name_exists "$n" || fail "${n#*:} left behind"
done
echo "$what, $case_name: exit $rc, ${names[*]} removed"
