#!/usr/bin/env bash
# Checks how the examples end when the runtime cannot start (examples/common/main_guard.hpp):
#   check_runtime_refused.sh REFUSE_IO_URING EXAMPLE [ARGS...] [:: EXAMPLE [ARGS...]]...
# Runs each EXAMPLE with its ARGS (a line that would otherwise run normally) under
# REFUSE_IO_URING (refuse_io_uring.cpp: a seccomp filter that answers io_uring_setup with
# EPERM) and checks: it exits with status 1 (not killed by SIGABRT, status 134, or any
# other signal), within 20 s; its stderr has a line `EXAMPLE: ...io_uring...` (the
# example's name, then why the runtime did not start); no "terminate called" (an
# exception that escaped main()); no "listening" on stdout (a server announces its address,
# which tests and users wait for, only once a runtime will serve it); and no file left in
# TMPDIR (an empty folder: mmap_server makes its file there before the runtime).
# Exit status 77 (skipped) where the seccomp filter cannot be installed.
set -u
ulimit -c 0 2>/dev/null  # an example that aborts (the failure checked for) leaves no core file
refuse=$1
shift
failures=0
top=$(mktemp -d)
out=$top/out
err=$top/err
tmp=$top/tmp
mkdir "$tmp"
trap 'rm -rf "$top"' EXIT

if ! "$refuse" true >/dev/null 2>"$err"; then
  echo "SKIP: the seccomp filter cannot be installed here: $(head -c 300 "$err")"
  exit 77
fi

check() {  # check EXAMPLE [ARGS...]
  local name what a
  name=$(basename "$1")
  what=$name
  for a in "${@:2}"; do what+=" '$a'"; done
  # -k: an example that blocks SIGTERM (shutdown_signals() before its runtime) and hangs
  # is killed 5 s later, so one hang fails its own line, not the whole check at meson's limit.
  TMPDIR=$tmp timeout -k 5 20 "$refuse" "$@" >"$out" 2>"$err" </dev/null
  local rc=$?
  local left
  left=$(ls -A "$tmp")
  rm -rf "$tmp" && mkdir "$tmp"
  if [[ $rc -ne 1 ]]; then
    local why="status $rc, expected 1"
    ((rc == 124 || rc == 137)) && why+=" (still running after 20 s)"
    ((rc > 128 && rc != 255)) && why+=" (killed by signal $((rc - 128)): $(kill -l $((rc - 128)) 2>/dev/null))"
    echo "FAIL: $what: $why; stderr: $(head -c 400 "$err")"
    failures=$((failures + 1))
  elif grep -q 'terminate called' "$err"; then
    echo "FAIL: $what: an exception escaped main(); stderr: $(head -c 400 "$err")"
    failures=$((failures + 1))
  elif grep -q 'listening' "$out"; then
    echo "FAIL: $what: announced a listener that no runtime serves: $(grep -m 1 'listening' "$out")"
    failures=$((failures + 1))
  elif ! grep -q "^$name: .*io_uring" "$err"; then
    echo "FAIL: $what: no line '$name: ...io_uring...' on stderr; stderr: $(head -c 400 "$err")"
    failures=$((failures + 1))
  elif [[ -n $left ]]; then
    echo "FAIL: $what: left in TMPDIR: $left"
    failures=$((failures + 1))
  else
    echo "ok:   $what -> $(grep -m 1 "^$name: .*io_uring" "$err")"
  fi
}

line=()
for a in "$@"; do
  if [[ $a == "::" ]]; then
    [[ ${#line[@]} -eq 0 ]] || check "${line[@]}"
    line=()
  else
    line+=("$a")
  fi
done
if [[ ${#line[@]} -gt 0 ]]; then
  check "${line[@]}"
fi
if [[ $failures -ne 0 ]]; then
  echo "$failures example(s) did not end cleanly without a runtime"
  exit 1
fi
