#!/usr/bin/env bash
# Checks that unix_fd_passing leaves no temporary file behind when it cannot open its
# descriptors: it is run under descriptor limits (ulimit -n) from 4 upwards, until one run
# succeeds, with TMPDIR set to an empty folder that is checked empty after every run.
# Under the low limits the runtime, socketpair(), pipe() or mkstemp() fail in turn (which
# ones depends on how many descriptors the runtime opens: its workers), and some limits
# let mkstemp() succeed where socketpair() or pipe() failed. A last run with TMPDIR naming
# a folder that does not exist must fail: the file is made in TMPDIR (else this check
# would watch a folder the example never writes to). Every failed run must say what failed
# (a run whose receiver got too few descriptors once printed an empty answer and no reason).
#   check_fd_passing_files.sh UNIX_FD_PASSING
set -u
exe=$1
top=$(mktemp -d)
dir=$top/tmp
out=$top/out
mkdir "$dir"
trap 'rm -rf "$top"' EXIT
trap 'exit 143' TERM INT  # (a test timeout's SIGTERM runs the EXIT trap too)
failed_runs=0
for ((n = 4; n <= 256; ++n)); do
  # ulimit -c 0: no core file may land anywhere, should a run abort.
  (ulimit -c 0 && ulimit -n "$n" && TMPDIR=$dir exec "$exe") >"$out" 2>&1 </dev/null
  rc=$?
  left=$(ls -A "$dir")
  if [[ -n $left ]]; then
    echo "check_fd_passing_files: under ulimit -n $n (exit status $rc) it left: $left" >&2
    sed 's/^/  | /' "$out" >&2
    exit 1
  fi
  if [[ $rc -eq 0 ]]; then
    break
  fi
  if ! grep -qE "failed|could not|cannot" "$out"; then
    echo "check_fd_passing_files: under ulimit -n $n it failed (exit status $rc) without saying why" >&2
    sed 's/^/  | /' "$out" >&2
    exit 1
  fi
  failed_runs=$((failed_runs + 1))
done
if [[ $rc -ne 0 ]]; then
  echo "check_fd_passing_files: no run succeeded under ulimit -n 4..256" >&2
  exit 1
fi
(ulimit -c 0 && TMPDIR=$top/missing exec "$exe") >"$out" 2>&1 </dev/null
rc2=$?
if [[ $rc2 -ne 1 ]] || ! grep -q "socketpair, pipe or mkstemp failed" "$out"; then
  echo "check_fd_passing_files: with TMPDIR naming no folder: exit status $rc2, expected 1 and" \
    "'socketpair, pipe or mkstemp failed' (is the file still made in TMPDIR?)" >&2
  sed 's/^/  | /' "$out" >&2
  exit 1
fi
echo "unix_fd_passing: $failed_runs runs under descriptor limits 4..$((n - 1)) failed and left no file;" \
  "ulimit -n $n succeeded; a TMPDIR that does not exist fails it"
