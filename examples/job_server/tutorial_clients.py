"""The tutorial's MY_Client (my_client.py, unmodified) against a running job_server.

    tutorial_clients.py SENDER_PORT RECEIVER_PORT check      the checks below; exit 0 if all pass
    tutorial_clients.py SENDER_PORT RECEIVER_PORT demo ID    one client: a few jobs, prints results
    tutorial_clients.py SENDER_PORT RECEIVER_PORT client ID N
                                                            one client: N int jobs, checks the squares
    tutorial_clients.py SENDER_PORT RECEIVER_PORT victim    registers 'victim', blocks (to be killed)

MY_Client connects to ports 1001 and 1002 as the tutorial wrote it. To run it on other
ports without changing a line of it, the module's QueueManager name is pointed at a
subclass that maps 1001 and 1002 to the given ports (MY_Client looks the name up when it
runs). Runs on Python 3.6 and newer.
"""
import importlib.util
import os
import re
import subprocess
import sys
import time
from multiprocessing.managers import SyncManager, dispatch

HERE = os.path.dirname(os.path.abspath(__file__))


def load_tutorial_client(sender_port, receiver_port):
    spec = importlib.util.spec_from_file_location("my_client", os.path.join(HERE, "my_client.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ports = {1001: sender_port, 1002: receiver_port}

    class PortMappedManager(module.QueueManager):
        def __init__(self, address, *args, **kwds):
            host, port = address
            super().__init__((host, ports.get(port, port)), *args, **kwds)

    module.QueueManager = PortMappedManager
    return module


failures = []


def waiting_calls(manager):
    """The server's counts of waiting and abandoned calls, from its debug_info reply."""
    m = re.search(r"waiting calls: (\d+), abandoned: (\d+)", manager._debug_info())
    return (int(m.group(1)), int(m.group(2))) if m else None


def wait_for(what, condition, seconds=60):
    """Polls condition() until it is true; False (and a FAIL line) after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            print("FAIL: gave up waiting for " + what, flush=True)
            failures.append(what)
            return False
        time.sleep(0.01)
    return True


def expect(what, got, wanted):
    if got == wanted:
        print("ok:   " + what, flush=True)
    else:
        print("FAIL: %s: got %r, wanted %r" % (what, got, wanted), flush=True)
        failures.append(what)


def run_check(module, sender_port, receiver_port):
    client = module.MY_Client("alpha")
    expect("non-blocking ReceiveResult with nothing queued", client.ReceiveResult(False), {"result": False})

    jobs = ["hello", b"abc", 7, 1.5, -3, 2 ** 40]
    for job in jobs:
        client.SendAudio(job, "b")
    results = [client.ReceiveResult(True) for _ in jobs]
    expect("every ReceiveResult is {'result': True, 'data': ...}", [r["result"] for r in results], [True] * len(jobs))
    got = sorted(repr(r["data"]) for r in results)
    wanted = sorted(repr(v) for v in ["HELLO", b"cba", 49, 2.25, 9, 2 ** 80])
    expect("job results (str upper, bytes reversed, int/float squared)", got, wanted)
    # (Their clients are kept until the end: a proxy collected mid-run makes Python's
    # client close this thread's connection to that port, which every GetAudioQueue
    # proxy here shares: they all hold the same object, and Python counts it once.)
    kept = (check_failing_job_stays_with_its_client(module) + check_int_squares(module)
            + check_large_job(module))

    try:
        module.MY_Client("alpha")
        expect("a second client on channel alpha is refused", "no exception", "Exception")
    except Exception as e:
        expect("a second client on channel alpha is refused", str(e),
               "[Error] Please give me another channel id, not alpha")

    manager = module.QueueManager(("127.0.0.1", 1002), authkey=b"password")
    manager.connect()
    data = manager.GetResultQueue("nobody")
    try:
        data.get(block=False)
        expect("GetResultQueue before SetResultQueue gives a dict", "a queue", "a dict")
    except TypeError:
        expect("GetResultQueue before SetResultQueue gives the tutorial's dict", data.get("message"),
               "[Error] Please call SetResultQueue function first")

    # A job for a channel nobody registered, or not shaped (data_a, data_b, channel_id),
    # is refused at put: its result could reach nobody.
    sender = module.QueueManager(("127.0.0.1", 1001), authkey=b"password")
    sender.connect()
    audio = sender.GetAudioQueue()
    for job, wanted in [((1, None, "nobody"), "[Error] unknown channel id nobody: call SetResultQueue().set_channel first"),
                        ((1, None), "[Error] a job is (data_a, data_b, channel_id), not (1, None)")]:
        try:
            audio.put(job)
            expect("put %r is refused" % (job,), "accepted", "ValueError")
        except ValueError as e:
            expect("put %r is refused with ValueError" % (job,), str(e), wanted)
    expect("refused jobs are not queued", audio.qsize(), 0)

    # The server requests a client can send: get_methods (a proxy's token), debug_info.
    conn = sender._Client(sender._address, authkey=sender._authkey)
    try:
        expect("get_methods lists the queue's methods", dispatch(conn, None, "get_methods", (audio._token,)),
               ("empty", "full", "get", "get_nowait", "put", "put_nowait", "qsize"))
    finally:
        conn.close()
    expect("debug_info: no call waits", waiting_calls(sender), (0, 0))
    expect("debug_info lists the queue with its references", "refcount=" in sender._debug_info(), True)

    # A client killed while blocked in ReceiveResult: the server stays up, and the result
    # of a later job for its channel is not swallowed by the dead client's get. The kill
    # comes only once the server counts the victim's get as waiting, and the job only once
    # it counts that get as abandoned.
    victim = subprocess.Popen([sys.executable, __file__, str(sender_port), str(receiver_port), "victim"],
                              stdout=subprocess.PIPE)
    while victim.stdout.readline().strip() not in (b"ready", b""):  # registered, about to block
        pass
    wait_for("the victim's get to wait on the server", lambda: waiting_calls(manager) == (1, 0))
    victim.kill()
    victim.wait()
    wait_for("the server to stop the killed victim's get", lambda: waiting_calls(manager) == (0, 1))
    audio.put((5, None, "victim"))
    expect("a killed client's blocked get takes nothing: its channel still gets the result",
           manager.GetResultQueue("victim").get(True, 60), 25)

    # Several tutorial clients at once, each in a process of its own.
    procs = [subprocess.Popen([sys.executable, __file__, str(sender_port), str(receiver_port), "client",
                               "c%d" % i, "40"]) for i in range(4)]
    codes = [p.wait() for p in procs]
    expect("4 concurrent clients each got their own 40 results", codes, [0, 0, 0, 0])
    del kept


def check_failing_job_stays_with_its_client(module):
    """A job the job function fails on ([1, 2]: no job function for a list), put between
    another client's good jobs: its client gets the error dict, the other only its squares
    (every wait bounded: a result routed to the wrong channel fails the check, not hangs it)."""
    good, bad = module.MY_Client("good"), module.MY_Client("bad")
    n = 10
    for i in range(n):
        good.SendAudio(i, None)
        if i == n // 2:
            bad.SendAudio([1, 2], None)
    error = {"result": False, "message": "[Error] job function: no job function for a list"}

    def take(client, count):
        got = []
        for _ in range(count):
            try:
                got.append(client.result_queue.get(True, 30))
            except Exception as e:  # queue.Empty: a result that never came
                got.append(type(e).__name__)
        return got

    bad_got = take(bad, 1)
    good_got = take(good, n)
    expect("a failing job: its client gets the error dict", bad_got, [error])
    expect("another client's jobs around it: only its own squares",
           sorted(good_got, key=repr), sorted([i * i for i in range(n)], key=repr))
    expect("nothing more for either", [good.ReceiveResult(False), bad.ReceiveResult(False)],
           [{"result": False}, {"result": False}])
    return [good, bad]


MAX_SQUARED_BITS = 4096  # job_function.hpp's kMaxSquaredBits


def check_int_squares(module):
    """Ints of any size up to 4,096 bits are squared exactly (compared with Python's own
    x * x); a larger one gets its client the error dict, and the jobs after it go on."""
    client = module.MY_Client("ints")
    ints = [2 ** 63, -(2 ** 63), 2 ** 63 - 1, -(2 ** 63) - 1, 2 ** 64 + 1, -(2 ** 64) + 1, 2 ** 200 - 1,
            -(2 ** 100) - 7, 0, 1, -1, 3 ** 500, 2 ** MAX_SQUARED_BITS - 1, -(2 ** MAX_SQUARED_BITS - 1)]
    too_big = 2 ** MAX_SQUARED_BITS
    for x in ints[:6] + [too_big] + ints[6:]:
        client.SendAudio(x, None)
    got = []
    for _ in range(len(ints) + 1):
        try:
            got.append(client.result_queue.get(True, 30))
        except Exception as e:  # queue.Empty: a result that never came
            got.append(type(e).__name__)
    error = {"result": False, "message": "[Error] job function: this job function squares ints of at most %d bits, "
                                         "not one of %d" % (MAX_SQUARED_BITS, MAX_SQUARED_BITS + 1)}
    # (The workers run jobs in parallel: the results come in any order. Missing squares are
    # named by their int's sign and bit_length(), not printed whole.)
    unmatched, missing = list(got), []
    for x in ints:
        if x * x in unmatched:
            unmatched.remove(x * x)
        else:
            missing.append(("-" if x < 0 else "+", x.bit_length()))
    expect("ints of up to %d bits squared exactly, negative ones too (missing: sign, bits)" % MAX_SQUARED_BITS,
           missing, [])
    expect("an int of %d bits: the error dict" % (MAX_SQUARED_BITS + 1), [r for r in got if isinstance(r, dict)],
           [error])
    expect("each square an int (not a float), and nothing more came",
           (all(isinstance(r, int) for r in got if not isinstance(r, dict)), client.ReceiveResult(False)),
           (True, {"result": False}))
    return [client]


def check_large_job(module):
    """A 5 MiB bytes job (about 30 s of CD audio: the tutorial's jobs are audio) comes back
    reversed, and the client's connection goes on (job_server once refused requests above
    4 MiB by closing it: BrokenPipeError)."""
    client = module.MY_Client("large")
    job = bytes(range(256)) * (5 * 4096)
    client.SendAudio(job, None)
    r = client.ReceiveResult(True)
    expect("a 5 MiB job comes back reversed", (r["result"], r["data"] == job[::-1]), (True, True))
    client.SendAudio("after", None)
    expect("the same client's next job", client.ReceiveResult(True), {"result": True, "data": "AFTER"})
    return [client]


def run_client(module, channel, n):
    client = module.MY_Client(channel)
    for i in range(n):
        client.SendAudio(i, channel)
    got = sorted(client.ReceiveResult(True)["data"] for _ in range(n))
    if got != [i * i for i in range(n)]:
        print("FAIL: client %s got %r" % (channel, got), flush=True)
        return 1
    leftover = client.ReceiveResult(False)
    if leftover != {"result": False}:
        print("FAIL: client %s got an extra result %r" % (channel, leftover), flush=True)
        return 1
    return 0


def run_victim(module):
    client = module.MY_Client("victim")
    print("ready", flush=True)
    client.ReceiveResult(True)  # killed while blocked here
    return 1


def run_demo(module, channel):
    client = module.MY_Client(channel)
    jobs = ["hello from " + channel, channel.encode(), len(channel), 0.5]
    for job in jobs:
        client.SendAudio(job, None)
    for _ in jobs:
        print("python client %s received %r" % (channel, client.ReceiveResult(True)["data"]), flush=True)
    return 0


def main():
    sender_port, receiver_port, role = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    module = load_tutorial_client(sender_port, receiver_port)
    if role == "check":
        run_check(module, sender_port, receiver_port)
        return 1 if failures else 0
    if role == "client":
        return run_client(module, sys.argv[4], int(sys.argv[5]))
    if role == "victim":
        return run_victim(module)
    return run_demo(module, sys.argv[4])


if __name__ == "__main__":
    sys.exit(main())
