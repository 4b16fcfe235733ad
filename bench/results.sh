#!/usr/bin/env bash
# Sourced by the benchmark runners (bench/run.sh, bench/ipc/echo.sh, bench/process/run.sh,
# bench/scale.sh) for their `--out FILE` option: a results file is a header of `# key: value`
# lines saying what ran, when and where, then the runner's `<benchmark> <system> <value>
# <unit>` lines (one per repeat; bench/report.sh takes the median of each pair).
#
#   bench_results_header KIND COMMAND...   prints the header (KIND: side-by-side or scaling)

bench_results_header() {
  local kind=$1
  shift
  local cpu
  cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
  echo "# corio benchmark results"
  echo "# kind: $kind"
  echo "# command: $*"
  echo "# date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "# machine: $(uname -srm), $(nproc) CPUs, ${cpu:-unknown CPU}"
  echo "# load: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown) (1, 5, 15 min averages at the start)"
}
