"""What job_client leaves on the servers when one of its steps fails.

    client_checks.py JOB_SERVER JOB_CLIENT      exit 0 if every check passes

Each check starts its own job_server (free ports; server_checks.Server) and runs
job_client against it so that a step fails after it made proxies, then asks the server
for its number_of_objects: every proxy job_client made must have been released (a proxy
dropped without release() leaves its reference, and the object, on the server).
  - GetAudioQueue refused (the sender port names the receiver, which has no such typeid)
    after GetResultQueue made its proxy.
Runs on Python 3.6+.
"""
import os
import subprocess
import sys
from multiprocessing.connection import Client
from multiprocessing.managers import dispatch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, HERE)
from server_checks import LIMIT, Server, expect, failures, run_checks  # noqa: E402


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


def main():
    verdict = run_checks([check_refused_create_releases_the_other_proxy], sys.argv[1], sys.argv[2])
    print("client checks: %s" % verdict)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
