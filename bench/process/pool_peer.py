"""Python peers for bench/process: ProcessPoolExecutor(2).map(chunksize=1) and
multiprocessing.Pool(2).map (default chunking) over 100,000 trivial items, pool startup
excluded. Prints `<benchmark> <system> <value> <unit>`."""
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor


def square(x):
    return x * x


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    items = list(range(n))
    with ProcessPoolExecutor(2) as ex:
        list(ex.map(square, range(100)))  # warm up: start the workers
        t0 = time.perf_counter()
        out = list(ex.map(square, items, chunksize=1))
        dt = time.perf_counter() - t0
        assert out[-1] == square(n - 1)
    print(f"pool_per_item python_ppe_chunksize1 {n / dt:.0f} items/s")
    with multiprocessing.Pool(2) as pool:
        pool.map(square, range(100))
        t0 = time.perf_counter()
        out = pool.map(square, items)
        dt = time.perf_counter() - t0
        assert out[-1] == square(n - 1)
    print(f"pool_batched python_pool_map {n / dt:.0f} items/s")


if __name__ == "__main__":
    main()
