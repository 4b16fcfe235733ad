#!/usr/bin/env bash
# Checks that unix_fd_passing leaves no temporary file behind when it cannot open its
# descriptors: it is run under descriptor limits (ulimit -n) from 4 upwards, each run
# with its own empty TMPDIR, until one run succeeds. Under the low limits the runtime,
# socketpair(), pipe() or mkstemp() fail in turn (which ones depends on how many
# descriptors the runtime opens: its workers), and some limits let mkstemp() succeed
# where socketpair() or pipe() failed. After every run TMPDIR must be empty.
#   check_fd_passing_files.sh UNIX_FD_PASSING
set -u
exe=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
failed_runs=0
for ((n = 4; n <= 256; ++n)); do
  (ulimit -n "$n" && TMPDIR=$dir exec "$exe") >"$dir.out" 2>&1 </dev/null
  rc=$?
  left=$(ls -A "$dir")
  if [[ -n $left ]]; then
    echo "check_fd_passing_files: under ulimit -n $n (exit status $rc) it left: $left" >&2
    sed 's/^/  | /' "$dir.out" >&2
    rm -f "$dir.out"
    exit 1
  fi
  if [[ $rc -eq 0 ]]; then
    rm -f "$dir.out"
    echo "unix_fd_passing: $failed_runs runs under descriptor limits 4..$((n - 1)) failed and left no file; ulimit -n $n succeeded"
    exit 0
  fi
  failed_runs=$((failed_runs + 1))
done
rm -f "$dir.out"
echo "check_fd_passing_files: no run succeeded under ulimit -n 4..256" >&2
exit 1
