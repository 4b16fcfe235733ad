#!/usr/bin/env bash
# Proves that a program outside corio's tree can use it the three ways the README shows,
# each built with g++ and with clang, and each run without LD_LIBRARY_PATH:
#   (a) installed, found with pkg-config: the shared library with an rpath, and the static one;
#   (b) installed, found with CMake: find_package(corio), targets corio::corio and
#       corio::corio_static;
#   (c) as a meson subproject (corio built again by the consumer's compiler).
# Usage: check.sh <source-root> <build-dir> [c++ compiler...]
# The compilers default to `c++` and the clang++ that .ci/deps.sh installs; a compiler
# that is missing is a failure, not a skip.
set -euo pipefail
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
shift 2
compilers=("$@")
if [ ${#compilers[@]} -eq 0 ]; then
  compilers=(c++ "$(bash "$src/.ci/clang.sh")")
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { echo "install check: $*"; }
run_quiet() {  # <log> <command...>: the command's output only when it fails
  local log=$1
  shift
  if ! "$@" >"$log" 2>&1; then
    cat "$log"
    echo "install check: FAILED: $*"
    exit 1
  fi
}

for cxx in "${compilers[@]}"; do
  if ! command -v "$cxx" >/dev/null; then
    echo "install check: compiler '$cxx' not found (bash .ci/deps.sh installs it)"
    exit 1
  fi
done

# The installed copy, under a temporary root with the build's own prefix.
run_quiet "$work/install.log" env DESTDIR="$work/root" meson install -C "$build" --quiet --no-rebuild
pc_file=$(find "$work/root" -name corio.pc | head -n1)
cmake_dir=$(dirname "$(find "$work/root" -name corioConfig.cmake | head -n1)")
prefix=$(sed -n 's/^prefix=//p' "$pc_file")
root_prefix="$work/root$prefix"
# pkg-config as a user runs it after `meson install`, relocated into the temporary root.
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pc_file")
pc() { pkg-config --define-variable=prefix="$root_prefix" "$@"; }

for cxx in "${compilers[@]}"; do
  name=$(basename "$cxx")
  out="$work/$name"
  mkdir -p "$out"

  # (a) pkg-config: shared library found through an rpath, then the static library.
  libdir=$(pc --variable=libdir corio)
  run_quiet "$out/pc.log" "$cxx" -std=c++20 "$src/tests/install/consumer.cpp" -o "$out/pc_shared" \
    $(pc --cflags --libs corio) -Wl,-rpath,"$libdir"
  run_quiet "$out/pc.log" "$out/pc_shared"
  run_quiet "$out/pc.log" "$cxx" -std=c++20 "$src/tests/install/consumer.cpp" -o "$out/pc_static" \
    $(pc --cflags corio) "$libdir/libcorio.a" $(pc --libs --static liburing libcrypto) -pthread
  run_quiet "$out/pc.log" "$out/pc_static"
  if ldd "$out/pc_static" | grep -q libcorio; then
    echo "install check: FAILED: $name pc_static links libcorio dynamically"
    exit 1
  fi
  step "$name: pkg-config consumers (shared with rpath, static) built and ran"

  # (b) CMake: find_package(corio) from the installed package files.
  run_quiet "$out/cmake.log" cmake -S "$src/tests/install" -B "$out/cmake" -G Ninja \
    -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_PREFIX_PATH="$root_prefix"
  if ! grep -q "^corio_DIR:PATH=$cmake_dir\$" "$out/cmake/CMakeCache.txt"; then
    echo "install check: FAILED: CMake did not take corio from the installed copy ($cmake_dir)"
    grep '^corio_DIR' "$out/cmake/CMakeCache.txt" || true
    exit 1
  fi
  run_quiet "$out/cmake.log" cmake --build "$out/cmake"
  run_quiet "$out/cmake.log" "$out/cmake/consumer_shared"
  run_quiet "$out/cmake.log" "$out/cmake/consumer_static"
  step "$name: CMake consumers (corio::corio, corio::corio_static) built and ran"

  # (c) a meson project that uses corio as a subproject (it builds the library again, with
  # this compiler: most of this check's time, about 90 s per compiler on 2 vCPUs uncached).
  mkdir -p "$out/sub/subprojects"
  ln -s "$src" "$out/sub/subprojects/corio"
  cp "$src/tests/install/consumer.cpp" "$out/sub/"
  cat > "$out/sub/meson.build" <<'MESON'
project('consumer', 'cpp', default_options: ['cpp_std=c++20'])
corio_dep = dependency('corio', fallback: ['corio', 'corio_dep'], default_options: ['tests=false', 'examples=false', 'benchmarks=false', 'default_library=static'])
executable('consumer', 'consumer.cpp', dependencies: corio_dep)
MESON
  # With ccache installed, the library's compiles go through it, as .ci/test.sh's builds
  # do (with .ci/test.sh's ccache settings only when run from it; CCACHE_DISABLE=1 turns it
  # off): the same compiler's output, from the cache when this check ran before on the
  # same sources and compiler; the setup, the link and the run are never cached. The
  # temporary folder's name is kept out of the hash: ccache rewrites paths under it
  # (meson's include folder in the build) relative to the build folder, and without -g
  # the working directory is not hashed.
  sub_cxx=$cxx
  if command -v ccache >/dev/null; then
    sub_cxx="ccache $cxx"
  fi
  run_quiet "$out/sub.log" env CXX="$sub_cxx" meson setup "$out/sub/build" "$out/sub" --wrap-mode=forcefallback \
    --buildtype=plain
  run_quiet "$out/sub.log" env CCACHE_BASEDIR="$out/sub" ninja -C "$out/sub/build"
  run_quiet "$out/sub.log" "$out/sub/build/consumer"
  step "$name: meson subproject consumer built and ran"
done
echo "install check: pkg-config, CMake and subproject consumers built with ${compilers[*]} and ran"
