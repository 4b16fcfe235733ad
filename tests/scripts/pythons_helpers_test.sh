#!/usr/bin/env bash
# Checks examples/common/pythons.sh's last_field_of_line, which the Python interop examples
# use to read the port a server prints: a line still being written ("port " before its
# number) is not read; the number is read once the line is complete. (CI once failed when
# a pyenv Python wrote "port " and the number in two writes and the script read "port".)
set -u
source "$1/examples/common/pythons.sh"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
failures=0

expect() {  # expect WHAT GOT WANT
  if [[ $2 == "$3" ]]; then echo "ok:   $1"; else echo "FAIL: $1: got '$2', want '$3'"; failures=$((failures + 1)); fi
}

# A half-written line, completed 0.3 s later.
printf 'hello\nport ' > "$work/a"
(sleep 0.3; printf '45435\n' >> "$work/a") &
expect "a line being written is waited for" "$(last_field_of_line "$work/a" '^port ')" 45435

# host:port at the end of a complete line.
printf 'listening on 127.0.0.1:5000\n' > "$work/b"
expect "host:port gives the port" "$(last_field_of_line "$work/b" '^listening on ')" 5000

# A file with no newline yet, then the whole line.
printf 'listening on 127.0.0.1:60' > "$work/c"
(sleep 0.3; printf '01\n' >> "$work/c") &
expect "a first line without its newline is waited for" "$(last_field_of_line "$work/c" '^listening on ')" 6001

# Completed lines before and after the match.
printf 'x\nport 7\ny\n' > "$work/d"
expect "the matching line among others" "$(last_field_of_line "$work/d" '^port ')" 7

[[ $failures -eq 0 ]]
