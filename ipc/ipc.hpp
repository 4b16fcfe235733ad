// corio/ipc/ipc.hpp: every ipc concept (addresses, TCP, UDP, Unix sockets, pipes, FIFOs,
// buffered streams, POSIX and SysV message queues, shared memory, memory maps, the pickle
// codec, process-shared locks and events, shared-memory queues, Python-compatible
// connections, signals).
// Thread-safety, cost and cancellation: see each header.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <corio/ipc/acceptor.hpp>
#include <corio/ipc/address.hpp>
#include <corio/ipc/authentication.hpp>
#include <corio/ipc/buffered_reader.hpp>
#include <corio/ipc/buffered_writer.hpp>
#include <corio/ipc/byte_stream.hpp>
#include <corio/ipc/client.hpp>
#include <corio/ipc/connection.hpp>
#include <corio/ipc/frame.hpp>
#include <corio/ipc/listener.hpp>
#include <corio/ipc/manager_client.hpp>
#include <corio/ipc/manager_object.hpp>
#include <corio/ipc/manager_queue.hpp>
#include <corio/ipc/manager_server.hpp>
#include <corio/ipc/memory_map.hpp>
#include <corio/ipc/message_queue.hpp>
#include <corio/ipc/owned_fd.hpp>
#include <corio/ipc/pickle.hpp>
#include <corio/ipc/pipe.hpp>
#include <corio/ipc/process_condition_variable.hpp>
#include <corio/ipc/process_event.hpp>
#include <corio/ipc/process_mutex.hpp>
#include <corio/ipc/process_semaphore.hpp>
#include <corio/ipc/receiver.hpp>
#include <corio/ipc/shared_memory.hpp>
#include <corio/ipc/shm_queue.hpp>
#include <corio/ipc/signals.hpp>
#include <corio/ipc/socket.hpp>
#include <corio/ipc/sysv_message_queue.hpp>
#include <corio/ipc/tcp.hpp>
#include <corio/ipc/udp.hpp>
#include <corio/ipc/unix.hpp>
