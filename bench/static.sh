#!/usr/bin/env bash
# Builds the scaling benchmarks as fully static executables (glibc, libstdc++, liburing and
# libcrypto linked in: meson's -Dstatic_bench=true) and the Tokio peer as a static-pie
# (glibc crt-static), and gathers them with bench/scale.sh, bench/results.sh, bench/serve.sh and
# bench/report.sh into one folder that runs on any x86-64 Linux with a kernel new enough
# for io_uring, without Debian's packages:
#
#   bash bench/static.sh [BUILD_DIR, default build-static]    # writes BUILD_DIR/dist/
#   cd BUILD_DIR/dist && bash scale.sh                        # here or on the other machine
#
# Without the Tokio peer (no cargo, or Debian's Tokio crates cannot be installed), the
# folder holds corio's side alone and says so on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-static}
bash .ci/deps.sh
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --buildtype=release -Ddefault_library=static -Dprefer_static=true -Dstatic_bench=true \
    -Dtests=false -Dexamples=true -Dbenchmarks=true >/dev/null
fi
targets=(bench/runtime/runtime_bench bench/sync/sync_bench examples/echo_server bench/ipc/echo_load)
nice ninja -C "$build" "${targets[@]}" >/dev/null
dist=$build/dist
rm -rf "$dist"
mkdir -p "$dist"
for t in "${targets[@]}"; do
  cp "$build/$t" "$dist/"
done
cp bench/scale.sh bench/results.sh bench/serve.sh bench/report.sh "$dist/"
tokio_log=$(mktemp)
trap 'rm -f "$tokio_log"' EXIT
if tokio=$(bash bench/tokio/build.sh --static 2>"$tokio_log"); then
  cp "$tokio" "$dist/tokio_bench"
else
  echo "# static tokio peer not built, the folder holds corio alone: $(grep -v '^ *$' "$tokio_log" | tail -n 1)" >&2
fi
# Nothing may need a shared library at run time.
for exe in "$dist"/*; do
  [ -x "$exe" ] && [ "${exe%.sh}" = "$exe" ] || continue
  if readelf -d "$exe" 2>/dev/null | grep -q NEEDED; then
    echo "static.sh: $exe needs shared libraries:" >&2
    readelf -d "$exe" | grep NEEDED >&2
    exit 1
  fi
done
echo "$dist"
