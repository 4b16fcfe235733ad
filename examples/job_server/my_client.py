# The tutorial's client (its MY_Client class and the ResultQueueProxy it uses), exactly as the
# tutorial gives it: examples/job_server/tutorial_clients.py imports it unmodified.
from multiprocessing.managers import SyncManager
from multiprocessing.managers import NamespaceProxy
from multiprocessing import Queue
import multiprocessing
from queue import Empty



#=================== Connect Queue Managers
class QueueManager(SyncManager):
    pass;
class MY_Client:
    def __init__(self, channel_id):
        self.channel_id = channel_id
        QueueManager.register('GetAudioQueue')
        QueueManager.register('GetResultQueue')
        QueueManager.register('SetResultQueue', proxytype=ResultQueueProxy)
        self.port_sender = 1001
        self.port_receiver= 1002
        self.authkey = b"password"
        self.manager_sender = QueueManager(("127.0.0.1", self.port_sender), authkey=self.authkey)
        self.manager_receiver = QueueManager(("127.0.0.1", self.port_receiver), authkey=self.authkey)
        multiprocessing.current_process().authkey=b"password"
        self.manager_sender.connect()
        self.manager_receiver.connect()

        # ***********************************************
        self.audio_queue = self.manager_sender.GetAudioQueue()

        # ***********************************************
        receiver_obj = self.manager_receiver.SetResultQueue()
        data = receiver_obj.set_channel(self.channel_id)
        result = data.get('result')
        message = data.get("message")
        if result:
            print(message)
        else :
            raise Exception(message)
        data= self.manager_receiver.GetResultQueue(self.channel_id)
        try :
            a = data.get(block=False)
        except Empty: 
            self.result_queue=data 
        except :
            message = data.get("message")
            raise Exception(message)
        # ***********************************************
        
    def SendAudio(self, data_a, data_b):
        self.audio_queue.put((data_a, data_b, self.channel_id))

    def ReceiveResult(self, block=True):
        if block:
            result = self.result_queue.get(True)
            return {'result':True, 'data':result}
        else:
            try:
                result = self.result_queue.get(False)
                return {'result':True, 'data':result}
            except Empty:
                return {'result':False}


class ResultQueueProxy(NamespaceProxy):
    _exposed_ = ('__getattribute__', '__setattr__', '__delattr__', 'set_channel')

    def set_channel(self, channel_id):
        callmethod = object.__getattribute__(self, '_callmethod')
        return callmethod('set_channel', (channel_id,))
