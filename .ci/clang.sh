#!/usr/bin/env bash
# The clang that corio is built and tested with beside g++: Debian 12's clang-19 (in
# bookworm main). Prints the C++ compiler's name, or with --package the Debian package.
# Not clang 14 (Debian's default clang): it caches errno's address across co_await at
# -O1 and above (a task resumed on another worker reads the first thread's errno); see
# the README's "Known compiler bugs". Change the version here only.
set -euo pipefail
version=19
if [ "${1:-}" = "--package" ]; then
  echo "clang-$version"
else
  echo "clang++-$version"
fi
