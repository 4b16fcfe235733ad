"""The tutorial's job server in Python, for bench/jobs/jobs.sh: two SyncManager processes
(GetAudioQueue; SetResultQueue/GetResultQueue), a multiprocessing.Queue of jobs, worker
threads computing the job and a mediator routing each result to its channel's queue,
shaped as the tutorial builds it, with the job function of examples/job_server. Prints
"sender listening on ADDR" and "receiver listening on ADDR" (free ports) and serves
until SIGTERM.
    python_server.py [WORKERS=5]
"""
import signal
import sys
import threading
from multiprocessing import Queue
from multiprocessing.managers import SyncManager

input_queue = Queue()
result_queue = Queue()
channels = {}


def get_result_queue(channel_id):
    if channel_id not in channels:
        return {"result": False, "message": "[Error] Please call SetResultQueue function first"}
    return channels[channel_id]


class SetResultQueue(object):
    def __init__(self):
        def route():
            while True:
                result, channel_id = result_queue.get()
                channels[channel_id].put(result)
        threading.Thread(target=route, daemon=True).start()

    def set_channel(self, channel_id):
        if channel_id in channels:
            return {"result": False, "message": "[Error] Please give me another channel id, not {}".format(channel_id)}
        channels[channel_id] = Queue()
        return {"result": True, "message": "[Notice] Successfully channel {} added".format(channel_id)}


def job(data):
    if isinstance(data, str):
        return data.upper()
    if isinstance(data, bytes):
        return data[::-1]
    if isinstance(data, (int, float)):
        return data * data
    return {"result": False, "message": "[Error] job function: no job function for a " + type(data).__name__}


def worker():
    while True:
        item = input_queue.get()
        if item is None:
            return
        data_a, data_b, channel_id = item
        result_queue.put((job(data_a), channel_id))


class QueueManager(SyncManager):
    pass


def main():
    QueueManager.register("GetAudioQueue", callable=lambda: input_queue)
    QueueManager.register("SetResultQueue", callable=SetResultQueue)
    QueueManager.register("GetResultQueue", callable=get_result_queue)
    sender = QueueManager(("127.0.0.1", 0), authkey=b"password")
    receiver = QueueManager(("127.0.0.1", 0), authkey=b"password")
    workers = [threading.Thread(target=worker, daemon=True) for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5)]
    for t in workers:
        t.start()
    sender.start()
    receiver.start()
    print("sender listening on %s:%d" % sender.address, flush=True)
    print("receiver listening on %s:%d" % receiver.address, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    stop.wait()
    sender.shutdown()
    receiver.shutdown()


if __name__ == "__main__":
    main()
