#!/usr/bin/env bash
# The job server demo: starts job_server on free ports, runs three Python clients written
# exactly like the tutorial's (its MY_Client, unmodified, through tutorial_clients.py) and
# a C++ job_client with two tasks, all at once, prints what each received, and stops the
# server with SIGTERM (its last line says what happened to every job).
#   demo.sh JOB_SERVER JOB_CLIENT [PYTHON]      (PYTHON: default /usr/bin/python3)
# Exit status 0 when every client got all its results and the server ended cleanly.
set -u
server=$1
client=$2
py=${3:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../common/pythons.sh"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

"$server" --port-sender 0 --port-receiver 0 > "$work/server.log" 2>&1 &
spid=$!
sport=$(last_field_of_line "$work/server.log" "^sender listening on ")
rport=$(last_field_of_line "$work/server.log" "^receiver listening on ")
if [[ -z $sport || -z $rport ]]; then
  echo "demo: job_server did not start"; cat "$work/server.log"; exit 1
fi
echo "job_server: GetAudioQueue on port $sport, result channels on port $rport"

pids=()
for name in alice bob carol; do
  "$py" "$here/tutorial_clients.py" "$sport" "$rport" demo "$name" > "$work/$name.log" 2>&1 &
  pids+=($!)
done
"$client" --port-sender "$sport" --port-receiver "$rport" --channel cpp --tasks 2 \
  hello b:reversed 12 2.5 > "$work/cpp.log" 2>&1 &
pids+=($!)
status=0
for p in "${pids[@]}"; do
  wait "$p" || status=1
done
for name in alice bob carol cpp; do
  echo "--- $name"
  cat "$work/$name.log"
done
kill -TERM $spid
wait $spid || status=1
echo "--- job_server"
cat "$work/server.log"
exit $status
