#!/bin/sh
# Seeds for fuzz/connection_fuzz.cpp, written into $1: byte streams a peer could send
# (Python's frames, both forms of length prefix, handshake transcripts of Python <= 3.11
# and >= 3.12 clients and servers, pickled messages), each followed by the 3 bytes that
# choose the reader (buffer size, receive form, recv_bytes_into size) in several ways.
set -e
python3 - "$1" <<'PY'
import os, pickle, struct, sys

out = sys.argv[1]

def frame(body):
    return struct.pack('!i', len(body)) + body

streams = {
    'frames': frame(b'foo1') + frame(b'') + frame(b'x' * 300),
    'long_prefix': b'\xff\xff\xff\xff' + struct.pack('!Q', 5) + b'hello' + frame(b'next'),
    'client_312': frame(b'{sha256}' + b'a' * 32) + frame(b'#CHALLENGE#{sha256}' + b'r' * 40) + frame(b'#WELCOME#'),
    'client_311': frame(b'm' * 16) + frame(b'#CHALLENGE#' + b'r' * 20) + frame(b'#WELCOME#'),
    'server_312': frame(b'#CHALLENGE#{sha3_384}' + b'r' * 40) + frame(b'#WELCOME#') + frame(b'{sha3_384}' + b'a' * 48),
    'server_failure': frame(b'#CHALLENGE#' + b'r' * 20) + frame(b'#FAILURE#'),
    'pickles': b''.join(frame(pickle.dumps(v, protocol=p)) for p in (2, 3, 4)
                        for v in ('foo1', ('foo1', 2, 2.5, None), [b'b', True, -7], {'k': {1, 2}})),
}
# Reader choices: (buffer size / 16 - 1, receive form, recv_bytes_into size / 4).
configs = [(0, 0, 0), (255, 1, 0), (2, 2, 2), (0, 2, 100), (4, 3, 0), (0, 3, 0)]
for name, data in streams.items():
    for i, (b, m, n) in enumerate(configs):
        with open(os.path.join(out, '%s_%d' % (name, i)), 'wb') as f:
            f.write(data + bytes([b, m, n]))
PY
