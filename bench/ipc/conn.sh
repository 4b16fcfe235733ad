#!/usr/bin/env bash
# Python's multiprocessing.connection, round trips of small pickled messages (the str
# 'foo1', authkey b'password', conn.send(conn.recv()) on the server) over TCP loopback:
#   python-python   Python's Listener (a thread per connection) and Python Clients
#   corio-python    corio's listener (bench/ipc/conn_bench server, 1 worker), Python Clients
#   corio-corio     corio's listener and corio clients (conn_bench client, 1 worker)
# Shapes: 1 connection ping-pong; 4 connections ping-pong (Python: 4 client processes);
# corio-corio also 64 connections; messages in flight, 16 per connection, each client
# sending one after every reply (Python: python-python only, 4 connections x 16 and 16
# connections x 16, one client process per connection (conn_peer.py client PORT SECONDS
# DEPTH); corio-corio 16 connections x 16, one send per message), and batched (corio
# only, 1 and 16 connections x 16: client and server recv_some every reply already
# buffered and send_many as many in one sendmsg; `_batch` rows). The ratios compare
# corio's figures with Python's best python-python shape.
# Prints `<benchmark> <system> <value> <unit>` lines: round trips/s and server CPU
# µs/message (utime + stime of the server process over the run, from /proc/PID/stat),
# then the ratios. The Python is Debian's python3 unless PYTHON is set.
#   bash bench/ipc/conn.sh [BUILD_DIR=build-ipc-rel] [SECONDS=5] [REPEAT=1]
set -euo pipefail
build=${1:-build-ipc-rel}
seconds=${2:-5}
repeat=${3:-1}
python=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/ensure_build.sh" "$build" bench/ipc/conn_bench
bench=$build/bench/ipc/conn_bench
out=$(mktemp)
trap 'rm -f "$out"; kill $(jobs -p) 2>/dev/null || true' EXIT
tck=$(getconf CLK_TCK)

