#!/usr/bin/env bash
# Checks examples/ipc/check_names_removed.sh with stand-in examples (bash scripts): one that
# prints its READY line but never makes its name must fail the check, both when it ends by
# itself and when it is stopped by a signal; one that makes its name, prints READY and
# removes the name as it ends must pass, both ways. (Before, a READY line was taken as
# proof that the name existed when the example ended by itself: the first case passed.)
# One that ends right after its READY line, before the check stops it, fails with a message
# of its own. After each check no process the stand-in started may be left: the check ends the
# example's whole process group, children included (before, a failed check killed the
# stand-in's bash with SIGKILL and left its `sleep` running).
set -u
check="$1/examples/ipc/check_names_removed.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
export NAMES='shm:/corio-check-names-test-{pid}' READY='holding'
# The stand-ins' children carry this as their command line (exec -a), so that any left
# over can be found.
marker="corio-names-check-test-child-$$"

# marked PID: PID's command line is the marker and it is not on its way out (no SIGKILL
# pending). (A zombie's command line is empty.)
marked() {
  local key mask
  [[ $({ tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null) == "$marker "* ]] || return 1
  # SIGKILL (signal 9: bit 0x100) pending for the process or one of its threads.
  while read -r key mask; do
    [[ $key == SigPnd: || $key == ShdPnd: ]] && (((0x$mask & 0x100) != 0)) && return 1
  done < <(cat "/proc/$1/status" /proc/"$1"/task/*/status 2>/dev/null)
  return 0
}

# The marked processes that are still there 0.5 s later: what a check left running. (A
# process whose SIGKILL was already taken, so none is pending, keeps its command line
# until it has let go of its memory; the second look no longer finds it.)
leftovers() {
  local f p seen=()
  for f in /proc/[0-9]*/cmdline; do
    p=${f#/proc/}
    p=${p%/cmdline}
    marked "$p" && seen+=("$p")
  done
  ((${#seen[@]} > 0)) || return 0
  sleep 0.5
  for p in "${seen[@]}"; do
    marked "$p" && echo "$p"
  done
}

# expect WHAT WANT(pass|fail) [MESSAGE] -- CHECK-ARGS...: runs the check, with a stand-in
# example, and compares its outcome (and, for a failure, a line of its message). With
# retry_on=OTHER set, a failure with a line OTHER instead is rerun, up to 3 times: for an
# outcome that depends on a race the check can lose (the other failure is no pass either).
expect() {
  local what=$1 want=$2 message=$3
  shift 4
  local got tries=0
  while :; do
    got=pass
    bash "$check" "$@" >"$work/log" 2>&1 || got=fail
    tries=$((tries + 1))
    [[ -n ${retry_on:-} && $got == fail && $tries -le 3 ]] && grep -qF -- "$retry_on" "$work/log" || break
    echo "note: $what: the check failed with '$retry_on' instead; again"
  done
  if [[ $got == "$want" ]] && { [[ -z $message ]] || grep -qF -- "$message" "$work/log"; }; then
    echo "ok:   $what"
  else
    echo "FAIL: $what: the check ${got}ed${message:+ (wanted a '$message' line)}:"
    sed 's/^/  | /' "$work/log"
    failures=$((failures + 1))
  fi
  local left
  left=$(leftovers)
  if [[ -n $left ]]; then
    echo "FAIL: $what: the check left the stand-in's children running:"
    ps -o pid,pgid,stat,args -p "$(echo $left | tr ' ' ,)" | sed 's/^/  | /'
    kill -9 $left 2>/dev/null  # (ours, by pid)
    failures=$((failures + 1))
  fi
}

# The stand-ins make /dev/shm/NAME with their own pid, as the examples' default names do;
# their sleeps are children named by the marker.
# (5 s, as the examples' at-exit tests hold theirs: the check must see READY and stop the
# stand-in before it ends.)
hold="(exec -a $marker sleep 5)"
never_made="echo holding; $hold"
made_and_removed='n=/dev/shm/corio-check-names-test-$$; : >"$n"; echo holding; '"$hold"'; rm -f "$n"'
never_made_on_signal='trap "kill \$!; echo SIGTERM received; exit 1" TERM; echo holding; '"(exec -a $marker sleep 30) & wait"
made_and_removed_on_signal='n=/dev/shm/corio-check-names-test-$$; : >"$n"
trap "kill \$!; rm -f \"$n\"; echo SIGTERM received; exit 1" TERM; echo holding; '"(exec -a $marker sleep 30) & wait"

expect "at exit: a READY line without the name fails" fail "does not exist" -- bash none 0 -c "$never_made"
expect "at exit: the name made, then removed, passes" pass "" -- bash none 0 -c "$made_and_removed"
# (The check may read "holding" before the stand-in has ended, stop it alive and fail with
# "does not exist": then it is run again.)
retry_on="does not exist" expect "at exit: one that ends before it can be stopped fails, saying so" fail \
  "ended before it could be stopped" -- bash none 0 -c 'echo holding'
expect "on SIGTERM: a READY line without the name fails" fail "does not exist" -- bash TERM 1 -c "$never_made_on_signal"
expect "on SIGTERM: the name made, then removed, passes" pass "" -- bash TERM 1 -c "$made_and_removed_on_signal"

[[ $failures -eq 0 ]]
