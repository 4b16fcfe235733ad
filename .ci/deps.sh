#!/usr/bin/env bash
# Installs what corio needs from Debian 12's packages. Idempotent and quiet when
# everything is present: `apt-get update` runs once, only if a package is missing.
set -euo pipefail

# libssl-dev: OpenSSL's libcrypto (HMAC of the multiprocessing.connection handshake);
# cmake: the CMake consumer in tests/install; doxygen: the API reference (docs/);
# clang: the second compiler (.ci/clang.sh names its version).
packages=(g++ meson ninja-build pkg-config liburing-dev libexpected-dev libssl-dev catch2 libboost1.81-dev
  cmake doxygen "$(bash "$(dirname "$0")/clang.sh" --package)")
packages+=(clang libclang-rt-14-dev)  # fuzz/run.sh: libFuzzer and the sanitizers' runtimes
packages+=(gnuplot-nox)  # bench/report.sh: the benchmark charts (SVG), and its test
packages+=(universal-ctags)  # tools/check_sizes.sh: function lengths
packages+=(ccache)  # .ci/test.sh: a later run compiles only what changed
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "corio: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
