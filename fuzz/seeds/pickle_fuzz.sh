#!/bin/sh
# Seeds for fuzz/pickle_fuzz.cpp, written into $1: the samples of tests/ipc/pickle_corpus.py
# pickled by python3 with protocols 2..5 and its default, and crafted inputs that were slow.
set -e
root=$(cd "$(dirname "$0")/../.." && pwd)
python3 "$root/tests/ipc/pickle_corpus.py" write "$1" >/dev/null
python3 - "$1" <<'PY'
import os, pickle, sys

# Frozensets of two tuples (nan, level below), 12 deep: 340 bytes, the level below shared
# through the memo. The NaNs are distinct objects (Python keeps both tuples); decoded, the
# siblings are identical, and == compared each element with every element of both sets:
# 6^12 comparisons (minutes) per ==, which the target makes several times.
v = 1
for _ in range(12):
    v = frozenset({(float("nan"), v), (float("nan"), v)})
with open(os.path.join(sys.argv[1], "nan_tuple_sets_nested.p4.pickle"), "wb") as f:
    f.write(pickle.dumps(v, protocol=4))
PY
