#!/usr/bin/env bash
# README command 2: install the dependencies, then build and run every test suite:
#   1. default (debug, -O0) build: unit, stress, examples, install and docs suites
#   2. optimized (release, NDEBUG via the project's b_ndebug=if-release) build: unit and
#      examples suites; the misuse tests check the documented release behaviour (the
#      stress suite runs in the default and both sanitizer builds; left out here to keep
#      the run short)
#   3. AddressSanitizer + UndefinedBehaviorSanitizer build: unit, stress and examples suites
#      (the examples, many of them several processes, run instrumented too)
#   4. ThreadSanitizer build: unit and stress suites
#   5. clang (.ci/clang.sh), optimized: unit and examples suites
# Compiles go through ccache where it is installed (below; CORIO_CCACHE=0: without).
# First, tools/check_layers.sh: no include crosses the layering rules (README, design);
# tools/check_sizes.sh: no library .cpp over 500 lines, no function over 60 without a reason.
# Build folders live under build-ci/ and are reused by later runs.
# To add a configuration: one run_suites line. To add a check that is not a meson suite:
# one run_step line (it counts as one test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/deps.sh

jobs=${CORIO_JOBS:-$(nproc)}

# A UBSan report fails the test whose program made it, as an ASan report does: the sanitizer
# builds compile without -fno-sanitize-recover, so by default a program that hits undefined
# behaviour prints "runtime error" and goes on, and its test passes unless a check reads its
# stderr (Debian 12's meson, 1.0, sets no UBSAN_OPTIONS of its own). halt_on_error=1: the
# program exits with status 1 at the first report. (The asan-ubsan stage and the fuzz
# targets are the ones built with UBSan; fuzz/driver.sh takes the same setting.)
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

# Compiler cache. Five full builds are most of this command's time; with ccache (installed
# by .ci/deps.sh) a later run on the same machine, from a fresh clone in any folder too,
# compiles again only what changed (ninja still links what changed; the fuzz targets call
# clang directly and are not cached; the install suite's consumer builds of the library go
# through ccache too, tests/install/check.sh).
# meson puts ccache in front of the default compiler by itself; the clang build names it
# (below). Settings, per ccache's manual: paths under the checkout are hashed relative to
# the build folder and the working directory is left out of the hash (so another folder
# hits; the debug info then names the folder that first compiled a file). Direct mode, not
# depend mode: g++'s -MD list leaves out the headers inside a precompiled header, so depend
# mode would reuse a test object after a corio header changed (tried: it did). Precompiled
# headers are cacheable only with sloppiness pch_defines,time_macros, under which a .gch
# whose headers changed in a #define alone could come back from the cache. So: corio's
# headers define no macros (the check below turns pch_defines off, and with it the caching
# of the precompiled header's users, should one start to), and the versions of the Debian
# packages whose headers it includes are hashed into every compile (an update of one
# compiles everything again; a compiler's own update is seen by ccache itself). The clang
# build has no precompiled header: a clang .pch names its headers by absolute path, and
# one cached from a checkout in another folder includes them twice (tried). CORIO_CCACHE=0
# runs without the cache (every compile runs, as where ccache is not installed).
clang_cxx=$(bash .ci/clang.sh)
headers_record=""
if command -v ccache >/dev/null; then
  clang_cxx="ccache $clang_cxx"
  if [ "${CORIO_CCACHE:-1}" = 0 ]; then
    export CCACHE_DISABLE=1
  else
    cache_dir=$(ccache -k cache_dir 2>/dev/null || true)
    if [ -z "$cache_dir" ] || ! mkdir -p "$cache_dir" 2>/dev/null || [ ! -w "$cache_dir" ]; then
      export CCACHE_DIR="/var/tmp/corio-ccache-$(id -u)"  # no usable home for ccache's own
    fi
    unset CCACHE_DEPEND CCACHE_NODIRECT  # direct mode, whatever ccache.conf or the caller says
    export CCACHE_NODEPEND=1 CCACHE_DIRECT=1 CCACHE_COMPILERCHECK=mtime
    export CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=true
    mkdir -p build-ci
    dpkg-query -W catch2 liburing-dev libexpected-dev libssl-dev libc6-dev linux-libc-dev \
      libstdc++-12-dev >build-ci/ccache-packages.txt 2>&1 || true
    export CCACHE_EXTRAFILES=$PWD/build-ci/ccache-packages.txt
    if grep -rqsE '^[[:space:]]*#[[:space:]]*(define|undef)|(push|pop)_macro' --include='*.hpp' \
      --include='*.h' corio.hpp runtime sync ipc tests/support/pch; then
      echo "corio: a header defines a macro: the precompiled header's users are not cached"
      export CCACHE_SLOPPINESS=time_macros
    else
      export CCACHE_SLOPPINESS=pch_defines,time_macros
    fi
    # A change of comments alone. When the direct-mode lookup misses, ccache looks up the
    # preprocessed text, which comments do not reach: after the public headers' comments
    # changed (their line counts kept) it found the tests' precompiled header there and
    # returned the .gch built from the old headers; g++ then matched the headers a test
    # includes again against those in the .gch by size and checksum, saw other files and
    # included them twice (redefinition errors in every test object compiled against it;
    # tried, 2026-12-06). So the cache keeps a checksum of the headers it last built (in
    # its folder); when this checkout's differ, every compile runs again and replaces its
    # cached result (CCACHE_RECACHE): a full build, as a change of a public header costs
    # anyway. The checksum is written once the builds below have run.
    headers_sum=$(find corio.hpp runtime sync ipc tests/support/pch -name '*.hpp' -type f | LC_ALL=C sort |
      xargs cat | sha256sum | cut -d' ' -f1)
    headers_record="${CCACHE_DIR:-$cache_dir}/corio-headers.sha256"
    if [ -f "$headers_record" ] && [ "$(cat "$headers_record")" != "$headers_sum" ]; then
      echo "corio: the headers changed since the compiler cache last built them: every compile runs again"
      export CCACHE_RECACHE=1
    fi
  fi
