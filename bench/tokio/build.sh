#!/usr/bin/env bash
# Builds the Tokio peer benchmarks (bench/tokio) offline, from the crates Debian 12 ships
# (librust-tokio-dev, Tokio 1.24.2, under /usr/share/cargo/registry): installs the Debian
# packages if missing (as root), then runs cargo in release mode into build-tokio/ at the
# repository root. Prints the path of the binary on stdout; everything else goes to stderr.
# --static: a statically linked binary (glibc's crt-static, static-pie) in build-tokio-static/,
# for bench/scale.sh on machines without Debian's packages.
#   bash bench/tokio/build.sh [--static]
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)

# librust-tokio-dev carries every Tokio feature (librust-tokio+full-dev and friends are
# virtual packages it provides) and pulls libc, mio, socket2, ... as Debian packages.
pkgs=(librust-tokio-dev librust-libc-dev)
cargo=$(command -v cargo || true)
[ -z "$cargo" ] && [ -x "$HOME/.cargo/bin/cargo" ] && cargo=$HOME/.cargo/bin/cargo
[ -z "$cargo" ] && pkgs+=(cargo)  # Debian's cargo + rustc are recent enough for Tokio 1.24
missing=()
for p in "${pkgs[@]}"; do
  status=$(dpkg -s "$p" 2>/dev/null || true)  # (not piped into grep -q: pipefail + SIGPIPE)
  grep -q '^Status: install ok installed' <<<"$status" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "tokio build: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
  [ -z "$cargo" ] && cargo=$(command -v cargo)
fi

# .cargo/config.toml (in this folder, hence the cd above) replaces crates.io with the
# Debian registry directory and keeps cargo offline.
if [ "${1:-}" = --static ]; then
  # crt-static with an explicit --target, so that the flag reaches the binary but not the
  # proc-macro crates cargo builds for the host.
  host=$("${cargo%cargo}rustc" -vV 2>/dev/null | sed -n 's/^host: //p' || true)
  [ -n "$host" ] || host=$(rustc -vV | sed -n 's/^host: //p')
  export CARGO_TARGET_DIR="$root/build-tokio-static"
  RUSTFLAGS="-C target-feature=+crt-static" nice "$cargo" build --release --offline --quiet \
    --target "$host" -j "${CARGO_JOBS:-1}" >&2
  echo "$CARGO_TARGET_DIR/$host/release/tokio_bench"
  exit 0
fi
export CARGO_TARGET_DIR="$root/build-tokio"
nice "$cargo" build --release --offline --quiet -j "${CARGO_JOBS:-1}" >&2
echo "$CARGO_TARGET_DIR/release/tokio_bench"
