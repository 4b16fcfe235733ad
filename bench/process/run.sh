#!/usr/bin/env bash
# Process benchmarks, corio and its peers side by side in one run (release build):
# spawn /bin/true (2,000, 20 in flight) vs plain posix_spawn + waitpid (1 and 20 threads),
# and Tokio's tokio::process (bench/tokio, when it builds), and process_pool (2 workers,
# 100,000 items) vs Python's ProcessPoolExecutor and Pool, and map_batched over 10 M int
# squares vs a plain sequential loop (lower is better; target <= 3x the loop).
# Prints `<benchmark> <system> <value> <unit>` lines, then corio's ratio to each peer.
#
# --out FILE also writes the lines to FILE under a header naming the command, date and
# machine (bench/results.sh), for bench/report.sh to chart.
#
#   bash bench/process/run.sh [build dir, default build-proc-rel] [--out FILE]
set -euo pipefail
command_line="bench/process/run.sh"  # the arguments quoted, so that the line runs as written
[ $# -eq 0 ] || command_line+=$(printf ' %q' "$@")
out_file=""
build=build-proc-rel
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out_file=$(realpath -m "$2"); shift 2 ;;
    *) build=$1; shift ;;
  esac
done
cd "$(dirname "$0")/../.."
source bench/results.sh
header=$(bench_results_header side-by-side "$command_line")  # the date and load at the start
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --buildtype=release -Dtests=false -Dexamples=false -Dbenchmarks=true >/dev/null
fi
ninja -C "$build" bench/process/process_bench bench/process/spawn_floor >/dev/null
out=$(mktemp)
tokio_log=$(mktemp)
trap 'rm -f "$out" "$tokio_log"' EXIT
if tokio=$(bash bench/tokio/build.sh 2>"$tokio_log"); then
  "$tokio" process_spawn --threads 2 | tee -a "$out" || echo "# tokio process_spawn failed" >&2
else
  echo "# tokio peer not built, going on without it: $(grep -v '^ *$' "$tokio_log" | tail -n 1)" >&2
fi
"$build/bench/process/spawn_floor" 2000 20 | tee -a "$out"
"$build/bench/process/process_bench" all --workers 2 | tee -a "$out"
"$build/bench/process/process_bench" spawn --workers 2 --pidfd-poll | tee -a "$out"
"$build/bench/process/process_bench" bulk --workers 2 | tee -a "$out"
python3 bench/process/pool_peer.py 100000 | tee -a "$out"
if [ -n "$out_file" ]; then
  mkdir -p "$(dirname "$out_file")"
  { echo "$header"; cat "$out"; } >"$out_file"
fi
python3 - "$out" <<'PY'
import sys
v = {}
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) >= 4:
        v[(p[0], p[1])] = float(p[2])
def ratio(name, peer, target):
    c, o = v.get((name, "corio")), v.get((name, peer))
    if c and o:
        r = c / o
        print(f"# {name}: corio/{peer} = {r:.2f} (target >= {target}: {'met' if r >= target else 'MISSED'})")
ratio("spawn_true_20_in_flight", "posix_spawn_20threads", 0.95)
ratio("spawn_true_20_in_flight", "posix_spawn_seq", 1.0)
ratio("spawn_true_20_in_flight", "tokio", 1.0)
ratio("pool_per_item", "python_ppe_chunksize1", 50)
ratio("pool_batched", "python_pool_map", 5)
for name in ("bulk_int_squares", "bulk_int_squares_moved"):
    c, o = v.get((name, "corio")), v.get((name, "sequential_loop"))
    if c and o:
        r = c / o
        print(f"# {name}: corio/sequential_loop = {r:.2f} ms/ms (target <= 3: {'met' if r <= 3 else 'MISSED'})")
PY
