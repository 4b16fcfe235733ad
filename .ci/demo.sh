#!/usr/bin/env bash
# README command 1: install the dependencies, build corio (optimized) and run its demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/deps.sh
if [ ! -f build-demo/build.ninja ]; then
  meson setup build-demo --buildtype=release -Dtests=false -Dbenchmarks=false >/dev/null
fi
ninja -C build-demo examples/demo >/dev/null
exec build-demo/examples/demo "$@"