cpu_ticks() {  # utime + stime of PID, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}

start_server() {  # start_server python|corio [BATCH]: sets $pid and $port
  local log
  log=$(mktemp)
  if [[ $1 == python ]]; then
    "$python" "$here/conn_peer.py" server 0 > "$log" &
  else
    "$bench" server --port 0 --workers 1 --batch "${2:-0}" > "$log" &
  fi
  pid=$!
  port=""
  for _ in $(seq 200); do
    port=$(awk '/^port/ {print $2}' "$log")
    [[ -n $port ]] && break
    sleep 0.05
  done
  rm -f "$log"
  [[ -n $port ]]
}

# Every client runs under `timeout`: one that has not finished SECONDS + 30 s after it
# started is killed, and its figure is reported as failed instead of hanging the run.
limit=$((${seconds%.*} + 30))

run_clients() {  # run_clients python|corio CONNECTIONS DEPTH [BATCH]: prints the total round trips, or nothing
  local kind=$1 conns=$2 depth=$3 batch=${4:-0}
  if [[ $kind == python ]]; then
    local pids=() logs=() i total=0 n failed=0
    for i in $(seq "$conns"); do
      logs+=("$(mktemp)")
      timeout -k 5 "$limit" "$python" "$here/conn_peer.py" client "$port" "$seconds" "$depth" > "${logs[-1]}" &
      pids+=($!)
    done
    for i in "${pids[@]}"; do
      wait "$i" || failed=1
    done
    for l in "${logs[@]}"; do
      n=$(awk '/^round_trips/ {print $2}' "$l")
      [[ -n $n ]] || failed=1
      total=$((total + ${n:-0}))
      rm -f "$l"
    done
    if ((failed)); then
      echo "conn.sh: a Python client failed or ran past ${limit} s" >&2
      return
    fi
    echo "$total"
  else
    timeout -k 5 "$limit" "$bench" client --port "$port" --connections "$conns" --depth "$depth" \
      --seconds "$seconds" --workers 1 --batch "$batch" |
      awk '/^round_trips/ {print $2}'
  fi
}

measure() {  # measure NAME SERVER CLIENT CONNECTIONS DEPTH [BATCH: 1 = batched, corio only]
  local name=$1 server=$2 client=$3 conns=$4 depth=$5 batch=${6:-0}
  if ! start_server "$server" $((batch ? depth : 0)); then
    echo "conn.sh: the $server server did not start" >&2
    return
  fi
  local before after n
  before=$(cpu_ticks $pid)
  n=$(run_clients "$client" "$conns" "$depth" "$batch" || true)
  after=$(cpu_ticks $pid)
  kill $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  local system="$server-$client"
  if [[ -z $n ]]; then
    echo "conn_${name}_rt $system FAILED (a client failed or timed out; not counted)" >&2
    return
  fi
  awk -v n="$n" -v s="$seconds" -v name="$name" -v sys="$system" \
    'BEGIN { printf "conn_%s_rt %s %.0f rt/s\n", name, sys, n / s }' | tee -a "$out"
  awk -v n="$n" -v t=$((after - before)) -v tck="$tck" -v name="$name" -v sys="$system" \
    'BEGIN { printf "conn_%s_cpu %s %.2f us/msg\n", name, sys, (n > 0 ? t / tck * 1e6 / n : 0) }' | tee -a "$out"
}

echo "# $("$python" --version 2>&1), $seconds s per figure, $(nproc) CPUs"
for _ in $(seq "$repeat"); do
  measure 1conn python python 1 1
  measure 1conn corio python 1 1
  measure 1conn corio corio 1 1
  measure 4conn python python 4 1
  measure 4conn corio python 4 1
  measure 4conn corio corio 4 1
  measure 64conn corio corio 64 1
  measure 4conn_x16 python python 4 16
  measure 16conn_x16 python python 16 16
  measure 16conn_x16 corio corio 16 16
  measure 1conn_x16_batch corio corio 1 16 1
  measure 16conn_x16_batch corio corio 16 16 1
done

# Medians and ratios.
python3 - "$out" <<'PY'
import statistics, sys
fig = {}
for line in open(sys.argv[1]):
    b, s, v, u = line.split()
    fig.setdefault((b, s), []).append(float(v))
m = {k: statistics.median(v) for k, v in fig.items()}
def get(b, s):
    return m.get((b, s))
pp = get('conn_1conn_rt', 'python-python')
best = max((v for (b, s), v in m.items() if s == 'python-python' and b.endswith('_rt')), default=None)
ours = [('conn_1conn_rt', 'corio-python'), ('conn_1conn_rt', 'corio-corio'), ('conn_4conn_rt', 'corio-corio'),
        ('conn_64conn_rt', 'corio-corio'), ('conn_16conn_x16_rt', 'corio-corio'),
        ('conn_1conn_x16_batch_rt', 'corio-corio'), ('conn_16conn_x16_batch_rt', 'corio-corio')]
for b, s in ours:
    if get(b, s) and pp:
        print(f"ratio {b} {s} / 1conn python-python: {get(b, s) / pp:.1f}x")
    if get(b, s) and best and b != 'conn_1conn_rt':
        print(f"ratio {b} {s} / best python-python ({best:.0f} rt/s): {get(b, s) / best:.1f}x")
for shape in ('1conn', '4conn'):
    cp, py = get(f'conn_{shape}_rt', 'corio-python'), get(f'conn_{shape}_rt', 'python-python')
    if cp and py:
        print(f"ratio conn_{shape}_rt Python clients: corio server / Python server: {cp / py:.2f}x")
    cc, pc = get(f'conn_{shape}_cpu', 'corio-python'), get(f'conn_{shape}_cpu', 'python-python')
    if cc and pc:
        print(f"ratio conn_{shape}_cpu server CPU per message: Python server / corio server: {pc / cc:.1f}x")
PY
