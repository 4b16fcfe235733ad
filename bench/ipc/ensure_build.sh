#!/usr/bin/env bash
# Makes sure a release build folder can run the ipc benchmarks: sets it up if missing
# (release, examples and benchmarks on, tests off), turns the examples and benchmarks on
# if a reused folder has them off, then builds the given targets.
#   bash bench/ipc/ensure_build.sh BUILD_DIR TARGET...
set -euo pipefail
build=$1
shift
cd "$(dirname "$0")/../.."
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --buildtype=release -Dtests=false -Dexamples=true -Dbenchmarks=true >/dev/null
elif ! meson introspect "$build" --buildoptions | python3 -c '
import json, sys
opts = {o["name"]: o["value"] for o in json.load(sys.stdin)}
sys.exit(0 if opts.get("examples") and opts.get("benchmarks") else 1)'; then
  meson configure "$build" -Dexamples=true -Dbenchmarks=true >/dev/null
fi
ninja -C "$build" "$@" >/dev/null
