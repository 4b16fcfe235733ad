#!/usr/bin/env bash
# job_server against the tutorial's unmodified MY_Client (my_client.py, driven by
# tutorial_clients.py) for every Python 3 found now: Debian's /usr/bin/python3 always, and
# each version in pyenv's versions folder ($PYENV_ROOT, default ~/.pyenv). For each: start
# job_server on free ports, run the checks, stop the server with SIGTERM and check that it
# ends cleanly having dropped nothing.
#   tutorial_python.sh JOB_SERVER
set -u
server=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
failures=0

source "$(cd "$(dirname "$0")" && pwd)/../common/pythons.sh"
find_pythons || exit 1


tested=()
for py in "${pythons[@]}"; do
  version=$("$py" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
  log=$(mktemp "$work/server.XXXXXX")
  "$server" --port-sender 0 --port-receiver 0 --workers 2 > "$log" 2>&1 &
  spid=$!
  sport=$(last_field_of_line "$log" '^sender listening on ')
  rport=$(last_field_of_line "$log" '^receiver listening on ')
  if [[ -z $sport || -z $rport ]]; then
    echo "FAIL: job_server did not start"; cat "$log"; exit 1
  fi
  timeout 300 "$py" "$here/tutorial_clients.py" "$sport" "$rport" check > "$work/py.log" 2>&1
  pystatus=$?
  kill -TERM $spid
  wait $spid
  sstatus=$?
  sed "s/^/      [$version] /" "$work/py.log"
  if [[ $pystatus -eq 0 && $sstatus -eq 0 ]] && grep -q '0 queued job(s) dropped' "$log"; then
    echo "ok:   Python $version: the tutorial's MY_Client against job_server"
    tested+=("$version")
  else
    echo "FAIL: Python $version (client status $pystatus, server status $sstatus); server output:"
    sed 's/^/      /' "$log"
    failures=$((failures + 1))
  fi
done

echo "Python versions tested: ${tested[*]:-none} (${#pythons[@]} found)"
exit $((failures > 0))
