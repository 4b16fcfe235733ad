#!/usr/bin/env bash
# Checks the README's "Known compiler bugs" against the compiler that builds corio: each
# program in bugs/ is compiled at -O2 and run, giving `bug` (exit 1), `ok` (exit 0) or
# `no-compile`. For a compiler the README describes, every outcome must be the one the
# README states, so a compiler update that fixes or adds a bug fails here until the README
# is updated; any other compiler's outcomes are printed for the README.
# Usage: known_bugs.sh <source-root> <c++ compiler...>
set -euo pipefail
src=$(cd "$1" && pwd)
shift
compiler=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

version=$("${compiler[@]}" -dumpversion)
major=${version%%.*}
if "${compiler[@]}" --version | grep -qi clang; then
  family=clang
else
  family=gcc
fi

# The README's table, as "<program>=<outcome>" per compiler.
case "$family-$major" in
  gcc-12) expected="ternary_await=bug braced_list_await=no-compile thread_local_await=ok errno_await=ok temporary_and_await=no-compile lambda_capture_await=bug" ;;
  clang-14) expected="ternary_await=ok braced_list_await=ok thread_local_await=bug errno_await=bug temporary_and_await=ok lambda_capture_await=ok" ;;
  clang-16 | clang-19) expected="ternary_await=ok braced_list_await=ok thread_local_await=bug errno_await=ok temporary_and_await=ok lambda_capture_await=ok" ;;
  *) expected="" ;;
esac

outcomes=()
for f in ternary_await braced_list_await thread_local_await errno_await temporary_and_await lambda_capture_await; do
  if ! "${compiler[@]}" -std=c++20 -O2 -pthread "$src/tests/compiler/bugs/$f.cpp" -o "$work/$f" 2>"$work/$f.log"; then
    outcome=no-compile
  elif "$work/$f" >/dev/null; then
    outcome=ok
  else
    outcome=bug
  fi
  outcomes+=("$f=$outcome")
done
echo "known bugs, $family $version: ${outcomes[*]}"
if [ -z "$expected" ]; then
  echo "known bugs: $family $major is not in the README's table; these are its outcomes"
  exit 0
fi
if [ "${outcomes[*]}" != "$expected" ]; then
  echo "known bugs: the README says: $expected"
  echo "known bugs: update the README's \"Known compiler bugs\" (and this script) for $family $major"
  exit 1
fi
echo "known bugs: as the README says"
