#!/usr/bin/env bash
# Builds corio's API reference (HTML) with Doxygen and fails on any warning, so an
# undocumented public declaration stops it. `ninja -C build docs` runs this; so does the
# `docs` test suite. Usage: build.sh <source-root> <build-dir> [version]
# Output: <build-dir>/docs/html/index.html (front page: the README's "API at a glance").
set -euo pipefail
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
version=${3:-}
if ! command -v doxygen >/dev/null; then
  echo "docs: doxygen not found (bash .ci/deps.sh installs it)" >&2
  exit 1
fi
out="$build/docs"
generated="$out/generated"
rm -rf "$out/html"
mkdir -p "$generated"
python3 "$src/docs/prepare.py" "$src" "$generated"
# Doxygen reads the headers through the build's include/corio link, so each page names the
# header as a user includes it: <corio/runtime/task.hpp>.
include="$build/include"
if [ ! -d "$include/corio/runtime" ]; then
  echo "docs: $include/corio is missing (configure the build with meson first)" >&2
  exit 1
fi
sed -e "s|@VERSION@|$version|" -e "s|@OUTPUT@|$out|" -e "s|@GENERATED@|$generated|g" \
  -e "s|@INCLUDE@|$include|g" "$src/docs/Doxyfile.in" > "$generated/Doxyfile"
log="$out/warnings.log"
if ! doxygen "$generated/Doxyfile" 2> "$log"; then
  sed -e "s|$include/corio/||" -e "s|$generated/||" "$log" >&2
  echo "docs: $(grep -c . "$log") warning lines; every public declaration needs a /// comment" >&2
  exit 1
fi
if [ -s "$log" ]; then
  cat "$log" >&2
  exit 1
fi
echo "docs: $out/html/index.html"
