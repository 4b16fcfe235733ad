#!/usr/bin/env bash
# Builds the benchmarks (release) and runs corio and its peers (Boost.Asio, and Tokio from
# bench/tokio when it builds) side by side, in one run, on this machine. Prints one line per figure: `<benchmark> <system> <value> <unit>`
# (the median of --repeat runs, default 3), then ratios corio/peer. --out FILE also writes
# every run's lines to FILE under a header naming the command, date and machine
# (bench/results.sh), for bench/report.sh to chart.
#
#   bash bench/run.sh [runtime|sync|all] [--repeat N] [--workers N] [--out FILE] [--build DIR]
# (--build: the release build folder to use, default build-bench; made if missing)
set -euo pipefail
command_line="bench/run.sh"  # the arguments quoted, so that the line runs as written
[ $# -eq 0 ] || command_line+=$(printf ' %q' "$@")
which=all
repeat=3
workers=2
out_file=""
build=build-bench
while [ $# -gt 0 ]; do
  case "$1" in
    --repeat) repeat=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --out) out_file=$(realpath -m "$2"); shift 2 ;;
    --build) build=$2; shift 2 ;;
    *) which=$1; shift ;;
  esac
done
cd "$(dirname "$0")/.."
source bench/results.sh
bash .ci/deps.sh
header=$(bench_results_header side-by-side "$command_line")  # the date and load at the start
bash bench/ipc/ensure_build.sh "$build" bench/runtime/runtime_bench bench/sync/sync_bench
ninja -C "$build" bench/asio/asio_bench_uring bench/asio/asio_bench_epoll >/dev/null 2>&1 || true  # (Boost >= 1.81 only)
raw=$(mktemp)
tokio_log=$(mktemp)
trap 'rm -f "$raw" "$tokio_log"' EXIT
# The Tokio peer (Debian's Tokio 1.24 crates, built offline); without it, go on.
tokio=""
if ! tokio=$(bash bench/tokio/build.sh 2>"$tokio_log"); then
  tokio=""
  echo "# tokio peer not built, going on without it: $(grep -v '^ *$' "$tokio_log" | tail -n 1)" >&2
fi

run() {  # runs a benchmark command $repeat times, appending its lines to $raw
  for _ in $(seq "$repeat"); do
    "$@" 2>/dev/null | sed 's/ *#.*//' >>"$raw" || echo "# failed: $*" >&2
  done
}

if [ "$which" = runtime ] || [ "$which" = all ]; then
  # One process per benchmark, as for the peers below: no benchmark inherits another's
  # heap, caches or page faults.
  for b in spawn pingpong tree timers io yield; do
    run "$build"/bench/runtime/runtime_bench "$b" --workers "$workers"
  done
  run "$build"/bench/runtime/runtime_bench tree --workers 1
  for sys in uring epoll; do
    exe="$build"/bench/asio/asio_bench_$sys
    [ -x "$exe" ] || continue
    for b in spawn pingpong timers io; do
      run "$exe" "$b" --threads "$workers"
    done
  done
  if [ -n "$tokio" ]; then
    for b in spawn pingpong tree timers io yield; do
      run "$tokio" "$b" --threads "$workers"
    done
    run "$tokio" tree --threads 1
  fi
fi
if { [ "$which" = sync ] || [ "$which" = all ]; } && [ -x "$build"/bench/sync/sync_bench ]; then
  for b in lock mutex32k mutex1m chan_spsc chan_mpmc chan_pingpong threads32k; do
    run "$build"/bench/sync/sync_bench "$b" --workers "$workers"
  done
  for sys in uring epoll; do
    exe="$build"/bench/asio/asio_bench_$sys
    [ -x "$exe" ] || continue
    for b in mutex32k mutex1m chan_spsc chan_mpmc chan_pingpong; do
      run "$exe" "$b" --threads "$workers"
    done
  done
  if [ -n "$tokio" ]; then
    for b in lock mutex32k mutex1m chan_spsc chan_mpmc chan_pingpong; do
      run "$tokio" "$b" --threads "$workers"
    done
  fi
fi

if [ -n "$out_file" ]; then
  mkdir -p "$(dirname "$out_file")"
  { echo "$header"; cat "$raw"; } >"$out_file"
fi

# Median per (benchmark, system); then corio's ratio to each peer.
python3 - "$raw" <<'PY'
import collections, statistics, sys
vals = collections.defaultdict(list)
units = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) < 4 or line.startswith('#'):
        continue
    name, system, value, unit = parts[0], parts[1], parts[2], parts[3]
    try:
        vals[(name, system)].append(float(value))
    except ValueError:
        continue
    units[(name, system)] = unit
med = {k: statistics.median(v) for k, v in vals.items()}
for (name, system), v in sorted(med.items()):
    print(f"{name} {system} {v:.1f} {units[(name, system)]}")
print("# ratios (corio / peer; < 1 is better for time units, > 1 for rates)")
def corio_of(name, system):  # tokio-1w is compared with corio-1w, tokio-spawn-only with
    # corio-spawn-only (sync_bench prints plain "corio" whatever its worker count)
    if system.startswith("tokio-") and (name, "corio" + system[5:]) in med:
        return "corio" + system[5:]
    if system.endswith("-spawn-only") and not system.startswith("corio"):
        return "corio-spawn-only"
    return "corio"
for (name, system), v in sorted(med.items()):
    if system == "corio" or (name == "tree" and system.startswith("corio")):
        continue
    c = med.get((name, corio_of(name, system)))
    if c:
        print(f"# {name}: {corio_of(name, system)}/{system} = {c / v:.2f}")
PY
