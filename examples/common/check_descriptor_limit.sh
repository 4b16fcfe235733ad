#!/usr/bin/env bash
# Checks that a server example serves --max-connections N whatever the soft limit on open
# descriptors (RLIMIT_NOFILE) it starts with, and says so when the hard limit is too low
# (examples/common/descriptor_limit.hpp):
#   check_descriptor_limit.sh EXAMPLE raise [ARGS...]   soft limit 64, N = 300: it raises
#                                                       the soft limit and serves 300
#                                                       connections held open at once
#   check_descriptor_limit.sh EXAMPLE cap [ARGS...]     soft 64, hard 200, N = 1000: a
#                                                       message on stderr gives the M
#                                                       connections that fit; it serves M
#                                                       held open at once
#   check_descriptor_limit.sh EXAMPLE default [ARGS...] soft 64, hard 200, no
#                                                       --max-connections (a default far
#                                                       above what fits): nothing on
#                                                       stderr, the soft limit raised to
#                                                       the hard one, the M it serves
#                                                       lowered to what fits under it;
#                                                       it serves M held open at once
# EXAMPLE runs as `EXAMPLE --port 0 --workers 2 --max-connections N ARGS...` (without
# --max-connections N in default mode) and must say the number it serves on its
# "listening on HOST:PORT (at most M connections at once)" line: N (raise), the M of the
# message (cap), or, by default, at most what the hard limit leaves beside the
# descriptors it has open and the 64 spare ones (examples/common/descriptor_limit.hpp),
# and at least that less the descriptors it opened since. What serving
# means, and what the connection past the limit (M + 1) gets, depends on the example:
#   http_hello    GET / answered 200; past the limit, 503 at once;
#   echo_server   a line echoed; past the limit, no echo while the others stay open, and
#                 the echo once one of them closes.
# Both then stop on SIGTERM with status 0. (Without the raise, connections past the soft
# limit wait in the listen backlog unanswered: accept fails with EMFILE.)
set -u
. "$(dirname "${BASH_SOURCE[0]}")/listening.sh"
exe=$1
mode=$2
shift 2
name=$(basename "$exe")
out=$(mktemp)
err=$(mktemp)
pid=
trap 'rm -f "$out" "$err"; if [[ -n $pid ]]; then kill -9 "$pid" 2>/dev/null; fi' EXIT
fail() {
  echo "FAIL: $name, descriptor limit ($mode): $*"
  echo "--- its stdout:"
  tail -n 20 "$out"
  echo "--- its stderr:"
  tail -n 20 "$err"
  exit 1
}

case $mode in
  raise) soft=64 hard= wanted=300 ;;
  cap) soft=64 hard=200 wanted=1000 ;;
  default) soft=64 hard=200 wanted= ;;
  *) echo "unknown mode '$mode'" >&2; exit 2 ;;
esac
case $name in
  http_hello | echo_server) ;;
  *) echo "no exchange known for '$name'" >&2; exit 2 ;;
esac

# exchange FD I [SECONDS]: one request on connection FD (the I-th); the first line of its
# answer in $line ('' if none came within SECONDS, default 10).
exchange() {
  if [[ $name == http_hello ]]; then
    printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\n' >&"$1"
  else
    printf 'hello %d\n' "$2" >&"$1"
  fi
  line=
  read -r -t "${3:-10}" line <&"$1"
  line=${line%$'\r'}
}
served() {  # served I: whether $line is the answer of a connection served (the I-th)
  if [[ $name == http_hello ]]; then
    [[ $line == "HTTP/1.1 200"* ]]
  else
    [[ $line == "hello $1" ]]
  fi
}

# This script holds one descriptor per connection too: at most `wanted`, or in cap and
# default modes fewer than the hard limit given to the example.
opened=${hard:-$wanted}
[[ -z $wanted ]] || (( opened < wanted )) || opened=$wanted
asked=()
[[ -z $wanted ]] || asked=(--max-connections "$wanted")
(( $(ulimit -Sn) > opened + 50 )) || ulimit -Sn $((opened + 50)) 2>/dev/null ||
  { echo "SKIP: this shell cannot open $opened descriptors"; exit 77; }
