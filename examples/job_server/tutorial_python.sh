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

pythons=()
seen=" "
add_python() {
  local p=$1 real
  [[ -x $p ]] || return 0
  real=$(readlink -f "$p")
  [[ $seen == *" $real "* ]] && return 0
  "$p" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 6) else 1)' 2>/dev/null || return 0
  seen+="$real "
  pythons+=("$p")
}
add_python /usr/bin/python3
for d in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/*/; do
  add_python "${d}bin/python3"
done
if [[ ${#pythons[@]} -eq 0 ]]; then
  echo "FAIL: no Python 3 found (Debian's /usr/bin/python3 is expected)"
  exit 1
fi

# Waits until FILE has a line matching REGEX and prints the port at the end of it.
wait_port() {
  local file=$1 regex=$2 v=""
  for _ in $(seq 600); do
    v=$(grep -m1 -E "$regex" "$file" 2>/dev/null | awk '{print $NF}')
    [[ -n $v ]] && break
    sleep 0.05
  done
  echo "${v##*:}"
}

tested=()
for py in "${pythons[@]}"; do
  version=$("$py" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
  log=$(mktemp "$work/server.XXXXXX")
  "$server" --port-sender 0 --port-receiver 0 --workers 2 > "$log" 2>&1 &
  spid=$!
  sport=$(wait_port "$log" '^sender listening on ')
  rport=$(wait_port "$log" '^receiver listening on ')
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
