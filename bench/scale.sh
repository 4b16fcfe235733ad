#!/usr/bin/env bash
# Scaling run: corio and Tokio side by side at 1, 2, 4, 8 and 16 workers (those up to the
# machine's CPU count), for the fork-join tree, spawn, the 1M-task mutex race, the MPMC
# channel and the TCP echo server (64 B, 50 connections per worker: requests/s and server
# CPU per request; the server is pinned to CPUs 0..N-1 with taskset and the load client,
# echo_load --threads K, to CPUs N..min(2N, CPUs)-1, K of them; a note says when the
# client had fewer CPUs than the server or none of its own (both unpinned, 1 client
# thread), and when it used >= 90% of its CPUs, so that the client may be the limit; the
# results file has a `# client:` line with its CPU per request for every echo run).
#
# It runs from statically linked binaries (bench/static.sh builds them: liburing, libstdc++
# and glibc inside), so the folder bench/static.sh fills can be copied to a bigger machine
# without Debian's packages and run there:
#   bash bench/static.sh                            # here: writes build-static/dist/
#   scp -r build-static/dist big:corio-scale && ssh big 'cd corio-scale && bash scale.sh'
#
#   bash bench/scale.sh [--bin DIR] [--workers "1 2 4 8 16"] [--repeat N] [--seconds S]
#                       [--out FILE] [--port P] [--no-echo]
#     --bin DIR   the binaries: runtime_bench, sync_bench, echo_server, echo_load and, if
#                 present, tokio_bench (default: this script's folder when it holds them,
#                 as in a dist folder, else build-static/dist, built by bench/static.sh)
#     --workers   the worker counts (default: 1 2 4 8 16, those <= nproc)
#     --repeat N  runs of each figure, the median is reported (default 3: one run gave a
#                 noisy point, spawn 5.1x at 2 workers on 2 CPUs)
#     --seconds S the echo window per server (default 3, after 1 s of warm-up)
#     --out FILE  the results file (default scale-<hostname>-<date>.txt here)
#     --port P    the first port the echo servers listen on (default 17400 + a random
#                 number below 1000); the next run takes the next port, moving past any
#                 port that already answers (another program's server is never loaded)
# Prints a table (the value at each worker count), writes the results file and, where
# gnuplot and python3 exist, bench/report.sh's table and charts beside it (FILE's stem,
# -scaling.svg: speed at N workers over speed at 1; -cpu-scaling.svg: server CPU per
# request at N workers over at 1; -vs-tokio.svg: corio over Tokio).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command_line="bench/scale.sh"  # the arguments quoted, so that the line runs as written
[ $# -eq 0 ] || command_line+=$(printf ' %q' "$@")
bin=""
counts=""
repeat=3
seconds=3
out_file=""
echo_bench=1
first_port=$((17400 + RANDOM % 1000))
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --workers) counts=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --out) out_file=$2; shift 2 ;;
    --port) first_port=$2; shift 2 ;;
    --no-echo) echo_bench=0; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "scale.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
  esac
done
cpus=$(nproc)
if [ -z "$counts" ]; then
  for n in 1 2 4 8 16; do
    [ "$n" -le "$cpus" ] && counts+="$n "
  done
fi
if ! [[ $first_port =~ ^[1-9][0-9]*$ ]] || [ "$first_port" -gt 65000 ]; then
  echo "scale.sh: --port takes a port number up to 65000, not '$first_port'" >&2
  exit 2
fi
port=$((first_port - 1))  # echo_run moves it on, past any port that already answers
if ! [[ $repeat =~ ^[1-9][0-9]*$ ]] || ! [[ $seconds =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]]; then
  echo "scale.sh: --repeat takes a positive integer and --seconds a number (got '$repeat', '$seconds')" >&2
  exit 2
fi
for n in $counts; do
  if ! [[ $n =~ ^[1-9][0-9]*$ ]]; then
    echo "scale.sh: a worker count must be a positive integer, not '$n'" >&2
    exit 2
  fi
done
if [ -z "$bin" ]; then
  if [ -x "$here/runtime_bench" ]; then
    bin=$here
  else
    bash "$here/static.sh" >&2
    bin=$(cd "$here/.." && pwd)/build-static/dist
  fi
fi
for exe in runtime_bench sync_bench echo_server echo_load; do
  if [ ! -x "$bin/$exe" ]; then
    echo "scale.sh: $bin/$exe is missing (bash bench/static.sh builds it)" >&2
    exit 1
  fi
done
tokio=""
if [ -x "$bin/tokio_bench" ]; then
  tokio=$bin/tokio_bench
else
  echo "# no $bin/tokio_bench: corio alone" >&2
fi
[ -n "$out_file" ] || out_file="scale-$(hostname -s 2>/dev/null || echo host)-$(date -u +%Y%m%d-%H%M).txt"
# shellcheck source=bench/results.sh
source "$here/results.sh"
mkdir -p "$(dirname "$out_file")"
bench_results_header scaling "$command_line" >"$out_file"
echo "# workers: $counts" >>"$out_file"

record() {  # record SYSTEM-FAMILY N: reads `<bench> <system> <value> <unit>` lines on stdin
  # keeps each benchmark's main figure (system corio/tokio, or corio-Nw/tokio-Nw) and
  # names it <family>-<N>w
  local family=$1 n=$2
  awk -v fam="$family" -v n="$n" \
    'NF >= 4 && $1 !~ /^#/ && ($2 == fam || $2 == fam "-" n "w") { print $1, fam "-" n "w", $3, $4 }' |
    tee -a "$out_file"
}

