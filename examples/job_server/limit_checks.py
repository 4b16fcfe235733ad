"""job_server under a low limit on open descriptors (RLIMIT_NOFILE), set for it here.

    limit_checks.py JOB_SERVER raise     exit 0 if the check passes, 77 when it cannot run here
    limit_checks.py JOB_SERVER cap

Each connection holds a descriptor, and past the soft limit the server cannot accept:
clients wait in the listen backlog unanswered (Python's Client has no timeout).
  - raise: soft limit 64 (the hard one as it is), no --max-connections: job_server raises
    the soft limit to what its default needs (or the hard limit), says on stdout how many
    connections it serves at once on each port, and 150 tutorial clients (MY_Client, one
    thread each, a connection on each port) register, send a job and get its result at
    once, all holding their connections together (under 64 descriptors, about 24 fit);
    nothing is said on stderr.
  - cap: soft 64, hard 300, --max-connections 1000: job_server says on stderr that only M
    fit ("serving at most M connections at once") and on stdout that it serves M on each
    port; M connections held open on each port are all served, the next one waits, and
    the server says so on stderr ("... connection(s) waiting to be accepted ..."); once
    one of the M closes, it is served. Then its soft limit is lowered (prlimit) to 3:
    accepting fails (EMFILE), the server says so on stderr ("... out of descriptors
    ..."), a client is not served meanwhile, and once the limit is raised again, it is.
Both end with SIGTERM and exit status 0. Runs on Python 3.6+.
"""
import io
import os
import re
import resource
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Client
from multiprocessing.managers import dispatch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, HERE)
from server_checks import LIMIT, Server, expect, failures, run_checks, wait_until  # noqa: E402
from tutorial_clients import load_tutorial_client  # noqa: E402

CLIENTS = 150  # tutorial clients at once (raise)
CAP_HARD = 300  # the hard limit given to the server (cap)


