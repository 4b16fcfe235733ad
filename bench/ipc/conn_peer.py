"""The Python side of bench/ipc/conn.sh: multiprocessing.connection as people use it.

  conn_peer.py server PORT             Listener(('127.0.0.1', PORT), authkey=b'password'):
                                       prints "port N", then echoes every message
                                       (conn.send(conn.recv())), one thread per connection
  conn_peer.py client PORT SECONDS [DEPTH]
                                       Client(..., authkey=b'password'): conn.send('foo1');
                                       conn.recv() for SECONDS; prints "round_trips N".
                                       With DEPTH > 1, DEPTH messages in flight: DEPTH
                                       sends first, then a send after every recv (the
                                       pipelined shape of conn_bench client --depth)
"""
import sys
import threading
import time
from multiprocessing.connection import Client, Listener

KEY = b'password'


def serve_one(conn):
    try:
        while True:
            conn.send(conn.recv())
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


def server(port):
    listener = Listener(('127.0.0.1', port), authkey=KEY)
    print('port', listener.address[1], flush=True)
    while True:
        conn = listener.accept()
        threading.Thread(target=serve_one, args=(conn,), daemon=True).start()


def client(port, seconds, depth=1):
    conn = Client(('127.0.0.1', port), authkey=KEY)
    count = 0
    end = time.perf_counter() + seconds
    if depth == 1:
        while time.perf_counter() < end:
            conn.send('foo1')
            conn.recv()
            count += 1
    else:
        for _ in range(depth):
            conn.send('foo1')
        while time.perf_counter() < end:
            conn.recv()
            count += 1
            conn.send('foo1')
        for _ in range(depth):
            conn.recv()
            count += 1
    conn.close()
    print('round_trips', count, flush=True)


if __name__ == '__main__':
    if sys.argv[1] == 'server':
        server(int(sys.argv[2]))
    else:
        client(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1)
