#!/usr/bin/env bash
# Proves that including any public corio header without C++20 stops the compiler at once
# with corio's one message (runtime/require_cxx20.hpp), not hundreds of errors:
# each header, compiled alone with -std=c++17, must fail with exactly that #error and the
# fatal line after it. Usage: cxx20_check.sh <source-root> <include-root> <c++ compiler...>
set -euo pipefail
src=$(cd "$1" && pwd)
include=$2
shift 2
compiler=("$@")
cd "$src"
headers=(corio.hpp $(find runtime sync ipc -name '*.hpp' -not -path '*/detail/*' -not -path '*/internal/*' | sort))
failed=0
for h in "${headers[@]}"; do
  out=$(printf '#include <corio/%s>\n' "$h" |
    "${compiler[@]}" -std=c++17 -fsyntax-only -I"$include" -x c++ - 2>&1) && {
    echo "cxx20 check: $h compiled with -std=c++17"
    failed=1
    continue
  }
  errors=$(grep -c 'error:' <<<"$out" || true)
  if ! grep -q 'corio requires C++20' <<<"$out" || [ "$errors" != 2 ]; then
    echo "cxx20 check: $h does not stop at corio's #error (include runtime/require_cxx20.hpp first):"
    head -5 <<<"$out"
    failed=1
  fi
done
[ "$failed" = 0 ] && echo "cxx20 check: ${#headers[@]} public headers each stop at one #error under -std=c++17"
exit "$failed"