# shellcheck source=bench/serve.sh
source "$here/serve.sh"
serve_traps
# The echo runs open 50 connections per server worker (1,600 at 32): every server and the
# load client get the hard descriptor limit as their soft one (corio's echo_server and
# echo_load raise their own; Tokio's peer does not).
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
echo_failed=0
echo_note() {  # a `# echo: ...` line, in the results file and on stderr
  echo "# echo: $*" | tee -a "$out_file" >&2
}

client_note() {  # client_note WHAT K < echo_load's line: the client's CPU, a note when >= 90% busy
  local line
  line=$(awk -v k="$2" '{
      for (i = 1; i < NF; i++) { f[$i] = $(i + 1) }
      if (f["seconds"] > 0 && ("client_cpu_us" in f))
        printf "%.0f %s", 100 * f["client_cpu_us"] / (f["seconds"] * 1e6 * k), f["client_us_per_request"]
    }')
  [ -n "$line" ] || return 0
  local busy=${line%% *} per=${line#* }
  echo "# client: $1: $per us/req, $busy% of its $2 CPU(s)" >>"$out_file"
  [ "$busy" -lt 90 ] || echo_note "$1: the load client used $busy% of its $2 CPU(s) ($per us/req): it may be what limits req/s"
}

echo_run() {  # echo_run FAMILY N COMMAND...   (PORT in COMMAND is replaced)
  local family=$1 n=$2
  shift 2
  local what="$family at $n workers"
  # The server on CPUs 0..N-1, the client (K threads) on N..min(2N, cpus)-1; K = its CPUs.
  local server_cpus="0-$((n - 1))" client=() k=1
  if [ "$n" -lt "$cpus" ]; then
    local last=$((2 * n < cpus ? 2 * n - 1 : cpus - 1))
    k=$((last - n + 1))
    client=(taskset -c "$n-$last")
    [ "$k" -ge "$n" ] || echo_note "$what: the load client had only $k CPU(s) of its own ($n-$last)"
  else
    echo_note "$what: no CPU left for the load client, both unpinned (client: 1 thread)"
    server_cpus="0-$((cpus - 1))"
  fi
  local free
  if ! free=$(serve_free_port $((port + 1))); then
    echo_note "$what did not start: no free port from $((port + 1)) on"
    echo_failed=1
    return 0
  fi
  port=$free
  if ! serve_start "$port" taskset -c "$server_cpus" "${@//PORT/$port}"; then
    echo_note "$what did not start: $serve_error"
    echo_failed=1
    return 0
  fi
  if ! serve_load "${client[@]}" "$bin/echo_load" --port "$port" --conns $((50 * n)) --threads "$k" --size 64 \
    --seconds "$seconds" --warmup 1 --stat-pid "$serve_pid"; then
    echo_note "$what failed: $serve_error"
    echo_failed=1
    return 0
  fi
  serve_stop
  client_note "$what" "$k" <"$serve_dir/load.out"
  awk -v s="$family-${n}w" '{
      for (i = 1; i < NF; i++) {
        if ($i == "rps") print "echo_64B_rps", s, $(i + 1), "req/s"
        if ($i == "us_per_request") print "echo_64B_cpu", s, $(i + 1), "us/req"
      }
    }' "$serve_dir/load.out" | tee -a "$out_file"
}

for _ in $(seq "$repeat"); do
  for n in $counts; do
    for b in tree spawn; do
      "$bin/runtime_bench" "$b" --workers "$n" | record corio "$n"
      [ -z "$tokio" ] || "$tokio" "$b" --threads "$n" | record tokio "$n"
    done
    for b in mutex1m chan_mpmc; do
      "$bin/sync_bench" "$b" --workers "$n" --corio-only | record corio "$n"
      [ -z "$tokio" ] || "$tokio" "$b" --threads "$n" | record tokio "$n"
    done
    if [ "$echo_bench" = 1 ]; then
      echo_run corio "$n" "$bin/echo_server" --port PORT --workers "$n"
      [ -z "$tokio" ] || echo_run tokio "$n" "$tokio" echo PORT "$n"
    fi
  done
done

# The table: one row per benchmark and system, one column per worker count (medians),
# under the notes of the echo runs (pinning, failures).
echo
grep '^# echo' "$out_file" | sort -u || true
awk -v counts="$counts" '
  NF >= 4 && $1 !~ /^#/ {
    split($2, p, "-"); fam = p[1]; n = p[2]; sub(/w$/, "", n)
    key = $1 " " fam
    if (!(key in unit)) { order[++rows] = key }
    unit[key] = $4
    v[key, n, ++cnt[key, n]] = $3
  }
  function median(key, n,    k, i, j, t, a) {
    k = cnt[key, n]
    if (k == 0) return "-"
    for (i = 1; i <= k; i++) a[i] = v[key, n, i] + 0
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
  }
  END {
    nc = split(counts, c, " ")
    printf "%-14s %-6s %-8s", "benchmark", "system", "unit"
    for (i = 1; i <= nc; i++) printf " %12s", c[i] "w"
    printf "\n"
    for (r = 1; r <= rows; r++) {
      split(order[r], kk, " ")
      printf "%-14s %-6s %-8s", kk[1], kk[2], unit[order[r]]
      for (i = 1; i <= nc; i++) printf " %12s", median(order[r], c[i])
      printf "\n"
    }
  }' "$out_file"
echo
echo "results: $out_file"
if command -v gnuplot >/dev/null && command -v python3 >/dev/null; then
  bash "$here/report.sh" "$out_file"
else
  echo "charts: copy $out_file to a machine with gnuplot and python3, then: bash bench/report.sh $(basename "$out_file")"
fi
if [ "$echo_failed" = 1 ]; then
  echo "scale.sh: an echo server did not start or its run failed (the '# echo:' lines above)" >&2
  exit 1
fi
