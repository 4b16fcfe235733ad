#!/usr/bin/env bash
# Proves the one include scheme (#include <corio/...>) works (a) installed, found through
# pkg-config, and (b) as a meson subproject. Usage: check.sh <source-root> <build-dir>
set -euo pipefail
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# (a) installed copy in a temporary root, consumed with pkg-config.
DESTDIR="$work/root" meson install -C "$build" --quiet --no-rebuild >/dev/null
pcdir=$(dirname "$(find "$work/root" -name corio.pc | head -n1)")
prefix_libdir=$(dirname "$pcdir")
export PKG_CONFIG_PATH="$pcdir"
export PKG_CONFIG_SYSROOT_DIR="$work/root"
c++ -std=c++20 "$src/tests/install/consumer.cpp" -o "$work/installed" $(pkg-config --cflags --libs corio)
LD_LIBRARY_PATH="$prefix_libdir" "$work/installed"
unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR

# (b) a meson project that uses corio as a subproject.
mkdir -p "$work/sub/subprojects"
ln -s "$src" "$work/sub/subprojects/corio"
cp "$src/tests/install/consumer.cpp" "$work/sub/"
cat > "$work/sub/meson.build" <<'MESON'
project('consumer', 'cpp', default_options: ['cpp_std=c++20'])
corio_dep = dependency('corio', fallback: ['corio', 'corio_dep'], default_options: ['tests=false', 'examples=false', 'benchmarks=false', 'default_library=static'])
executable('consumer', 'consumer.cpp', dependencies: corio_dep)
MESON
meson setup "$work/sub/build" "$work/sub" --wrap-mode=forcefallback >/dev/null
ninja -C "$work/sub/build" >/dev/null
"$work/sub/build/consumer"
echo "install check: installed (pkg-config) and subproject consumers both built and ran"