fi

total_ok=0
total_fail=0
failed_names=()  # "[stage] test" for each failure, repeated at the end of the output
build_failed=0
started=$(date +%s)

run_step() {  # <name> <command...>: one check outside meson, counted as one test
  local name=$1
  shift
  echo "=== [$name] $*"
  if "$@"; then
    total_ok=$((total_ok + 1))
  else
    total_fail=$((total_fail + 1))
    failed_names+=("[$name]")
    echo "=== [$name] FAILED"
  fi
  echo "=== [$name] done after $(( $(date +%s) - started )) s"
}

run_suites() {  # <name> <builddir> [CXX=<compiler>] <meson setup args...> -- <suites...>
  local name=$1 dir=$2
  shift 2
  local env=()
  if [[ "$1" == CXX=* ]]; then
    env=("$1")
    shift
  fi
  local setup=()
  while [ "$1" != "--" ]; do setup+=("$1"); shift; done
  shift
  local suites=()
  for s in "$@"; do suites+=(--suite "$s"); done
  echo "=== [$name] configure and build ($dir)"
  # A folder configured differently (by an older .ci/test.sh, before ccache was installed)
  # or not completely is removed and configured afresh: meson takes the compiler only at
  # the first setup, and `setup --wipe` would keep options no longer given.
  local want stamp="$dir/corio-setup"
  want="$(command -v ccache || true) ${env[*]} ${setup[*]}"
  if [ ! -f "$dir/build.ninja" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    if ! env "${env[@]}" meson setup "$dir" "${setup[@]}" >"$dir.setup.log" 2>&1; then
      tail -40 "$dir.setup.log"
      total_fail=$((total_fail + 1))
      failed_names+=("[$name] meson setup")
      build_failed=1
      echo "=== [$name] done after $(( $(date +%s) - started )) s"
      return
    fi
    rm -f "$dir.setup.log"
    printf '%s\n' "$want" >"$stamp"
  fi
  local log
  log=$(mktemp)
  if ! ninja -C "$dir" -j "$jobs" >"$log" 2>&1; then  # a failed build: its errors, then the next stage
    { grep -E -m 20 -A 12 'error:|FAILED:|fatal:' "$log" || tail -40 "$log"; } | tail -120
    total_fail=$((total_fail + 1))
    failed_names+=("[$name] the build")
    build_failed=1
    rm -f "$log"
    echo "=== [$name] done after $(( $(date +%s) - started )) s"
    return
  fi
  echo "=== [$name] test: $*"
  set +e
  meson test -C "$dir" "${suites[@]}" --print-errorlogs --num-processes "$jobs" 2>&1 | tee "$log" | \
    grep -E '^ *[0-9]+/[0-9]+ |^(Ok|Fail|Timeout|Skipped):'
  local rc=${PIPESTATUS[0]}
  set -e
  local ok fail timeout
  ok=$(awk '/^Ok:/ {print $2}' "$log"); fail=$(awk '/^Fail:/ {print $2}' "$log")
  timeout=$(awk '/^Timeout:/ {print $2}' "$log")
  total_ok=$((total_ok + ${ok:-0}))
  total_fail=$((total_fail + ${fail:-0} + ${timeout:-0}))
  # The names of the failed tests: meson's result lines, e.g. " 12/79 corio:stress / x  FAIL".
  local t
  while read -r t; do
    failed_names+=("[$name] $t")
  done < <(sed '/^Summary of Failures/,$d' "$log" | grep -E '^ *[0-9]+/[0-9]+ .*(FAIL|TIMEOUT|ERROR)' |
    sed -E 's/^ *[0-9]+\/[0-9]+ +//; s/ +/ /g')  # (the summary repeats each failure)
  if [ "$rc" != 0 ]; then
    [ -n "$(grep -E '^ *[0-9]+/[0-9]+ .*(FAIL|TIMEOUT|ERROR)' "$log")" ] || failed_names+=("[$name] meson test exited $rc")
    sed -n '/^=* *[0-9]*\/[0-9]* .*\(FAIL\|TIMEOUT\)/,$p' "$log" | tail -200
    total_fail=$((total_fail > 0 ? total_fail : 1))
  fi
  rm -f "$log"
  echo "=== [$name] done after $(( $(date +%s) - started )) s"
}

# Counted steps, so that an offence is reported in the final count and the builds still run.
run_step layers bash tools/check_layers.sh  # the layering rules (also the `layers` test of the unit suite)
run_step sizes bash tools/check_sizes.sh    # the size rules (also the `sizes` test of the unit suite)
run_suites default build-ci/default -- unit stress examples install docs
run_suites release build-ci/release --buildtype=release -Dbenchmarks=false -- unit examples
run_suites asan-ubsan build-ci/asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false \
  -Dexamples=true -Dbenchmarks=false -- unit stress examples
run_suites tsan build-ci/tsan --buildtype=debugoptimized -Db_sanitize=thread \
  -Dexamples=false -Dbenchmarks=false -- unit stress
run_suites clang build-ci/clang CXX="$clang_cxx" --buildtype=release -Dbenchmarks=false \
  -Db_pch=false -- unit examples

# Fuzzing: every fuzz target under clang's libFuzzer for 10 s (fuzz/run.sh); a crash or a
# failed build counts as a failure. (The stress suites also run each target's seeded
# mutation loop, the fuzz_* tests.)
echo "=== [fuzz] libFuzzer targets, 10 s each"
if FUZZ_BUILD=build-ci/fuzz bash fuzz/run.sh 10; then
  total_ok=$((total_ok + 1))
else
  total_fail=$((total_fail + 1))
  failed_names+=("[fuzz]")
fi

if [ -n "$headers_record" ] && [ "$build_failed" = 0 ]; then
  printf '%s\n' "$headers_sum" >"$headers_record" || true  # the cache now holds these headers' builds
fi
# The failures again at the end, where a reader of only the output's tail sees them.
for t in "${failed_names[@]}"; do echo "failed: $t"; done
echo "tests: ${total_ok} passed, ${total_fail} failed"
[ "$total_fail" = 0 ]
