#!/usr/bin/env bash
# Builds every fuzz target (fuzz/*_fuzz.cpp) with clang's libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer into $FUZZ_BUILD (default build-fuzz/), and runs each for a
# bounded time:
#   bash fuzz/run.sh [SECONDS_PER_TARGET (default 10)] [TARGET...]
# A target lists the corio sources it needs on a line "// fuzz-sources: a.cpp b.cpp",
# and any further clang arguments it needs (libraries, flags) on a line "// fuzz-args: ...".
# A source "@DIR/NAME" stands for the list `NAME = files(...)` in DIR/meson.build (e.g.
# @ipc/pickle_sources, @runtime/runtime_sources): the library's own list, so that a file
# added to or split out of it cannot be forgotten here; an unknown list fails the build.
# Seeds: fuzz/seeds/<target>.sh writes them (when present), plus fuzz/seeds/<target>/; the
# corpus grows in $FUZZ_BUILD/corpus/<target>/ from run to run. Dictionary: fuzz/<target>.dict.
# Prints, per target, the executions run and the crashes found (inputs kept under
# $FUZZ_BUILD/artifacts/<target>/); exits 1 if any target crashed or failed to build.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
shift || true
out=${FUZZ_BUILD:-build-fuzz}
mkdir -p "$out/include"
ln -sfn "$PWD" "$out/include/corio"
out=$(cd "$out" && pwd)

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in fuzz/*_fuzz.cpp; do targets+=("$(basename "$f" .cpp)"); done
fi

cxx=${CXX_FUZZ:-clang++}
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I"$out/include")
# Prints the sources a fuzz-sources line names, one a line, each @DIR/NAME expanded.
expand_sources() {
  local s dir list
  for s in "$@"; do
    case "$s" in
      @*/*)
        dir=${s#@}
        dir=${dir%/*}
        list=$(awk -v name="${s##*/}" -v dir="$dir" '
          $0 ~ "^" name " = files\\(" { on = 1; next }
          on && /^\)/ { exit }
          on && match($0, /'"'"'[^'"'"']+'"'"'/) { print dir "/" substr($0, RSTART + 1, RLENGTH - 2) }
        ' "$dir/meson.build" 2>/dev/null)
        if [ -z "$list" ]; then
          echo "fuzz: no list '${s##*/} = files(...)' in $dir/meson.build" >&2
          return 1
        fi
        echo "$list"
        ;;
      *) echo "$s" ;;
    esac
  done
}

failed=0
for name in "${targets[@]}"; do
  src=fuzz/$name.cpp
  read -r -a named <<<"$(sed -n 's|^// fuzz-sources: ||p' "$src")"
  if ! expanded=$(expand_sources "${named[@]}"); then
    echo "fuzz $name: libFuzzer build FAILED (its fuzz-sources line names an unknown list)"
    failed=1
    continue
  fi
  sources=()
  if [ -n "$expanded" ]; then  # (a here-string of "" would give one empty source)
    mapfile -t sources <<<"$expanded"
  fi
  read -r -a extra <<<"$(sed -n 's|^// fuzz-args: ||p' "$src")"
  bin=$out/$name
  # Stale: no binary, or the target, a source or any library header (the sources include
  # headers of other layers and of runtime/internal/) newer than it.
  stale=0
  if [ ! -e "$bin" ] || [ -n "$(find runtime sync ipc -name '*.hpp' -newer "$bin" -print -quit)" ]; then
    stale=1
  fi
  for s in "$src" "${sources[@]}"; do
    if [ "$s" -nt "$bin" ]; then stale=1; fi
  done
  if [ "$stale" = 1 ]; then
    if ! "$cxx" "${flags[@]}" "$src" "${sources[@]}" -o "$bin" "${extra[@]}" 2>"$out/$name.build.log"; then
      echo "fuzz $name: libFuzzer build FAILED ($cxx -fsanitize=fuzzer; see $out/$name.build.log)"
      failed=1
      continue
    fi
  fi
  corpus=$out/corpus/$name
  artifacts=$out/artifacts/$name
  mkdir -p "$corpus" "$artifacts"
  if [ -x "fuzz/seeds/$name.sh" ]; then "fuzz/seeds/$name.sh" "$corpus"; fi
  if [ -d "fuzz/seeds/$name" ]; then cp -n fuzz/seeds/"$name"/* "$corpus"/ 2>/dev/null || true; fi
  dict=()
  if [ -f "fuzz/$name.dict" ]; then dict=(-dict="fuzz/$name.dict"); fi
  before=$(find "$artifacts" -type f | wc -l)
  log=$out/$name.log
  "$bin" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "${dict[@]}" "$corpus" >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  crashes=$(( $(find "$artifacts" -type f | wc -l) - before ))
  echo "fuzz $name: ${runs:-?} executions in ${seconds} s (libFuzzer), $crashes crashes, corpus $(find "$corpus" -type f | wc -l) inputs"
  if [ "$rc" != 0 ] || [ "$crashes" != 0 ]; then
    grep -E "ERROR|SUMMARY|violated|Test unit written" "$log" | head -20
    failed=1
  fi
done
exit "$failed"
