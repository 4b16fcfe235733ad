"""Python side of tests/ipc/pickle_python_test.cpp: the same named samples as the C++ test.

  pickle_corpus.py write DIR   writes DIR/<name>.p<N>.pickle for every protocol N from 0 to
                               pickle.HIGHEST_PROTOCOL (at most 5), and DIR/<name>.pdefault.pickle
  pickle_corpus.py check DIR   loads every DIR/<name>.corio*.pickle (written by corio) and
                               compares it with the sample of that name, strictly: same types
                               all the way down, floats bit for bit, dicts in the same order,
                               exceptions by type, args and __dict__. Prints one line per
                               failure and a summary; exits 1 on any failure.
Runs on every Python from 3.6 on.
"""
import glob
import os
import pickle
import queue
import struct
import sys
from multiprocessing.managers import RemoteError, Token


def nested_lists(depth):
    v = []
    for _ in range(depth):
        v = [v]
    return v


def exception_with_state():
    e = ValueError("with state")
    e.detail = 5
    return e


def shared():
    a = [1, 2]
    return [a, a, (a,)]


SAMPLES = {
    "none": None,
    "true": True,
    "false": False,
    "ints": [0, 1, 255, 256, 65535, 65536, -1, -129, 2**31 - 1, -2**31, 2**31, 2**63 - 1, -2**63],
    "big_ints": [2**63, -2**63 - 1, 2**64, 2**70, -(2**100), 10**300],
    "huge_int": 2**2100 + 12345,
    "floats": [0.0, -0.0, 1.5, 1e300, -1e-300, float("inf"), float("-inf"), float("nan"), 5e-324],
    "strs": ["", "hello", "\u00fc\u00f1\u00ee", "\ud55c\uad6d\uc5b4", "\U0001F600", "nul\x00inside"],
    "long_str": "a" * 300,
    "lone_surrogate": "x\ud800y",
    "bytes": [b"", b"\x00\xff", b"b" * 300],
    "bytearrays": [bytearray(b"xyz"), bytearray()],
    "tuples": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), ((1,), ((),))],
    "lists": [[], [1], [1, "a", None]],
    "long_list": list(range(2500)),
    "nested": nested_lists(100),
    "dicts": [{}, {"a": 1}, {1: "x", "b": [1, 2], (1, 2): None, None: True, 1.5: b"x", -7: {}}],
    "long_dict": {i: str(i) for i in range(1500)},
    "sets": [set(), {1, 2, 3}, frozenset(), frozenset({"a", (1, 2)})],
    "long_set": set(range(1200)),
    "shared": shared(),
    "request_dummy": (None, "dummy", (), {}),
    "request_get": ("7f7326de1490", "get", (), {"block": False}),
    "request_put": ("7f7326de1490", "put", ((b"ab", "x", 7),), {}),
    "reply_create": ("#RETURN", ("7f7326de1490", ("empty", "full", "get", "get_nowait", "put", "qsize"))),
    "value_error": ValueError("bad value"),
    "key_error": KeyError("k"),
    "runtime_error": RuntimeError("x", 2),
    "file_not_found": FileNotFoundError(2, "No such file"),
    "queue_empty": ("#ERROR", queue.Empty()),
    "queue_full": queue.Full(),
    "remote_error": RemoteError("Traceback text"),
    "exception_with_state": exception_with_state(),
    "token": Token("Queue", ("127.0.0.1", 1001), "7f00"),
}


def same(a, b):
    """Strict equality: types, float bits, dict order; exceptions and tokens by content."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(same(ka, kb) and same(va, vb)
                                        for (ka, va), (kb, vb) in zip(a.items(), b.items()))
    if isinstance(a, (set, frozenset)):
        if len(a) != len(b):
            return False
        index = {x: x for x in b}
        return all(x in index and same(x, index[x]) for x in a)
    if isinstance(a, BaseException):
        return same(a.args, b.args) and same(vars(a), vars(b))
    if isinstance(a, Token):
        return same(a.__getstate__(), b.__getstate__())
    return a == b


def write(directory):
    top = min(pickle.HIGHEST_PROTOCOL, 5)
    count = 0
    for name, sample in SAMPLES.items():
        for proto in list(range(0, top + 1)) + [None]:
            tag = "default" if proto is None else str(proto)
            with open(os.path.join(directory, "%s.p%s.pickle" % (name, tag)), "wb") as f:
                f.write(pickle.dumps(sample, protocol=proto))
            count += 1
    print("wrote %d pickles, protocols 0..%d and default (%d)" % (count, top, pickle.DEFAULT_PROTOCOL))


def check(directory):
    failures = 0
    checked = 0
    for path in sorted(glob.glob(os.path.join(directory, "*.corio*.pickle"))):
        name = os.path.basename(path).split(".")[0]
        if name not in SAMPLES:
            print("FAIL %s: no sample of that name" % path)
            failures += 1
            continue
        try:
            with open(path, "rb") as f:
                loaded = pickle.loads(f.read())
        except Exception as e:  # the failure is the result
            print("FAIL %s: pickle.loads raised %r" % (path, e))
            failures += 1
            continue
        checked += 1
        if not same(loaded, SAMPLES[name]):
            print("FAIL %s: loaded %.300r, expected %.300r" % (path, loaded, SAMPLES[name]))
            failures += 1
    print("checked %d corio pickles, %d failures" % (checked, failures))
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        sys.exit(__doc__)
    if sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        sys.exit(check(sys.argv[2]))
