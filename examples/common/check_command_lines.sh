#!/usr/bin/env bash
# Checks one example's command line (examples/common/args.hpp):
#   check_command_lines.sh EXAMPLE [BAD-LINE [:: BAD-LINE]...]
# - `EXAMPLE --help` exits 0 and prints a usage line on stdout;
# - `EXAMPLE --no-such-option` and every BAD-LINE (arguments separated by `::`) exit with
#   status 2, print a message on stderr and nothing on stdout (nothing started), quickly.
set -u
exe=$1
shift
name=$(basename "$exe")
failures=0
out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT

run() {  # run ARGS...: runs the example with a time limit, fills $out/$err, sets $rc
  timeout 30 "$exe" "$@" >"$out" 2>"$err" </dev/null
  rc=$?
}

describe() {
  local s="" a
  for a in "$@"; do s+=" '$a'"; done
  printf '%s' "$s"
}

run --help
if [[ $rc -ne 0 ]] || ! grep -q '^usage: ' "$out"; then
  echo "FAIL: $name --help: status $rc, stdout: $(head -c 300 "$out")"
  failures=$((failures + 1))
else
  echo "ok:   $name --help prints usage"
fi

check_bad() {
  run "$@"
  local what="$name$(describe "$@")"
  if [[ $rc -ne 2 ]]; then
    echo "FAIL: $what: status $rc, expected 2; stderr: $(head -c 300 "$err")"
    failures=$((failures + 1))
  elif [[ ! -s $err ]]; then
    echo "FAIL: $what: no message on stderr"
    failures=$((failures + 1))
  elif [[ -s $out ]]; then
    echo "FAIL: $what: printed on stdout (something started): $(head -c 300 "$out")"
    failures=$((failures + 1))
  else
    echo "ok:   $what -> $(head -n 1 "$err")"
  fi
}

check_bad --no-such-option
line=()
for a in "$@"; do
  if [[ $a == "::" ]]; then
    check_bad "${line[@]}"
    line=()
  else
    line+=("$a")
  fi
done
if [[ $# -gt 0 ]]; then
  check_bad "${line[@]}"
fi
if [[ $failures -ne 0 ]]; then
  echo "$failures command-line check(s) failed"
  exit 1
fi
