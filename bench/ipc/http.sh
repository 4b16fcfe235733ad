#!/usr/bin/env bash
# HTTP keep-alive benchmark: wrk -t1 -c50 against corio's http_hello and against nginx
# serving the same 13-byte body from memory (`return 200`), with the same worker count.
# Needs the Debian packages wrk and nginx (or nginx-light). Loopback only.
# Prints `<benchmark> <system> <value> <unit>` for requests/s and p50/p99 latency.
#   bash bench/ipc/http.sh [BUILD_DIR=build-ipc-rel] [SECONDS=5] [WORKERS=1]
set -euo pipefail
build=${1:-build-ipc-rel}
seconds=${2:-5}
workers=${3:-1}
command -v wrk > /dev/null || { echo "http.sh: wrk not installed (apt-get install wrk)" >&2; exit 77; }
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}

report() {  # name, wrk output
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<< "$2")
  p50=$(awk '$1 == "50%" {print $2}' <<< "$2")
  p99=$(awk '$1 == "99%" {print $2}' <<< "$2")
  echo "http_hello_rps $1 $rps req/s"
  echo "http_hello_p50 $1 $p50 latency"
  echo "http_hello_p99 $1 $p99 latency"
}

bash "$(dirname "$0")/ensure_build.sh" "$build" examples/http_hello

port=18080
$build/examples/http_hello --port $port --workers "$workers" > /dev/null &
pid=$!
wait_port $port
wrk -t1 -c50 -d1s http://127.0.0.1:$port/ > /dev/null
report "corio-${workers}w" "$(wrk -t1 -c50 -d"${seconds}"s --latency http://127.0.0.1:$port/)"
kill $pid; wait $pid 2>/dev/null || true

if [[ -x $nginx_bin ]]; then
  port=18081
  cat > "$dir/nginx.conf" <<CONF
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port;
    location = / { default_type text/plain; return 200 "Hello, World!"; }
  }
}
CONF
  "$nginx_bin" -c "$dir/nginx.conf" -g 'daemon off;' &
  npid=$!
  wait_port $port
  wrk -t1 -c50 -d1s http://127.0.0.1:$port/ > /dev/null
  report "nginx-${workers}w" "$(wrk -t1 -c50 -d"${seconds}"s --latency http://127.0.0.1:$port/)"
  kill $npid; wait $npid 2>/dev/null || true
else
  echo "http.sh: nginx not installed" >&2
fi
