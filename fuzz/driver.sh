#!/bin/sh
# Runs one fuzz target's mutation-loop driver (the stress suite's fuzz tests):
#   driver.sh DRIVER NAME SECONDS
# Seeds: fuzz/seeds/NAME.sh writes them into a temporary folder (when it exists), plus the
# files of fuzz/seeds/NAME/; the dictionary is fuzz/NAME.dict when it exists. A crash input
# is written to the build folder ($FUZZ_ARTIFACTS, default: the working directory).
set -eu
driver=$1 name=$2 seconds=$3
here=$(cd "$(dirname "$0")" && pwd)
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
if [ -x "$here/seeds/$name.sh" ]; then
  "$here/seeds/$name.sh" "$seeds"
fi
set -- --name "$name" --seconds "$seconds" "$seeds"
if [ -d "$here/seeds/$name" ]; then
  set -- "$@" "$here/seeds/$name"
fi
if [ -f "$here/$name.dict" ]; then
  set -- "$@" --dict "$here/$name.dict"
fi
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
exec "$driver" "$@"
