#!/usr/bin/env bash
# Fails (exit 1, one line per offence) when an #include crosses corio's layering rules:
#
#   layers, bottom up: runtime  <  sync  <  ipc  <  ipc/process
#   1. A layer includes only its own files and the public headers of the layers below
#      it; never a layer above it.
#   2. A detail/ or internal/ folder is private to its layer: nobody else includes it.
#      The one door into the runtime is its public headers plus runtime/port.hpp (the
#      scheduler port).
#   3. runtime/internal/ is not installed: no installed runtime header (runtime/*.hpp,
#      runtime/detail/*.hpp) includes it.
#   Tests and benchmarks may look inside the layer they exercise (tests/<layer>/ and
#   bench/<layer>/ see <layer>'s detail/ and internal/: test hooks, white-box tests);
#   examples, and tests of other layers, see public headers only.
#
# Usage: tools/check_layers.sh [source root]   (default: the repository this script is in)
#        tools/check_layers.sh --self-test     (checks that each rule catches an offence)
set -euo pipefail

if [ "${1:-}" = --self-test ]; then
  self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  expect() {  # <file> <include> <should fail: 1|0>
    rm -rf "$tmp/tree" && mkdir -p "$tmp/tree/$(dirname "$1")"
    printf '#include <corio/%s>\n' "$2" >"$tmp/tree/$1"
    local rc=0
    (cd "$tmp/tree" && bash "$self" "$tmp/tree" >/dev/null) || rc=1
    if [ "$rc" != "$3" ]; then
      echo "self-test: $1 including <corio/$2>: expected $([ "$3" = 1 ] && echo failure || echo success)"
      exit 1
    fi
  }
  expect ipc/x.cpp runtime/detail/completion.hpp 1      # rule 2: the runtime's detail
  expect ipc/x.cpp runtime/internal/worker.hpp 1        # rule 2: the runtime's internals
  expect sync/x.hpp ipc/tcp.hpp 1                       # rule 1: a layer above
  expect ipc/x.cpp sync/detail/wait_operation.hpp 1     # rule 2: another layer's detail
  expect ipc/x.cpp ipc/process/detail/exit_wait.hpp 1   # rule 2: ipc/process is a layer
  expect runtime/x.hpp runtime/internal/worker.hpp 1     # rule 3: installed header
  expect examples/x.cpp runtime/detail/completion.hpp 1 # examples: public only
  expect tests/sync/x.cpp ipc/detail/ops.hpp 1          # a test of another layer
  expect ipc/x.cpp runtime/port.hpp 0
  expect ipc/process/x.cpp sync/waiter_list.hpp 0
  expect runtime/x.cpp runtime/internal/worker.hpp 0
  expect tests/runtime/x.cpp runtime/internal/local_queue.hpp 0
  echo "layers self-test: every rule catches its offence"
  exit 0
fi

root=${1:-"$(cd "$(dirname "$0")/.." && pwd)"}
cd "$root"

# The layer of a path ("" for code outside the library: examples, bench, tests, ...).
layer_of() {
  case "$1" in
    ipc/process/*) echo ipc/process ;;
    ipc/*) echo ipc ;;
    sync/*) echo sync ;;
    runtime/*) echo runtime ;;
    tests/process/*|bench/process/*) echo test:ipc/process ;;
    tests/ipc/*|bench/ipc/*) echo test:ipc ;;
    tests/sync/*|bench/sync/*) echo test:sync ;;
    tests/runtime/*|bench/runtime/*) echo test:runtime ;;
    *) echo "" ;;
  esac
}
rank() {
  case "$1" in
    runtime) echo 0 ;; sync) echo 1 ;; ipc) echo 2 ;; ipc/process) echo 3 ;; *) echo 9 ;;
  esac
}

fail=0
offend() {
  echo "forbidden include: $1: <corio/$2>: $3"
  fail=1
}

while IFS= read -r file; do
  from=$(layer_of "$file")
  tested=${from#test:}
  [ "$tested" = "$from" ] && tested=""
  while IFS= read -r target; do
    [ -n "$target" ] || continue
    to=$(layer_of "$target")
    [ -n "$to" ] || continue  # corio.hpp and the like
    private=0
    case "$target" in
      */detail/*|*/internal/*) private=1 ;;
    esac
    if [ "$to" = ipc ] && [[ "$target" == ipc/process/* ]]; then
      to=ipc/process
    fi
    if [ -n "$tested" ]; then
      # A test or benchmark sees its own layer's private folders, and public headers of any layer.
      if [ "$private" = 1 ] && [ "$to" != "$tested" ]; then
        offend "$file" "$target" "a test or benchmark of $tested looks inside $to"
      fi
      continue
    fi
    if [ -z "$from" ]; then
      if [ "$private" = 1 ]; then
        offend "$file" "$target" "private to $to (use its public headers or runtime/port.hpp)"
      fi
      continue
    fi
    if [ "$to" != "$from" ]; then
      if [ "$(rank "$to")" -gt "$(rank "$from")" ]; then
        offend "$file" "$target" "$from may not include the layer above it ($to)"
      elif [ "$private" = 1 ]; then
        offend "$file" "$target" "private to $to (use its public headers or runtime/port.hpp)"
      fi
    elif [ "$from" = runtime ] && [[ "$target" == runtime/internal/* ]]; then
      case "$file" in
        runtime/internal/*|runtime/*.cpp) ;;
        *) offend "$file" "$target" "an installed runtime header may not include runtime/internal/" ;;
      esac
    fi
  done < <(sed -n 's|^[[:space:]]*#[[:space:]]*include[[:space:]]*<corio/\([^>]*\)>.*|\1|p' "$file")
done < <(git ls-files -co --exclude-standard -- '*.hpp' '*.cpp' '*.h' '*.c' 2>/dev/null ||
         find . -name '*.[ch]pp' -not -path './build*' | sed 's|^\./||')

if [ "$fail" = 0 ]; then
  echo "layers: no forbidden include"
fi
exit "$fail"
