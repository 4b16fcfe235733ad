#!/usr/bin/env bash
# TCP echo benchmark: every server driven by the same load generator (bench/ipc/echo_load:
# 50 connections in lockstep, 64 B and 16 KiB messages, fixed window), on loopback.
# Prints `<benchmark> <system> <value> <unit>` lines: requests/s and server CPU µs/request
# (utime + stime of the server process over the window, from /proc/PID/stat).
# --out FILE also writes the lines to FILE under a header naming the command, date and
# machine (bench/results.sh), for bench/report.sh to chart. --port P: the first port the
# servers listen on (default 17301; each run takes the next, moving past any port that
# already answers, so another program's server is never loaded). A server that does not
# start, or dies, or whose load fails, gives a `# echo: ...` line (stderr and the results
# file) instead of figures, and the exit status 1 at the end (bench/serve.sh).
#   bash bench/ipc/echo.sh [BUILD_DIR=build-ipc-rel] [SECONDS=5] [REPEAT=1] [--out FILE] [--port P]
set -euo pipefail
command_line="bench/ipc/echo.sh"  # the arguments quoted, so that the line runs as written
[ $# -eq 0 ] || command_line+=$(printf ' %q' "$@")
out_file=""
first_port=17301
positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out_file=$2; shift 2 ;;
    --port) first_port=$2; shift 2 ;;
    *) positional+=("$1"); shift ;;
  esac
done
set -- ${positional[@]+"${positional[@]}"}
if ! [[ $first_port =~ ^[1-9][0-9]*$ ]] || [ "$first_port" -gt 65000 ]; then
  echo "echo.sh: --port takes a port number up to 65000, not '$first_port'" >&2
  exit 2
fi
build=${1:-build-ipc-rel}
seconds=${2:-5}
repeat=${3:-1}
if [ -n "$out_file" ]; then
  source "$(dirname "$0")/../results.sh"
  mkdir -p "$(dirname "$out_file")"
  bench_results_header side-by-side "$command_line" >"$out_file"
fi
emit() {  # one result line, on stdout and in the results file
  echo "$1"
  [ -z "$out_file" ] || echo "$1" >>"$out_file"
}
note() {  # a `# echo: ...` line, on stderr and in the results file
  echo "# echo: $1" >&2
  [ -z "$out_file" ] || echo "# echo: $1" >>"$out_file"
}
conns=50
port=$((first_port - 1))
# The servers' start, checks and stop, and the traps that stop them on exit and signals.
source "$(dirname "$0")/../serve.sh"
serve_traps
failed=0
# The Tokio peer (bench/tokio, Debian's Tokio 1.24 crates built offline); without it, go on.
tokio_log=$serve_dir/tokio.log
if ! tokio=$(bash "$(dirname "$0")/../tokio/build.sh" 2>"$tokio_log"); then
  tokio=""
  echo "# tokio peer not built, going on without it: $(grep -v '^ *$' "$tokio_log" | tail -n 1)" >&2
fi

bash "$(dirname "$0")/ensure_build.sh" "$build" examples/echo_server bench/ipc/echo_load
if ! ninja -C "$build" bench/ipc/uring_echo >/dev/null 2>&1; then
  echo "# C io_uring floor not built (no C compiler?), going on without it" >&2
fi
if ! ninja -C "$build" bench/ipc/asio_echo_uring bench/ipc/asio_echo_epoll >/dev/null 2>&1; then
  echo "# Asio echo peers not built (Boost >= 1.81 missing?), going on without them" >&2
fi

servers=()
[[ -x $build/bench/ipc/uring_echo ]] && servers+=("c-uring-floor|$build/bench/ipc/uring_echo PORT")
servers+=("corio-1w|$build/examples/echo_server --port PORT --workers 1")
servers+=("corio-1w-pbuf|$build/examples/echo_server --port PORT --workers 1 --provided-buffers")
servers+=("corio-2w|$build/examples/echo_server --port PORT --workers 2")
[[ -x $build/bench/ipc/asio_echo_uring ]] && servers+=("asio-uring|$build/bench/ipc/asio_echo_uring PORT 1")
[[ -x $build/bench/ipc/asio_echo_epoll ]] && servers+=("asio-epoll|$build/bench/ipc/asio_echo_epoll PORT 1")
[[ -n $tokio ]] && servers+=("tokio-1w|$tokio echo PORT 1")
[[ -n $tokio ]] && servers+=("tokio-2w|$tokio echo PORT 2")

for r in $(seq "$repeat"); do
  for size in 64 16384; do
    for entry in "${servers[@]}"; do
      name=${entry%%|*}
      read -r -a cmd <<<"${entry#*|}"
      if ! port=$(serve_free_port $((port + 1))); then
        note "$name ($size B) did not start: no free port"
        exit 1
      fi
      if ! serve_start "$port" "${cmd[@]//PORT/$port}"; then
        note "$name ($size B) did not start: $serve_error"
        failed=1
        continue
      fi
      if ! serve_load "$build/bench/ipc/echo_load" --port "$port" --conns $conns --size $size --seconds "$seconds" \
        --warmup 1 --stat-pid "$serve_pid"; then
        note "$name ($size B) failed: $serve_error"
        failed=1
        continue
      fi
      serve_stop
      rps=$(awk '{for (i = 1; i < NF; i++) if ($i == "rps") print $(i + 1)}' "$serve_dir/load.out")
      us=$(awk '{for (i = 1; i < NF; i++) if ($i == "us_per_request") print $(i + 1)}' "$serve_dir/load.out")
      emit "echo_${size}B_rps $name $rps req/s"
      emit "echo_${size}B_cpu $name $us us/req"
    done
  done
done
if [ "$failed" = 1 ]; then
  echo "echo.sh: a server did not start or its run failed (the '# echo:' lines above)" >&2
  exit 1
fi
