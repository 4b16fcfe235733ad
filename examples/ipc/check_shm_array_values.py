"""Checks the numbers shm_client prints for shm_server --self-test --count N.

    check_shm_array_values.py SHM_SERVER N

The server fills N Fibonacci numbers (1, 1, 2, 3, 5, 8 ...) into the shared array and
starts shm_client, which prints them on the same stdout ("client: Shared Array is :
[...]"). Each printed number must be the Fibonacci number modulo 2^64 (from the 94th on
they no longer fit 64 bits), written as an unsigned decimal; both programs must exit 0,
and stderr must hold no "runtime error" (UndefinedBehaviorSanitizer's report, where the
examples are built with it: the sum of two int64s overflowing is one).
"""
import re
import subprocess
import sys


def fibonacci_mod_2_64(count):
    numbers = []
    for i in range(count):
        numbers.append(1 if i < 2 else (numbers[i - 1] + numbers[i - 2]) % 2**64)
    return numbers


def main():
    server, count = sys.argv[1], int(sys.argv[2])
    run = subprocess.run([server, '--self-test', '--count', str(count)], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=90)
    problems = []
    if run.returncode != 0:
        problems.append(f'exit status {run.returncode}, expected 0')
    if 'runtime error' in run.stderr:
        problems.append('"runtime error" on stderr (undefined behaviour)')
    line = re.search(r'^client: Shared Array is : \[(.*)\]$', run.stdout, re.M)
    if not line:
        problems.append('no "client: Shared Array is : [...]" line')
    else:
        printed = line.group(1).split()
        expected = [str(n) for n in fibonacci_mod_2_64(count)]
        if len(printed) != count:
            problems.append(f'{len(printed)} numbers printed, expected {count}')
        wrong = [i for i, (p, e) in enumerate(zip(printed, expected)) if p != e]
        if wrong:
            i = wrong[0]
            problems.append(f'{len(wrong)} numbers wrong, the first at index {i}: {printed[i]}, expected {expected[i]}')
    if problems:
        print('check_shm_array_values: shm_server --self-test --count', count, file=sys.stderr)
        for p in problems:
            print('  ' + p, file=sys.stderr)
        print(run.stdout[-4000:] + run.stderr[-4000:], file=sys.stderr)
        return 1
    print(f'shm_server / shm_client: {count} Fibonacci numbers modulo 2^64 printed as expected')
    return 0


if __name__ == '__main__':
    sys.exit(main())
