#!/usr/bin/env bash
# Checks result.hpp's rule 4: dropping the result of `co_await` on a result-yielding corio
# awaiter must not compile under -Werror=unused-result. g++ 12 does not diagnose a
# discarded co_await, so the check uses clang++-19 (.ci/clang.sh): the compiler that builds
# corio when it is that clang, else clang++-19 from PATH; without one the test is skipped
# (exit 77). nodiscard/discard.cpp is compiled (syntax only) once per CASE: CASE 0 must
# compile, every other CASE must fail with an unused-result diagnostic.
# Usage: nodiscard_check.sh <source-root> <corio include root> <c++ compiler...>
set -euo pipefail
src=$(cd "$1" && pwd)
inc=$2
shift 2
clang=$("$src/.ci/clang.sh")
if "$@" --version 2>/dev/null | grep -qi clang && [ "$("$@" -dumpversion | cut -d. -f1)" = "${clang#clang++-}" ]; then
  compiler=("$@")
elif command -v "$clang" >/dev/null; then
  compiler=("$clang")
else
  echo "nodiscard check: SKIPPED, $clang is not installed (g++ does not diagnose a discarded co_await)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cases=9
status=0
for c in $(seq 0 "$cases"); do
  if "${compiler[@]}" -std=c++20 -fsyntax-only -Wunused-result -Werror=unused-result -DCASE="$c" \
      -I"$inc" "$src/tests/compiler/nodiscard/discard.cpp" 2>"$work/$c.log"; then
    outcome=compiles
  elif grep -q "Wunused-result\|nodiscard" "$work/$c.log"; then
    outcome=dropped-result-error
  else
    outcome=other-error
  fi
  want=dropped-result-error
  [ "$c" = 0 ] && want=compiles
  echo "nodiscard check: case $c: $outcome"
  if [ "$outcome" != "$want" ]; then
    echo "nodiscard check: case $c should give $want:"
    head -n 30 "$work/$c.log"
    status=1
  fi
done
exit "$status"
