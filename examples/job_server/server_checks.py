"""What job_server does at its edges, checked with the tutorial's unmodified MY_Client.

    server_checks.py JOB_SERVER          runs every check below; exit 0 if all pass
    server_checks.py JOB_SERVER blocked SENDER_PORT RECEIVER_PORT ID
                                         (internal) one client blocked in ReceiveResult;
                                         prints the exception that ends its wait

Each check starts its own job_server (free ports, except the default-ports check):
  - SIGTERM with jobs queued (--start-paused holds them): every queued job still runs,
    its client collects every result, the server exits 0 and counts them;
  - a second SIGTERM while jobs are queued: they are dropped, and counted;
  - SIGTERM while clients are blocked in ReceiveResult: each gets EOFError, no hang,
    the server exits 0;
  - a client's 'shutdown' request, to either port, stops the server as a signal does:
    the queued jobs still run and their client collects every result;
  - 1,000 channels registered with set_channel by 100 concurrent connections;
  - the default ports 1001/1002 with MY_Client exactly as the tutorial wrote it (needs
    root, or an unprivileged port range that reaches 1001; skipped with the reason
    otherwise).
Every wait on the server is bounded; a check that times out fails. Runs on Python 3.6+.
"""
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.managers import dispatch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, HERE)
from tutorial_clients import load_tutorial_client, waiting_calls  # noqa: E402

failures = []
servers = []  # every job_server started, killed at the end if still running
LIMIT = 60  # seconds any single wait may take before the check fails


def expect(what, got, wanted):
    if got == wanted:
        print("ok:   " + what, flush=True)
    else:
        print("FAIL: %s: got %r, wanted %r" % (what, got, wanted), flush=True)
        failures.append(what)


