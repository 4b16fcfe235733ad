#!/usr/bin/env bash
# The job server benchmark (issue 13): job round trips (put (i, None, channel), then a
# blocking get of i*i) with 1, 4 and 16 concurrent clients:
#   (a) python-python  the tutorial's Python clients (MY_Client, one process each) against
#                      Python's own SyncManager server built like the tutorial
#                      (bench/jobs/python_server.py)
#   (b) corio-python   the same Python clients against examples/job_server
#   (c) corio-corio    C++ clients (bench/jobs/jobs_bench, one task each, a 1-worker runtime
#                      like the server's: one core each on a 2-CPU machine) against job_server
#       corio-corio-overlap  the same C++ clients sending each get together with its put
#                      (jobs_bench --overlap 1: one round trip per job instead of two)
# Prints `<benchmark> <system> <value> <unit>` lines: jobs/s, p50 and p99 latency (µs),
# server CPU per job (µs: utime + stime of the server and its children, from /proc), then
# the ratios against (a). The Python is Debian's python3 unless PYTHON is set.
#   bash bench/jobs/jobs.sh [BUILD_DIR=build-jobs-rel] [SECONDS=3]
set -euo pipefail
build=${1:-build-jobs-rel}
seconds=${2:-3}
python=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/../ipc/ensure_build.sh" "$build" examples/job_server bench/jobs/jobs_bench
server_bin=$build/examples/job_server
bench_bin=$build/bench/jobs/jobs_bench
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
tck=$(getconf CLK_TCK)

tree_ticks() {  # utime + stime of PID and its children (clock ticks)
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    [[ -r /proc/$p/stat ]] && total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo $total
}

start_server() {  # start_server python|corio: sets $spid $sport $rport
  local log=$work/server.$1.log
  if [[ $1 == python ]]; then
    "$python" "$here/python_server.py" > "$log" 2>&1 &
  else
    "$server_bin" --port-sender 0 --port-receiver 0 --workers 1 > "$log" 2>&1 &
  fi
  spid=$!
  sport="" rport=""
  for _ in $(seq 400); do
    sport=$(awk '/^sender listening on/ {print $NF}' "$log"); sport=${sport##*:}
    rport=$(awk '/^receiver listening on/ {print $NF}' "$log"); rport=${rport##*:}
    [[ -n $sport && -n $rport ]] && break
    sleep 0.05
  done
  [[ -n $sport && -n $rport ]] || { echo "server $1 did not start"; cat "$log"; exit 1; }
}

declare -A rate p50 p99 cpu
measure() {  # measure NAME SERVER CLIENT N
  local name=$1 server=$2 client=$3 n=$4 before after line jobs
  start_server "$server"
  before=$(tree_ticks $spid)
  if [[ $client == python ]]; then
    # (the last line: MY_Client prints its "[Notice] ... added" first)
    line=$("$python" "$here/python_clients.py" "$sport" "$rport" "$n" "$seconds" | tail -n 1)
  else
    line=$("$bench_bin" --port-sender "$sport" --port-receiver "$rport" --clients "$n" --seconds "$seconds" \
      --workers 1 --overlap $([[ $client == corio-overlap ]] && echo 1 || echo 0))
  fi
  after=$(tree_ticks $spid)
  kill -TERM $spid 2>/dev/null || true
  wait $spid 2>/dev/null || true
  read -r jobs rate[$name/$n] p50[$name/$n] p99[$name/$n] <<< "$line"
  cpu[$name/$n]=$(awk -v t=$((after - before)) -v j="$jobs" -v hz="$tck" 'BEGIN {printf "%.1f", t / hz * 1e6 / j}')
  echo "jobs_${n}_clients $name ${rate[$name/$n]} jobs/s"
  echo "jobs_${n}_clients_p50 $name ${p50[$name/$n]} us"
  echo "jobs_${n}_clients_p99 $name ${p99[$name/$n]} us"
  echo "jobs_${n}_clients_server_cpu $name ${cpu[$name/$n]} us/job"
}

for n in 1 4 16; do
  measure python-python python python $n
  measure corio-python corio python $n
  measure corio-corio corio corio $n
  measure corio-corio-overlap corio corio-overlap $n
done
for n in 1 4 16; do
  for name in corio-python corio-corio corio-corio-overlap; do
    awk -v a="${rate[$name/$n]}" -v b="${rate[python-python/$n]}" -v c="${cpu[$name/$n]}" -v d="${cpu[python-python/$n]}" \
      -v n=$n -v s=$name 'BEGIN {printf "jobs_%d_clients_ratio %s %.2f x_jobs_per_s_vs_python %.3f x_cpu_per_job_vs_python\n", n, s, a / b, (d > 0 ? c / d : 0)}'
  done
done
