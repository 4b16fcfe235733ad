#!/bin/sh
# Seeds for fuzz/pickle_fuzz.cpp, written into $1: the samples of tests/ipc/pickle_corpus.py
# pickled by python3 with protocols 2..5 and its default.
set -e
root=$(cd "$(dirname "$0")/../.." && pwd)
python3 "$root/tests/ipc/pickle_corpus.py" write "$1" >/dev/null
