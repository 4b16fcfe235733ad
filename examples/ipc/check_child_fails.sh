#!/usr/bin/env bash
# Checks that an example which forks children says at once, and how, when one of them
# dies or fails, and exits 1, instead of waiting for it or printing results that mean
# nothing:
#   NUMBER_AFTER=TEXT EXPECT=TEXT [ACT='kill -KILL'] [REFUSE=TEXT] [LIMIT=5] \
#     [GONE_AFTER=TEXT] check_child_fails.sh EXAMPLE [ARGS...]
# Runs `timeout -k 2 LIMIT EXAMPLE ARGS...` and waits for a line of its stdout that begins
# with NUMBER_AFTER; the number right after that text (a child's pid, a SysV queue id) is
# given to ACT: by default the child is killed with SIGKILL; `ACT='ipcrm -q'` removes the
# queue under the child, which then exits with a code other than 0. The example must then
# end by itself within LIMIT seconds of its start with status 1 (124 or 137: the limit ran
# out, it never noticed), print a line on stderr that contains EXPECT ({n} in it stands for
# the number) and no line on stdout that contains REFUSE. All texts are plain, not regexes.
# For a kill, the number must be a pid above 1 in the example's own process group (and
# not timeout's, which leads the group); a queue id may be any number. Once the example has ended, nothing of its process group may be left (within
# 2 s), and with GONE_AFTER the SysV queue whose id follows that text on stdout (e.g.
# GONE_AFTER='parent: queue id ') must be gone from /proc/sysvipc/msg.
set -u
exe=$1
shift
what=$(basename "$exe")
limit=${LIMIT:-5}
after=${NUMBER_AFTER:?NUMBER_AFTER: the text before the number to act on}
expect=${EXPECT:?EXPECT: what stderr must say}
read -r -a act <<<"${ACT:-kill -KILL}"
out=$(mktemp)
err=$(mktemp)
pid=
group=
cleanup() {
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null  # timeout passes it on: the example removes its names
    for ((j = 0; j < 50; ++j)); do  # up to 5 s to end by itself
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  [[ -n $group ]] && kill -KILL -- -"$group" 2>/dev/null
  rm -f "$out" "$err"
}
trap cleanup EXIT
fail() {
  echo "check_child_fails: $what ($*)" >&2
  sed 's/^/  out | /' "$out" >&2
  sed 's/^/  err | /' "$err" >&2
  exit 1
}
number_after() {  # the number right after TEXT at the start of a line of stdout
  awk -v t="$1" 'index($0, t) == 1 { s = substr($0, length(t) + 1); sub(/[^0-9].*/, "", s); print s; exit }' "$out"
}
group_alive() {  # the live processes of the example's group (kill -0 would count zombies:
  # a helper that outlived the example is reparented to init, which may reap it late)
  ps -eo pid=,pgid=,stat=,args= | awk -v g="$group" '$2 == g && $3 !~ /^Z/ { print $1, $4 }'
}
queue_exists() {  # /proc/sysvipc/msg: key msqid perms ... (one row per queue)
  awk -v id="$1" 'NR > 1 && $2 == id { found = 1 } END { exit !found }' /proc/sysvipc/msg
}

# In a process group of its own, led by timeout (setsid execs it), so that the cleanup
# can end what is left of a failed check.
setsid timeout -k 2 "$limit" "$exe" "$@" >"$out" 2>"$err" </dev/null &
pid=$!
group=$pid
n=
for ((i = 0; i < 10 * limit + 20; ++i)); do  # until the limit (and its -k 2) ends it at the latest
  n=$(number_after "$after")
  [[ -n $n ]] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
[[ -n $n ]] || fail "no line beginning with \"$after\" and a number"
if [[ ${act[0]} == kill ]]; then  # a pid: not 0 or 1, and one of the example's processes
  [[ $n -gt 1 && $n != "$pid" ]] || fail "$n is no child's pid to act on"
  n_group=$(ps -o pgid= -p "$n" | tr -d ' ')
  [[ $n_group == "$pid" ]] || fail "process $n is not in the example's process group $pid (its: ${n_group:-none})"
fi
"${act[@]}" "$n" || fail "${act[*]} $n failed"
wait "$pid"
rc=$?
pid=
[[ $rc -ne 124 && $rc -ne 137 ]] || fail "still running after ${limit} s (exit status $rc): the end of a child went unnoticed"
[[ $rc -eq 1 ]] || fail "exit status $rc, expected 1"
for ((i = 0; i < 20; ++i)); do  # up to 2 s for the rest of the group (a child) to end
  left=$(group_alive)
  [[ -z $left ]] && break
  sleep 0.1
done
[[ -z $left ]] || fail "processes of its group left 2 s after it ended: $left"
group=
if [[ -n ${GONE_AFTER:-} ]]; then
  q=$(number_after "$GONE_AFTER")
  [[ -n $q ]] || fail "no line beginning with \"$GONE_AFTER\" and a queue id"
  ! queue_exists "$q" || { ipcrm -q "$q" 2>/dev/null; fail "SysV queue $q left behind"; }
fi
want=${expect//\{n\}/$n}
grep -qF -- "$want" "$err" || fail "stderr does not say \"$want\""
if [[ -n ${REFUSE:-} ]] && grep -qF -- "$REFUSE" "$out"; then
  fail "stdout says \"$REFUSE\" though a child failed"
fi
echo "$what: after ${act[*]} $n: exit 1, \"$want\", nothing left behind"
