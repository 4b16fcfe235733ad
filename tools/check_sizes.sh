#!/usr/bin/env bash
# Fails (exit 1, one line per offence) when the library's code outgrows corio's size rules:
#
#   1. No library .cpp file (runtime/, sync/, ipc/) is over 500 lines: split it along its
#      concepts, each file opening with what it holds.
#   2. No library function (in a .cpp or a .hpp) is over 60 lines, unless the comment
#      directly above it (above its template line, if any) has a line that begins with
#      the marker "// long:" followed by the reason, e.g.
#          // long: one case per opcode; split, the table would be read in pieces.
#      Functions are measured by Universal Ctags (its line: and end: fields); a lambda
#      counts as part of the function that holds it.
#
# Usage: tools/check_sizes.sh [source root]   (default: the repository this script is in)
#        tools/check_sizes.sh --self-test     (checks that each rule catches an offence)
# Needs Universal Ctags (`ctags --version` says so); without it the check is skipped
# (exit 77, which meson reports as a skipped test).
set -euo pipefail

max_file_lines=500
max_function_lines=60

if ! ctags --version 2>/dev/null | grep -q 'Universal Ctags'; then
  echo "sizes: skipped (Universal Ctags not found)"
  exit 77
fi

if [ "${1:-}" = --self-test ]; then
  self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # A function of n lines (its signature and closing brace included), after `above`.
  function_of() {  # <name> <lines> [line above]
    [ -z "${3:-}" ] || printf '%s\n' "$3"
    printf 'int %s() {\n' "$1"
    for ((i = 0; i < $2 - 3; i++)); do printf '  int x%d = %d;\n' "$i" "$i"; done
    printf '  return 0;\n}\n'
  }
  expect() {  # <what> <should fail: 1|0>   (the tree is in $tmp/tree)
    local rc=0
    (cd "$tmp/tree" && bash "$self" "$tmp/tree" >/dev/null) || rc=1
    if [ "$rc" != "$2" ]; then
      echo "self-test: $1: expected $([ "$2" = 1 ] && echo failure || echo success)"
      exit 1
    fi
  }
  fresh() { rm -rf "$tmp/tree" && mkdir -p "$tmp/tree/ipc" "$tmp/tree/runtime" "$tmp/tree/examples"; }

  fresh
  function_of small 60 >"$tmp/tree/ipc/a.cpp"
  expect "a 60-line function" 0
  fresh
  function_of big 61 >"$tmp/tree/ipc/a.cpp"
  expect "a 61-line function without a reason" 1
  fresh
  function_of big 61 "// long: one case per opcode" >"$tmp/tree/ipc/a.cpp"
  expect "a 61-line function with a reason" 0
  fresh
  { echo "// how long: x"; function_of big 61; } >"$tmp/tree/ipc/a.cpp"
  expect "\"long:\" inside a comment, not as its marker" 1
  fresh
  { echo "// long: the reason"; echo; function_of big 61; } >"$tmp/tree/ipc/a.cpp"
  expect "a reason that is not directly above" 1
  fresh
  { echo "// long: the reason"; echo "template <class T>"; function_of big 61; } >"$tmp/tree/runtime/a.hpp"
  expect "a reason above a template" 0
  fresh
  function_of big 61 >"$tmp/tree/runtime/a.hpp"
  expect "a long function in a header" 1
  fresh
  for ((k = 0; k < 100; k++)); do function_of "f$k" 5; done >"$tmp/tree/ipc/a.cpp"
  expect "a 500-line file" 0
  function_of last 3 >>"$tmp/tree/ipc/a.cpp"
  expect "a 503-line file" 1
  fresh
  function_of big 80 >"$tmp/tree/examples/a.cpp"
  expect "a long function outside the library" 0
  echo "sizes self-test: every rule catches its offence"
  exit 0
fi

root=${1:-"$(cd "$(dirname "$0")/.." && pwd)"}
cd "$root"

files=()
while IFS= read -r f; do
  case "$f" in
    runtime/*|sync/*|ipc/*) files+=("$f") ;;
  esac
done < <(git ls-files -co --exclude-standard -- '*.hpp' '*.cpp' 2>/dev/null ||
         find . -name '*.[ch]pp' -not -path './build*' | sed 's|^\./||')

fail=0
for f in "${files[@]}"; do
  case "$f" in
    *.cpp)
      n=$(wc -l <"$f")
      if [ "$n" -gt "$max_file_lines" ]; then
        echo "file too long: $f: $n lines (at most $max_file_lines; split it along its concepts)"
        fail=1
      fi
      ;;
  esac
done

# Every function definition: file, name, first line, last line.
while IFS=$'\t' read -r file name first last; do
  [ -n "$last" ] || continue
  length=$((last - first + 1))
  [ "$length" -gt "$max_function_lines" ] || continue
  # The comment directly above the function (above its template line, if any).
  reason=$(awk -v at="$first" '
    NR < at { lines[NR] = $0 }
    END {
      k = at - 1
      while (k > 0 && lines[k] ~ /^[[:space:]]*template[[:space:]]*</) k--
      while (k > 0 && lines[k] ~ /^[[:space:]]*\/\//) {
        if (lines[k] ~ /^[[:space:]]*\/\/[[:space:]]*long:/) { print "yes"; exit }
        k--
      }
    }' "$file")
  if [ "$reason" != yes ]; then
    echo "function too long: $file:$first: $name: $length lines (at most $max_function_lines, or a \"// long: why\" comment directly above it)"
    fail=1
  fi
done < <(ctags --fields=+ne --kinds-C++=f -o - "${files[@]}" 2>/dev/null |
         awk -F'\t' '$1 !~ /^__anon/ {
           first = ""; last = ""
           for (i = 4; i <= NF; i++) {
             if ($i ~ /^line:/) first = substr($i, 6)
             if ($i ~ /^end:/) last = substr($i, 5)
           }
           print $2 "\t" $1 "\t" first "\t" last
         }')

if [ "$fail" = 0 ]; then
  echo "sizes: no file over $max_file_lines lines, no function over $max_function_lines lines without a reason"
fi
exit "$fail"
