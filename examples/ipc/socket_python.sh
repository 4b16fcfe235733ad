#!/usr/bin/env bash
# The socket_server and socket_client examples against Python's own, unmodified
# multiprocessing.connection, for every Python 3 found now: Debian's /usr/bin/python3
# always, and each version in pyenv's versions folder ($PYENV_ROOT, default ~/.pyenv).
#   1. corio's socket_server and two Python Clients (the tutorial's client.py as one-liners);
#   2. Python's Listener running the tutorial's server.py loop and two corio socket_clients.
# Each must show the tutorial's messages in order and end cleanly.
#   socket_python.sh SOCKET_SERVER SOCKET_CLIENT
set -u
server=$1
client=$2
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
failures=0

source "$(cd "$(dirname "$0")" && pwd)/../common/pythons.sh"
find_pythons || exit 1


# The tutorial's client.py (without its sleeps); the first client waits for the server to
# end its connection after 'close connection', so the second one's 'close server' comes last.
read -r -d '' client_py <<'PY'
import sys
from multiprocessing.connection import Client
address = ('localhost', int(sys.argv[1]))
conn = Client(address, authkey=b'password')
conn.send('foo1')
conn.send('foo2')
conn.send('close connection')
try:
    conn.recv()
except EOFError:
    pass
conn.close()
conn = Client(address, authkey=b'password')
conn.send('foo3')
conn.send('close server')
conn.close()
PY

# The tutorial's server.py on a free port (printed first).
read -r -d '' server_py <<'PY'
from multiprocessing.connection import Listener
listener = Listener(('localhost', 0), authkey=b'password')
print('port', listener.address[1], flush=True)
running = True
while running:
    conn = listener.accept()
    print("connection accepted from {}".format(listener.last_accepted), flush=True)
    while True:
        msg = conn.recv()
        print(msg, flush=True)
        if isinstance(msg, str) and msg == 'close connection':
            conn.close()
            break
        if isinstance(msg, str) and msg == 'close server':
            conn.close()
            running = False
            break
listener.close()
PY

# Waits up to 30 s for PID to end (then kills it); sets $status to its exit status.
finish() {
  local pid=$1
  for _ in $(seq 600); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill "$pid" 2>/dev/null
  wait "$pid"
  status=$?
}

expected_messages=$'foo1\nfoo2\nclose connection\nfoo3\nclose server'

check() {  # check WHAT LOG STATUS
  local what=$1 log=$2 status=$3 accepted messages
  accepted=$(grep -c "^connection accepted from ('127.0.0.1', [0-9]*)$" "$log")
  messages=$(grep -E '^(foo[0-9]|close connection|close server)$' "$log")
  if [[ $status -eq 0 && $accepted -eq 2 && $messages == "$expected_messages" ]]; then
    echo "ok:   $what"
  else
    echo "FAIL: $what (status $status, $accepted connections accepted); output:"
    sed 's/^/      /' "$log"
    failures=$((failures + 1))
  fi
}

for py in "${pythons[@]}"; do
  version=$("$py" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')

  # 1. corio's server, Python's clients.
  # A new log each time: the background job truncates its file only once it runs, so a
  # reused name could still show the previous server's port.
  log=$(mktemp "$work/server.XXXXXX")
  "$server" --port 0 > "$log" 2>&1 &
  spid=$!
  port=$(last_field_of_line "$log" '^listening on ')
  if [[ -z $port ]]; then
    echo "FAIL: socket_server did not start"; cat "$log"; exit 1
  fi
  timeout 60 "$py" -c "$client_py" "$port" >> "$log" 2>&1
  pystatus=$?
  finish $spid
  sstatus=$status
  check "Python $version Client -> corio socket_server" "$log" $((pystatus + sstatus))

  # 2. Python's Listener, corio's clients.
  log=$(mktemp "$work/listener.XXXXXX")
  "$py" -c "$server_py" > "$log" 2>&1 &
  ppid_=$!
  port=$(last_field_of_line "$log" '^port ')
  if [[ -z $port ]]; then
    echo "FAIL: Python $version Listener did not start"; cat "$log"; failures=$((failures + 1)); continue
  fi
  "$client" --port "$port" --delay-ms 0 foo1 foo2 'close connection' > /dev/null &&
    "$client" --port "$port" --delay-ms 0 foo3 'close server' > /dev/null
  cstatus=$?
  finish $ppid_
  pstatus=$status
  check "corio socket_client -> Python $version Listener" "$log" $((cstatus + pstatus))
done

echo "${#pythons[@]} Python version(s) tested"
exit $((failures > 0))
