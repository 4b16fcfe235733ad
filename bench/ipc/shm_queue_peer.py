"""Python peer of bench/ipc/shm_bench: one-way throughput of multiprocessing.Queue.

  python3 shm_queue_peer.py SIZE PRODUCERS COUNT

PRODUCERS processes each put COUNT / PRODUCERS bytes objects of SIZE bytes into one
multiprocessing.Queue; this process gets all of them. The clock starts when the producers
are released (an Event) and stops at the last get: process start-up is not measured.
Prints `stream_<SIZE>_<PRODUCERS>p python-mp-queue <msgs/s> msgs/s`."""
import multiprocessing
import sys
import time


def produce(queue, go, size, count):
    payload = b"x" * size
    go.wait()
    for _ in range(count):
        queue.put(payload)


def main():
    size, producers, count = (int(a) for a in sys.argv[1:4])
    per_producer = count // producers
    total = per_producer * producers
    queue = multiprocessing.Queue()
    go = multiprocessing.Event()
    procs = [multiprocessing.Process(target=produce, args=(queue, go, size, per_producer)) for _ in range(producers)]
    for p in procs:
        p.start()
    time.sleep(0.2)  # let them reach the event
    t0 = time.perf_counter()
    go.set()
    got = 0
    for _ in range(total):
        if len(queue.get()) == size:
            got += 1
    dt = time.perf_counter() - t0
    for p in procs:
        p.join()
    if got != total:
        print(f"python peer: received {got} of {total} intact", file=sys.stderr)
        sys.exit(1)
    print(f"stream_{size}_{producers}p python-mp-queue {total / dt:.0f} msgs/s")


if __name__ == "__main__":
    main()
