#!/usr/bin/env bash
# Checks that an example which forks children says at once, and how, when one of them
# dies or fails, and exits 1, instead of waiting for it or printing results that mean
# nothing:
#   NUMBER_AFTER=TEXT EXPECT=TEXT [ACT='kill -KILL'] [REFUSE=TEXT] [LIMIT=5] \
#     check_child_fails.sh EXAMPLE [ARGS...]
# Runs `timeout -k 2 LIMIT EXAMPLE ARGS...` and waits for a line of its stdout that begins
# with NUMBER_AFTER; the number right after that text (a child's pid, a SysV queue id) is
# given to ACT: by default the child is killed with SIGKILL; `ACT='ipcrm -q'` removes the
# queue under the child, which then exits with a code other than 0. The example must then
# end by itself within LIMIT seconds of its start with status 1 (124 or 137: the limit ran
# out, it never noticed), print a line on stderr that contains EXPECT ({n} in it stands for
# the number) and no line on stdout that contains REFUSE. All texts are plain, not regexes.
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
cleanup() {
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null  # timeout passes it on: the example removes its names
    sleep 1
    kill -KILL -- -"$pid" 2>/dev/null
  fi
  rm -f "$out" "$err"
}
trap cleanup EXIT
fail() {
  echo "check_child_fails: $what ($*)" >&2
  sed 's/^/  out | /' "$out" >&2
  sed 's/^/  err | /' "$err" >&2
  exit 1
}

# In a process group of its own, led by timeout (setsid execs it), so that the cleanup
# can end what is left of a failed check.
setsid timeout -k 2 "$limit" "$exe" "$@" >"$out" 2>"$err" </dev/null &
pid=$!
n=
for ((i = 0; i < 10 * limit + 20; ++i)); do  # until the limit (and its -k 2) ends it at the latest
  n=$(awk -v t="$after" 'index($0, t) == 1 { s = substr($0, length(t) + 1); sub(/[^0-9].*/, "", s); print s; exit }' "$out")
  [[ -n $n ]] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
[[ -n $n ]] || fail "no line beginning with \"$after\" and a number"
"${act[@]}" "$n" || fail "${act[*]} $n failed"
wait "$pid"
rc=$?
pid=
[[ $rc -ne 124 && $rc -ne 137 ]] || fail "still running after ${limit} s (exit status $rc): the end of a child went unnoticed"
[[ $rc -eq 1 ]] || fail "exit status $rc, expected 1"
want=${expect//\{n\}/$n}
grep -qF -- "$want" "$err" || fail "stderr does not say \"$want\""
if [[ -n ${REFUSE:-} ]] && grep -qF -- "$REFUSE" "$out"; then
  fail "stdout says \"$REFUSE\" though a child failed"
fi
echo "$what: after ${act[*]} $n: exit 1, \"$want\""
