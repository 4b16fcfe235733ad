#!/usr/bin/env bash
# A/B: the corio echo server reading with read_some vs through stream_receiver
# (--provided-buffers), 1 worker, driven by bench/ipc/echo_load exactly as echo.sh does
# (50 connections in lockstep, one request in flight each). The modes alternate inside
# every repeat; the medians over the repeats are printed last.
# Prints `<benchmark> <mode> <value> <unit>` lines, then `median ...` lines.
#   bash bench/ipc/echo_rx_ab.sh [BUILD_DIR=build-ipc-rel] [SECONDS=3] [REPEAT=5] [EXTRA_PBUF_ARGS]
set -euo pipefail
build=${1:-build-ipc-rel}
seconds=${2:-3}
repeat=${3:-5}
extra=${4:-}
conns=50
port=17700
results=$(mktemp)
trap 'rm -f "$results"' EXIT
modes=("read_some|" "pbuf|--provided-buffers $extra")
bash "$(dirname "$0")/ensure_build.sh" "$build" examples/echo_server bench/ipc/echo_load

wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}

for r in $(seq "$repeat"); do
  for size in 64 16384; do
    # Alternate the order too, so neither mode always runs first.
    if (( r % 2 == 0 )); then order=(1 0); else order=(0 1); fi
    for i in "${order[@]}"; do
      entry=${modes[$i]}
      name=${entry%%|*}
      args=${entry#*|}
      port=$((port + 1))
      # shellcheck disable=SC2086
      $build/examples/echo_server --port $port --workers 1 $args > /dev/null &
      pid=$!
      if ! wait_port $port; then
        echo "echo_rx_ab.sh: $name did not start" >&2
        kill $pid 2>/dev/null || true
        continue
      fi
      out=$($build/bench/ipc/echo_load --port $port --conns $conns --size $size --seconds "$seconds" --warmup 1 --stat-pid $pid)
      kill $pid 2>/dev/null || true
      wait $pid 2>/dev/null || true
      rps=$(awk '{for (i = 1; i < NF; i++) if ($i == "rps") print $(i + 1)}' <<< "$out")
      us=$(awk '{for (i = 1; i < NF; i++) if ($i == "us_per_request") print $(i + 1)}' <<< "$out")
      echo "echo_${size}B_rps $name $rps req/s" | tee -a "$results"
      echo "echo_${size}B_cpu $name $us us/req" | tee -a "$results"
    done
  done
done
sort -k1,1 -k2,2 "$results" | awk '
  { key = $1 " " $2; v[key] = v[key] " " $3; unit[key] = $4 }
  END {
    for (k in v) {
      n = split(substr(v[k], 2), a, " ");
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
      med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2;
      printf "median %s %s %s (n=%d)\n", k, med, unit[k], n
    }
  }' | sort