def soft_limit_of(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return None


def serving(s):
    """The M of the server's '[Notice] at most M connections at once on each port' line."""
    return int(s.wait_line(r"^\[Notice\] at most (\d+) connections at once on each port$").group(1))


def run_clients(s, n):
    """n tutorial clients, a thread each: register, send one job, take its result, then
    hold (their connections open) until all have. Returns the results and how many held
    at once."""
    module = load_tutorial_client(s.sport, s.rport)
    results = [None] * n
    lock = threading.Lock()
    holding = [0, 0]  # now, most at once
    done = threading.Event()

    def client(i):
        try:
            c = module.MY_Client("limit%d" % i)
            c.SendAudio(i, None)
            results[i] = c.result_queue.get(True, LIMIT)
        except Exception as e:  # (a server killed under a client that waits: counted as no result)
            results[i] = e
            return
        with lock:
            holding[0] += 1
            holding[1] = max(holding[1], holding[0])
        done.wait(LIMIT)
        with lock:
            holding[0] -= 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    printed, sys.stdout = sys.stdout, io.StringIO()  # MY_Client prints a notice per channel
    deadline = time.monotonic() + LIMIT
    try:
        for t in threads:
            t.start()
        while holding[1] < n and time.monotonic() < deadline:
            time.sleep(0.05)
        done.set()
        for t in threads:  # (a client that never got through is left behind: a daemon thread)
            t.join(max(0, deadline - time.monotonic()))
    finally:
        sys.stdout = printed
    return results, holding[1]


def check_raise(exe):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 2 * CLIENTS + 400:
        print("skip: the hard limit on descriptors (%d) is below what %d clients need" % (hard, CLIENTS), flush=True)
        return
    s = Server(exe, limits=(64, hard))
    results, together = run_clients(s, CLIENTS)
    expect("soft limit 64: %d tutorial clients at once each get their result" % CLIENTS,
           sum(1 for i, r in enumerate(results) if r == i * i), CLIENTS)
    expect("and held their connections all at once", together, CLIENTS)
    m = serving(s)
    expect("it says it serves at least %d connections on each port (%d)" % (CLIENTS, m), m >= CLIENTS, True)
    expect("its soft limit was raised to fit them", soft_limit_of(s.proc.pid) >= 2 * m, True)
    s.signal(signal.SIGTERM)
    expect("the server exits 0", s.exit_status(), 0)
    expect("nothing said on stderr", [l for l in s.lines if l and l.startswith("job_server:") and "SIG" not in l], [])


def hold(port, tag):
    """An authenticated connection the server keeps (a proxy's, after accept_connection)."""
    c = Client(("127.0.0.1", port), authkey=b"password")
    expect_none = dispatch(c, None, "accept_connection", (tag,))
    if expect_none is not None:
        raise RuntimeError("accept_connection answered %r" % (expect_none,))
    return c


def check_cap(exe):
    s = Server(exe, "--max-connections", "1000", limits=(64, CAP_HARD))
    said = s.wait_line(r"^job_server: .*hard limit.*: serving at most (\d+) connections at once")
    m = serving(s)
    expect("hard limit %d: it says on stderr it serves %d of the 1000 asked, as on stdout (%d)"
           % (CAP_HARD, int(said.group(1)), m), int(said.group(1)), m)
    expect("its soft limit is raised to the hard one", soft_limit_of(s.proc.pid), CAP_HARD)
    with ThreadPoolExecutor(max_workers=32) as pool:  # (a handshake each: Python's client takes ~40 ms)
        held = {port: list(pool.map(lambda i, p=port: hold(p, "held%d" % i), range(m))) for port in (s.sport, s.rport)}
    expect("%d connections held on each port, all served" % m, [len(v) for v in held.values()], [m, m])
    extra = {}

    def one_more():
        c = Client(("127.0.0.1", s.sport), authkey=b"password")  # waits in the backlog
        extra["reply"] = dispatch(c, None, "dummy")
        c.close()

    t = threading.Thread(target=one_more, daemon=True)
    t.start()
    line = s.wait_line(r"^job_server: sender port %d: (\d+) connection\(s\) waiting to be accepted" % s.sport)
    expect("connection %d on the sender port waits, and the server says so" % (m + 1), line.group(1), "1")
    expect("it is not served meanwhile", "reply" in extra, False)
    held[s.sport].pop().close()  # a place comes free
    t.join(LIMIT)
    expect("once one of the %d closes, it is served" % m, extra.get("reply", "no reply"), None)
    for conns in held.values():
        for c in conns:
            c.close()
    check_out_of_descriptors(s)
    s.signal(signal.SIGTERM)
    expect("the server exits 0", s.exit_status(), 0)


def check_out_of_descriptors(s):
    """With the server's soft limit lowered to 3 (stdin, stdout, stderr), clients are not
    accepted (EMFILE) and the server says so; raised again, they are served."""
    resource.prlimit(s.proc.pid, resource.RLIMIT_NOFILE, (3, CAP_HARD))
    replies = {}

    def client(name):
        c = Client(("127.0.0.1", s.sport), authkey=b"password")  # waits in the backlog
        replies[name] = dispatch(c, None, "dummy")
        c.close()

    # The first may still be taken by the accept the server had already submitted to its
    # ring (the kernel applied the limit of that moment); every accept after fails.
    threads = [threading.Thread(target=client, args=("first",), daemon=True)]
    threads[0].start()
    line = s.wait_line(r"^job_server: sender port %d: out of descriptors \(EMFILE/ENFILE\) or memory: (\d+) "
                       r"accept\(s\) refused" % s.sport)
    expect("soft limit 3: accepting fails, and the server says so", int(line.group(1)) >= 1, True)
    threads.append(threading.Thread(target=client, args=("second",), daemon=True))
    threads[1].start()
    time.sleep(1)  # two of the server's checks: the limit still holds
    expect("a client arriving then is not served meanwhile", "second" in replies, False)
    resource.prlimit(s.proc.pid, resource.RLIMIT_NOFILE, (CAP_HARD, CAP_HARD))
    for t in threads:
        t.join(LIMIT)
    expect("once the limit is raised again, both are served", [replies.get(n, "no reply") for n in ("first", "second")],
           [None, None])


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * max(CLIENTS, CAP_HARD) + 200  # this process's own connections
    if soft != resource.RLIM_INFINITY and soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            print("SKIP: this process cannot open %d descriptors (hard limit %d)" % (want, hard))
            return 77
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    check = {"raise": check_raise, "cap": check_cap}[sys.argv[2]]
    verdict = run_checks([check], sys.argv[1])
    print("descriptor limit checks (%s): %s" % (sys.argv[2], verdict))
    return 1 if failures else 0


if __name__ == "__main__":
    # Leave without the interpreter's exit: the proxies still held would each connect to
    # their stopped server's port to decref, and hang if another test listens on that port
    # by then without answering (a Python manager client waits for any listener's answer).
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
