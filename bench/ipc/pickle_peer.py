"""Python side of bench/ipc/pickle_bench: the same messages as the C++ side, pickled with
protocol 4 by Python's C pickle module.

  pickle_peer.py DIR [NUMBER]   writes DIR/<name>.pickle for each message, then prints
                                `pickle_loads/<name> python <ns> ns/op` and
                                `pickle_dumps/<name> python <ns> ns/op`: process CPU time per
                                call, best of 5 timeit runs of NUMBER calls (default chosen
                                per message)
"""
import os
import pickle
import queue
import sys
import time
import timeit

MESSAGES = {
    "request": ("7f7326de1490", "put", ((b"ab", "x", 7),), {}),
    "reply_error": ("#ERROR", queue.Empty()),
    "dict100": {"key%d" % i: i for i in range(100)},
    "list1000": list(range(1000)),
    "bytes64k": b"\x01" * 65536,
}


def main():
    directory = sys.argv[1]
    number = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    for name, message in MESSAGES.items():
        data = pickle.dumps(message, protocol=4)
        with open(os.path.join(directory, name + ".pickle"), "wb") as f:
            f.write(data)
        n = number or max(1000, 2000000 // max(len(data), 1))
        # Statements, not lambdas: timeit inlines them in its loop, so no extra Python call
        # per operation is counted against Python.
        env = {"loads": pickle.loads, "dumps": pickle.dumps, "data": data, "message": message}
        loads = min(timeit.repeat("loads(data)", globals=env, number=n, repeat=5, timer=time.process_time)) / n
        dumps = min(timeit.repeat("dumps(message, 4)", globals=env, number=n, repeat=5,
                                  timer=time.process_time)) / n
        print("pickle_loads/%s python %.1f ns/op" % (name, loads * 1e9))
        print("pickle_dumps/%s python %.1f ns/op" % (name, dumps * 1e9))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
