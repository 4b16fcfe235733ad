"""What job_client leaves on the servers when one of its steps fails.

    client_checks.py JOB_SERVER JOB_CLIENT      exit 0 if every check passes

Each check starts its own job_server (free ports; server_checks.Server) and runs
job_client against it so that a step fails after it made proxies, then asks the server
for its number_of_objects: every proxy job_client made must have been released (a proxy
dropped without release() leaves its reference, and the object, on the server).
  - GetAudioQueue refused (the sender port names the receiver, which has no such typeid)
    after GetResultQueue made its proxy.
And what job_client does when the server stops answering:
  - the server stopped (SIGSTOP) while job_client --timeout-ms 1000 waits for its result:
    job_client says "no answer from the server within 3000 ms" and exits 1 within that
    bound (plus a margin for a loaded machine), instead of waiting for ever; the server,
    continued (SIGCONT), then stops cleanly on SIGTERM.
And with many tasks: job_client --tasks 40 started with a soft descriptor limit of 64
raises its own limit, gets every result and leaves no object on either server.
Runs on Python 3.6+.
"""
import os
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Client
from multiprocessing.managers import BaseManager, dispatch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, HERE)
from server_checks import LIMIT, Server, expect, failures, run_checks, wait_until  # noqa: E402


def request(port, method, *args):
    """One server request (ident None) on a connection of its own, as Python's manager does."""
    c = Client(("127.0.0.1", port), authkey=b"password")
    try:
        return dispatch(c, None, method, args)
    finally:
        c.close()


def job_client(exe, *args):
    p = subprocess.run([exe] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=LIMIT)
    return p.returncode, p.stdout


def check_refused_create_releases_the_other_proxy(server_exe, client_exe):
    s = Server(server_exe)
    rc, out = job_client(client_exe, "--port-sender", str(s.rport), "--port-receiver", str(s.rport),
                         "--channel", "refused", "1")
    expect("job_client fails when GetAudioQueue is refused (%s)" % out.strip().replace("\n", " | "), rc, 1)
    expect("the receiver holds no object of job_client's", request(s.rport, "number_of_objects"), 0)
    s.proc.kill()
    s.proc.wait()


def check_many_tasks_fit_a_low_descriptor_limit(server_exe, client_exe):
    # 40 tasks need ~160 descriptors: job_client, started with a soft limit of 64, raises
    # its own (it once ran out: "Too many open files", and its failed releases left their
    # objects on the server).
    import resource

    def low_soft_limit():
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))

    s = Server(server_exe)
    p = subprocess.run([client_exe, "--port-sender", str(s.sport), "--port-receiver", str(s.rport),
                        "--channel", "many", "--tasks", "40", "7"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True, timeout=LIMIT, preexec_fn=low_soft_limit)
    expect("job_client --tasks 40 under a soft limit of 64 exits 0 (%s)"
           % " | ".join([l for l in p.stdout.splitlines() if "received" not in l][:3]), p.returncode, 0)
    expect("every task received its result", p.stdout.count("received 49"), 40)
    expect("the sender holds no object of job_client's", request(s.sport, "number_of_objects"), 0)
    expect("the receiver holds no object of job_client's", request(s.rport, "number_of_objects"), 0)
    s.signal(signal.SIGTERM)
    expect("the server exits 0", s.exit_status(), 0)


class SenderManager(BaseManager):
    pass


SenderManager.register("GetAudioQueue")


def check_stopped_server_ends_the_client(server_exe, client_exe):
    # Paused: the job stays queued, so job_client's get waits on the server.
    s = Server(server_exe, "--start-paused", "--grace-ms", "0")
    client = subprocess.Popen([client_exe, "--port-sender", str(s.sport), "--port-receiver", str(s.rport),
                               "--channel", "stopped", "--timeout-ms", "1000", "hello"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    sender = SenderManager(("127.0.0.1", s.sport), authkey=b"password")
    sender.connect()
    audio = sender.GetAudioQueue()
    wait_until("job_client's job to be queued", lambda: audio.qsize() == 1)
    s.signal(signal.SIGSTOP)  # job_client is in (or about to send) its get(True, 1.0)
    stopped = time.monotonic()
    try:
        out, _ = client.communicate(timeout=20)
        waited = time.monotonic() - stopped
        expect("job_client exits 1 when the server stops answering", client.returncode, 1)
        expect("it says so (%s)" % out.strip().replace("\n", " | "),
               "get with a timeout: no answer from the server within 3000 ms" in out, True)
        # At most 3 s after the stop (the bound on its get's reply), plus a margin.
        expect("it ends within 3 s + 5 s of the stop (%.1f s)" % waited, waited < 8, True)
    except subprocess.TimeoutExpired:
        client.kill()
        out, _ = client.communicate()
        expect("job_client ends once the server stops answering (%s)" % out.strip().replace("\n", " | "),
               "still waiting after 20 s", "exit status 1")
    s.signal(signal.SIGCONT)
    s.signal(signal.SIGTERM)
    s.wait_line(r"stopping: no new jobs")
    s.signal(signal.SIGUSR1)  # a paused server that is stopping runs its queued job first
    expect("the server, continued, stops cleanly on SIGTERM", s.exit_status(), 0)


def main():
    verdict = run_checks([check_refused_create_releases_the_other_proxy, check_many_tasks_fit_a_low_descriptor_limit,
                          check_stopped_server_ends_the_client],
                         sys.argv[1], sys.argv[2])
    print("client checks: %s" % verdict)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