class Server:
    """A job_server child; its output is collected line by line on a thread."""

    def __init__(self, exe, *flags, free_ports=True, limits=None):
        """limits: (soft, hard) RLIMIT_NOFILE to start it with (default: this process's)."""
        ports = ["--port-sender", "0", "--port-receiver", "0"] if free_ports else []
        start = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limits)) if limits else None
        self.proc = subprocess.Popen([exe] + ports + ["--workers", "2"] + list(flags), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, universal_newlines=True, preexec_fn=start)
        servers.append(self.proc)
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.sport = int(self.wait_line(r"^sender listening on .*:(\d+)$").group(1))
        self.rport = int(self.wait_line(r"^receiver listening on .*:(\d+)$").group(1))

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)  # end of output
            self.cond.notify_all()

    def wait_line(self, pattern):
        """The first output line matching `pattern` (waits for it); raises if it never comes."""
        deadline = time.monotonic() + LIMIT
        with self.cond:
            while True:
                for line in self.lines:
                    m = line is not None and re.search(pattern, line)
                    if m:
                        return m
                if self.lines and self.lines[-1] is None:
                    raise RuntimeError("job_server ended without printing %r:\n%s" % (pattern, self.output()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError("job_server did not print %r in %d s:\n%s" % (pattern, LIMIT, self.output()))
                self.cond.wait(left)

    def output(self):
        return "\n".join("      | " + l for l in self.lines if l is not None)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def exit_status(self):
        try:
            return self.proc.wait(LIMIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "hung (killed after %d s)" % LIMIT

    def manager(self, module, port):
        m = module.QueueManager(("127.0.0.1", port), authkey=b"password")
        m.connect()
        return m


def wait_until(what, condition):
    deadline = time.monotonic() + LIMIT
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("gave up waiting for " + what)
        time.sleep(0.01)


def check_queued_jobs_run_on_stop(exe):
    s = Server(exe, "--start-paused", "--grace-ms", "600000")
    module = load_tutorial_client(s.sport, s.rport)
    client = module.MY_Client("queued")
    n = 50
    for i in range(n):
        client.SendAudio(i, None)
    expect("paused: all %d jobs are queued" % n, client.audio_queue.qsize(), n)
    s.signal(signal.SIGTERM)
    s.wait_line(r"stopping: no new jobs; the %d queued job\(s\) still run" % n)
    s.signal(signal.SIGUSR1)  # the workers start: the queued jobs run
    got = sorted(client.ReceiveResult(True)["data"] for _ in range(n))
    expect("SIGTERM with %d jobs queued: the client still gets every result" % n, got, [i * i for i in range(n)])
    expect("the server exits 0", s.exit_status(), 0)
    expect("the server counts them done, none dropped",
           bool(s.wait_line(r"stopped: %d job\(s\) done, 0 queued job\(s\) dropped, 0 unroutable, "
                            r"0 result\(s\) not collected" % n)), True)


def check_second_signal_drops_queued_jobs(exe):
    s = Server(exe, "--start-paused")
    module = load_tutorial_client(s.sport, s.rport)
    client = module.MY_Client("dropped")
    n = 30
    for i in range(n):
        client.SendAudio(i, None)
    expect("paused: all %d jobs are queued" % n, client.audio_queue.qsize(), n)
    s.signal(signal.SIGTERM)
    s.wait_line(r"stopping: no new jobs")
    s.signal(signal.SIGTERM)  # the second signal: stop at once
    expect("a second SIGTERM: the server exits 0", s.exit_status(), 0)
    expect("the queued jobs are dropped and counted",
           bool(s.wait_line(r"stopped: 0 job\(s\) done, %d queued job\(s\) dropped" % n)), True)


def check_stop_answers_blocked_clients(exe):
    s = Server(exe, "--grace-ms", "0")
    module = load_tutorial_client(s.sport, s.rport)
    n = 3
    clients = [subprocess.Popen([sys.executable, __file__, exe, "blocked", str(s.sport), str(s.rport), "b%d" % i],
                                stdout=subprocess.PIPE, universal_newlines=True) for i in range(n)]
    receiver = s.manager(module, s.rport)
    wait_until("%d clients to wait in ReceiveResult" % n, lambda: waiting_calls(receiver) == (n, 0))
    s.signal(signal.SIGTERM)
    outcomes = []
    for c in clients:
        try:
            out, _ = c.communicate(timeout=LIMIT)
            outcomes.append((out.strip().splitlines() or [""])[-1])  # after MY_Client's notice
        except subprocess.TimeoutExpired:
            # Which hang: in the wait (nothing printed) or after it (at the interpreter's
            # exit, whose proxy finalizers connect to the server's address again), and
            # whether the server was still running then.
            server_running = s.proc.poll() is None
            c.kill()
            out, _ = c.communicate()
            printed = (out.strip().splitlines() or [""])[-1]
            outcomes.append("hung (%s; the server %s)" % ("after printing " + printed if printed else "in the wait",
                                                         "still running" if server_running else "had exited"))
    expect("SIGTERM with %d clients blocked in ReceiveResult: each gets EOFError" % n, outcomes, ["EOFError"] * n)
    expect("the server exits 0", s.exit_status(), 0)


def check_shutdown_request_stops_the_server(exe):
    # To either port it is a first signal: the queued jobs still run and their client
    # collects every result (once, the receiver port's stopped that manager at once:
    # the client got EOFError and the results went uncollected).
    for side in ("sender", "receiver"):
        s = Server(exe, "--start-paused", "--grace-ms", "600000")
        module = load_tutorial_client(s.sport, s.rport)
        client = module.MY_Client("shutdown-" + side)
        n = 5
        for i in range(n):
            client.SendAudio(i, None)
        m = s.manager(module, s.sport if side == "sender" else s.rport)
        conn = m._Client(m._address, authkey=m._authkey)
        try:
            expect("'shutdown' to the %s port is answered" % side, dispatch(conn, None, "shutdown"), None)
        finally:
            conn.close()
        s.wait_line(r"stopping: no new jobs; the %d queued job\(s\) still run" % n)
        s.signal(signal.SIGUSR1)  # the workers start: the queued jobs run
        try:
            got = sorted(client.ReceiveResult(True)["data"] for _ in range(n))
        except Exception as e:
            got = type(e).__name__
        expect("'shutdown' to the %s port: the client still gets every result" % side, got,
               [i * i for i in range(n)])
        expect("a client's 'shutdown' stops the server: it exits 0", s.exit_status(), 0)
        expect("the server counts them done and collected",
               bool(s.wait_line(r"stopped: %d job\(s\) done, 0 queued job\(s\) dropped, 0 unroutable, "
                                r"0 result\(s\) not collected" % n)), True)


def check_1000_channels(exe):
    s = Server(exe)
    module = load_tutorial_client(s.sport, s.rport)
    module.QueueManager.register("SetResultQueue", proxytype=module.ResultQueueProxy)
    module.QueueManager.register("GetResultQueue")
    receiver = s.manager(module, s.rport)
    threads, per_thread = 100, 10
    answers = [None] * (threads * per_thread)
    start = threading.Barrier(threads, timeout=LIMIT)

    def register(t):
        setter = receiver.SetResultQueue()  # a connection of this thread's own
        start.wait()
        for k in range(per_thread):
            i = t * per_thread + k
            answers[i] = setter.set_channel("ch%d" % i)

    workers = [threading.Thread(target=register, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(LIMIT)
    added = sum(1 for i, a in enumerate(answers)
                if a == {"result": True, "message": "[Notice] Successfully channel ch%d added" % i})
    expect("1,000 set_channel calls from 100 connections at once: every channel added", added, len(answers))
    again = receiver.SetResultQueue().set_channel("ch999")
    expect("then ch999 again is refused", again.get("result"), False)
    client = module.MY_Client("last")
    queue = receiver.GetResultQueue("ch500")
    sender = s.manager(module, s.sport)
    sender.GetAudioQueue().put((12, None, "ch500"))
    client.SendAudio(3, None)
    expect("a job for one of them reaches it", queue.get(True, LIMIT), 144)
    expect("and the others' results stay theirs", client.ReceiveResult(True)["data"], 9)
    s.signal(signal.SIGTERM)
    expect("the server exits 0", s.exit_status(), 0)


def default_ports_skip_reason():
    if os.geteuid() == 0:
        return None
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            if int(f.read()) <= 1001:
                return None
    except (OSError, ValueError):
        pass
    return "not root, and ports below 1024 need root here"


def check_default_ports(exe):
    reason = default_ports_skip_reason()
    if reason:
        print("skip: the default ports 1001/1002: " + reason, flush=True)
        return
    s = Server(exe, free_ports=False)
    expect("job_server listens on its default ports", (s.sport, s.rport), (1001, 1002))
    # The tutorial's module, loaded with no port mapping: MY_Client exactly as written.
    import my_client
    client = my_client.MY_Client("default")
    client.SendAudio("abc", None)
    expect("the tutorial's MY_Client on ports 1001/1002 gets its result", client.ReceiveResult(True),
           {"result": True, "data": "ABC"})
    s.signal(signal.SIGTERM)
    expect("the server exits 0", s.exit_status(), 0)


def run_blocked(sport, rport, channel):
    module = load_tutorial_client(sport, rport)
    client = module.MY_Client(channel)
    try:
        client.ReceiveResult(True)
        print("returned", flush=True)
    except Exception as e:  # the outcome is what the check compares
        print(type(e).__name__, flush=True)  # at once: the check tells a hang at exit from one in the wait
    # Leave without the interpreter's exit: its proxy finalizers would connect to the
    # stopped server's port again to decref, and hang there if another program (another
    # test running beside this one) listens on that port by then without answering, as a
    # Python client does against any silent listener. The outcome above is all the check
    # reads.
    sys.stdout.flush()
    os._exit(0)


def run_checks(checks, *args):
    """Runs each check(*args) (an exception fails that check only), then kills every
    job_server still running; returns "all passed" or "N failed"."""
    for check in checks:
        try:
            check(*args)
        except Exception as e:
            print("FAIL: %s: %s: %s" % (check.__name__, type(e).__name__, e), flush=True)
            failures.append(check.__name__)
    for p in servers:
        if p.poll() is None:
            p.kill()
            p.wait()
    return "all passed" if not failures else "%d failed" % len(failures)


def main():
    exe = sys.argv[1]
    if len(sys.argv) > 2 and sys.argv[2] == "blocked":
        return run_blocked(int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    verdict = run_checks([check_queued_jobs_run_on_stop, check_second_signal_drops_queued_jobs,
                          check_stop_answers_blocked_clients, check_shutdown_request_stops_the_server,
                          check_1000_channels, check_default_ports], exe)
    print("server checks with Python %d.%d.%d: %s" % (sys.version_info[:3] + (verdict,)))
    return 1 if failures else 0


if __name__ == "__main__":
    # Leave without the interpreter's exit: the proxies still held would each connect to
    # their stopped server's port to decref, and hang if another test listens on that port
    # by then without answering (a Python manager client waits for any listener's answer).
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
