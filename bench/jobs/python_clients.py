"""Python clients for bench/jobs/jobs.sh: N processes, each the tutorial's MY_Client
(examples/job_server/my_client.py, unmodified) doing job round trips (SendAudio, then a
blocking ReceiveResult) for SECONDS. Prints one line: jobs/s, p50 and p99 latency in µs.
    python_clients.py SENDER_PORT RECEIVER_PORT CLIENTS SECONDS
"""
import os
import sys
import time
from multiprocessing import Process, Queue

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "job_server"))
import tutorial_clients  # noqa: E402


def client(sport, rport, index, seconds, out):
    module = tutorial_clients.load_tutorial_client(sport, rport)
    c = module.MY_Client("bench-%d-%d" % (os.getpid(), index))
    latencies = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        t0 = time.perf_counter()
        c.SendAudio(i, None)
        r = c.ReceiveResult(True)
        latencies.append(time.perf_counter() - t0)
        if r["data"] != i * i:
            raise SystemExit("wrong result %r for %d" % (r, i))
        i += 1
    out.put(latencies)


def main():
    sport, rport, n, seconds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    out = Queue()
    procs = [Process(target=client, args=(sport, rport, i, seconds, out)) for i in range(n)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    all_lat = []
    for _ in procs:
        all_lat.extend(out.get())
    for p in procs:
        p.join()
    elapsed = time.monotonic() - t0
    all_lat.sort()
    p50 = all_lat[len(all_lat) // 2] * 1e6
    p99 = all_lat[min(len(all_lat) - 1, int(len(all_lat) * 0.99))] * 1e6
    # jobs/s over the measuring window (each client runs SECONDS after connecting)
    print("%d %.1f %.1f %.1f" % (len(all_lat), len(all_lat) / seconds, p50, p99))


if __name__ == "__main__":
    main()
