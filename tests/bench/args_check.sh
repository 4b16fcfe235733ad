#!/usr/bin/env bash
# The benchmark programs refuse bad arguments with their usage and exit status 2, before
# running anything: an unknown benchmark (runtime_bench once printed nothing and exited 0)
# and a worker count that is not a positive integer (atoi read "abc" as 0 workers and the
# runtime aborted with a core dump); shm_bench (optional third argument) a missing value,
# an --only other than pingpong or stream (it ran nothing and exited 0) and a count that is
# not a whole integer (atoi read "5x" as 5).
#   args_check.sh RUNTIME_BENCH SYNC_BENCH [SHM_BENCH]
set -uo pipefail
runtime_bench=$1
sync_bench=$2
shm_bench=${3:-}
failed=0
expect_usage() {  # expect_usage COMMAND...: exit status 2 and "usage:" on stderr, nothing on stdout
  local out err rc
  err=$(mktemp)
  out=$(timeout 20 "$@" 2>"$err")
  rc=$?
  if [ "$rc" -ne 2 ] || ! grep -q "usage:" "$err" || [ -n "$out" ]; then
    echo "FAIL: $(basename "$1") ${*:2}: exit $rc (want 2), stdout '$out', stderr: $(head -c 300 "$err")" >&2
    failed=1
  else
    echo "ok: $(basename "$1") ${*:2}: usage, exit 2"
  fi
  rm -f "$err"
}
expect_usage "$runtime_bench" bogus
expect_usage "$runtime_bench" tree --bogus
for w in abc 0 -1 2x ""; do
  expect_usage "$runtime_bench" tree --workers "$w"
  expect_usage "$sync_bench" mutex1m --workers "$w"
done
expect_usage "$sync_bench" bogus
if [ -n "$shm_bench" ]; then
  expect_usage "$shm_bench" --only foo
  expect_usage "$shm_bench" --only
  expect_usage "$shm_bench" --rounds 5x
  expect_usage "$shm_bench" --repeat
  expect_usage "$shm_bench" --bogus
fi
exit "$failed"
