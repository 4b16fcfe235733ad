#!/usr/bin/env bash
# Proves that <corio/corio.hpp> ("everything", README) reaches every installed public
# header: a header left out of the umbrella still compiles in corio's own examples, which
# include it by name, and fails in a user's program that trusted corio.hpp.
# The headers: what the build installs under include/corio/ (meson's introspection file),
# detail/ folders left out.
# Usage: umbrella_check.sh <build-root> <include-root> <c++ compiler...>
set -euo pipefail
build=$1
include=$2
shift 2
compiler=("$@")
headers=($(python3 -c '
import json, sys
for path in sorted(json.load(open(sys.argv[1])).values()):
    at = path.find("/include/corio/")
    if at >= 0 and path.endswith(".hpp") and "/detail/" not in path:
        print(path[at + len("/include/corio/"):])
' "$build/meson-info/intro-installed.json"))
[[ ${#headers[@]} -gt 10 ]] || { echo "umbrella check: found only ${#headers[@]} installed headers"; exit 1; }
# -MM: the headers the umbrella includes, one path per line after the rule's target.
reached=$(printf '#include <corio/corio.hpp>\n' |
  "${compiler[@]}" -std=c++20 -MM -I"$include" -x c++ - | tr -d '\\' | tr ' ' '\n')
missing=0
for h in "${headers[@]}"; do
  if ! grep -q "/corio/$h\$" <<<"$reached"; then
    echo "umbrella check: corio.hpp does not include $h (add it to its folder's umbrella header)"
    missing=1
  fi
done
[[ $missing == 0 ]] && echo "umbrella check: corio.hpp reaches all ${#headers[@]} installed public headers"
exit "$missing"