if [[ -z $hard && $(ulimit -Hn) != unlimited ]] && (( $(ulimit -Hn) < wanted + 200 )); then
  echo "SKIP: the hard limit on descriptors ($(ulimit -Hn)) is below what $wanted connections need"
  exit 77
fi
(
  ulimit -Sn "$soft" || exit 125
  if [[ -n $hard ]]; then ulimit -Hn "$hard" || exit 125; fi
  exec "$exe" --port 0 --workers 2 "${asked[@]}" "$@"
) >"$out" 2>"$err" </dev/null &
pid=$!
wait_listening "$pid" "$out"
[[ -n ${port:-} ]] || fail "no 'listening on' line"
limit=$(awk '/^Max open files/ { print $4 }' "/proc/$pid/limits")
# The number it serves at once, from its "listening on" line (looked at by wait_listening).
serving=$(sed -n 's/.*listening on .*(at most \([0-9]*\) connections at once).*/\1/p' "$out" | head -n 1)
[[ -n $serving ]] || fail "no '(at most M connections at once)' on its 'listening on' line"

if [[ $mode == raise ]]; then
  [[ ! -s $err ]] || fail "a message on stderr with the hard limit high enough"
  (( limit >= wanted )) || fail "its soft limit is $limit, too low for $wanted connections"
  (( serving == wanted )) || fail "serving at most $serving connections, not the $wanted asked for"
  serve=$wanted
elif [[ $mode == default ]]; then
  [[ ! -s $err ]] || fail "a message on stderr at a start without --max-connections: the default must fit silently"
  (( limit == hard )) || fail "its soft limit is $limit, not raised to the hard limit $hard"
  # Lowered to what fits: the hard limit less the 64 spare descriptors and those open when
  # it counted, which were at least stdin, stdout and stderr, and at most those open now.
  open_now=$(ls "/proc/$pid/fd" | wc -l)
  most=$((hard - 64 - 3)) least=$((hard - 64 - open_now))
  (( serving <= most )) || fail "serving at most $serving connections: more than the hard limit $hard allows (at most $most)"
  (( serving >= least && serving >= 1 )) ||
    fail "serving at most $serving connections: fewer than the hard limit $hard allows with $open_now descriptors open ($least)"
  serve=$serving
else
  grep -q 'hard limit' "$err" || fail "no message about the hard limit"
  serve=$(sed -n 's/.*serving at most \([0-9]*\) connections.*/\1/p' "$err")
  [[ -n $serve ]] && (( serve >= 1 && serve < wanted )) || fail "no 'serving at most M connections' with 0 < M < $wanted"
  (( serving == serve )) || fail "serving at most $serving connections by its 'listening on' line, $serve by its message"
  (( limit == hard )) || fail "its soft limit is $limit, not raised to the hard limit $hard"
fi

# $serve connections, each served and kept open; then one more is turned away (http_hello)
# or waits for a place (echo_server).
fds=()
for ((i = 1; i <= serve; ++i)); do
  exec {fd}<>"/dev/tcp/$host/$port" || fail "connection $i could not be opened"
  fds+=("$fd")
  exchange "$fd" "$i"
  served "$i" || fail "connection $i of $serve: '$line' instead of an answer (within 10 s)"
done
next=$((serve + 1))
if ! exec {extra}<>"/dev/tcp/$host/$port"; then
  fail "the connection past the limit could not be opened"
elif [[ $name == http_hello ]]; then
  exchange "$extra" "$next"
  [[ $line == "HTTP/1.1 503"* ]] || fail "connection $next: '$line' instead of 503 (within 10 s)"
  past="turned away with 503"
else
  exchange "$extra" "$next" 1
  [[ -z $line ]] || fail "connection $next, past the limit, echoed '$line' while $serve others are open"
  first=${fds[0]}
  exec {first}>&-  # a place comes free
  line=
  read -r -t 10 line <&"$extra"
  served "$next" || fail "connection $next: '$line' instead of its echo (within 10 s) once connection 1 closed"
  past="served only once another closed"
fi

kill -TERM "$pid"
for ((i = 0; i < 600; ++i)); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$pid" 2>/dev/null && fail "still running 60 s after SIGTERM"
wait "$pid"
rc=$?
pid=
[[ $rc -eq 0 ]] || fail "exit status $rc after SIGTERM"
echo "ok:   $name ($mode): soft limit $limit, $serve connections served at once, the next one $past"
