#!/usr/bin/env bash
# Checks that an over-aligned task result does not compile (runtime/task.hpp,
# runtime/detail/join_state.hpp): a coroutine frame, and the promise in it, is aligned to
# 16 bytes only, so such a result would be stored misaligned. over_aligned/result.cpp is
# compiled (syntax only) with the build's compiler once per CASE: CASE 0 must compile,
# CASES 1 and 2 must fail with corio's "over-aligned" static_assert (case 2 with the join
# state's, which spawn() instantiates besides the task's).
# Usage: over_aligned_check.sh <source-root> <corio include root> <c++ compiler...>
set -euo pipefail
src=$(cd "$1" && pwd)
inc=$2
shift 2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for c in 0 1 2; do
  if "$@" -std=c++20 -fsyntax-only -DCASE="$c" -I"$inc" "$src/tests/compiler/over_aligned/result.cpp" \
      2>"$work/$c.log"; then
    outcome=compiles
  elif grep -q "cannot be over-aligned" "$work/$c.log" &&
      { [ "$c" != 2 ] || grep -q "spawned task's result type cannot be over-aligned" "$work/$c.log"; }; then
    outcome=refused  # (case 2 by the join state's own assert, not only the task's)
  else
    outcome=other-error
  fi
  want=refused
  [ "$c" = 0 ] && want=compiles
  echo "over-aligned check: case $c: $outcome"
  if [ "$outcome" != "$want" ]; then
    echo "over-aligned check: case $c should give $want:"
    head -n 30 "$work/$c.log"
    status=1
  fi
done
exit $status
