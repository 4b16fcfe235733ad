#!/usr/bin/env bash
# Checks examples/ipc/check_names_removed.sh with stand-in examples (bash scripts): one that
# prints its READY line but never makes its name must fail the check, both when it ends by
# itself and when it is stopped by a signal; one that makes its name, prints READY and
# removes the name as it ends must pass, both ways. (Before, a READY line was taken as
# proof that the name existed when the example ended by itself: the first case passed.)
set -u
check="$1/examples/ipc/check_names_removed.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
export NAMES='shm:/corio-check-names-test-{pid}' READY='holding'

# expect WHAT WANT(pass|fail) [MESSAGE] -- CHECK-ARGS...: runs the check, with a stand-in
# example, and compares its outcome (and, for a failure, a line of its message).
expect() {
  local what=$1 want=$2 message=$3
  shift 4
  local got=pass
  bash "$check" "$@" >"$work/log" 2>&1 || got=fail
  if [[ $got == "$want" ]] && { [[ -z $message ]] || grep -qF -- "$message" "$work/log"; }; then
    echo "ok:   $what"
  else
    echo "FAIL: $what: the check ${got}ed${message:+ (wanted a '$message' line)}:"
    sed 's/^/  | /' "$work/log"
    failures=$((failures + 1))
  fi
}

# The stand-ins make /dev/shm/NAME with their own pid, as the examples' default names do.
never_made='echo holding; sleep 1'
made_and_removed='n=/dev/shm/corio-check-names-test-$$; : >"$n"; echo holding; sleep 1; rm -f "$n"'
never_made_on_signal='trap "kill \$!; echo SIGTERM received; exit 1" TERM; echo holding; sleep 30 & wait'
made_and_removed_on_signal='n=/dev/shm/corio-check-names-test-$$; : >"$n"
trap "kill \$!; rm -f \"$n\"; echo SIGTERM received; exit 1" TERM; echo holding; sleep 30 & wait'

expect "at exit: a READY line without the name fails" fail "does not exist" -- bash none 0 -c "$never_made"
expect "at exit: the name made, then removed, passes" pass "" -- bash none 0 -c "$made_and_removed"
expect "on SIGTERM: a READY line without the name fails" fail "does not exist" -- bash TERM 1 -c "$never_made_on_signal"
expect "on SIGTERM: the name made, then removed, passes" pass "" -- bash TERM 1 -c "$made_and_removed_on_signal"

[[ $failures -eq 0 ]]
