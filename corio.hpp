// corio: a C++20 coroutine runtime on io_uring with work stealing.
// The umbrella header: #include <corio/corio.hpp> brings in every public concept.
// Each concept also has its own header (see README.md).
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <corio/runtime/blocking.hpp>
#include <corio/runtime/config.hpp>
#include <corio/runtime/interval.hpp>
#include <corio/runtime/io.hpp>
#include <corio/runtime/io_op.hpp>
#include <corio/runtime/metrics.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/runtime.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>
#include <corio/runtime/timeout.hpp>
#include <corio/runtime/when_all.hpp>
#include <corio/runtime/when_any.hpp>

#include <corio/sync/barrier.hpp>
#include <corio/sync/channel.hpp>
#include <corio/sync/condition_variable.hpp>
#include <corio/sync/event.hpp>
#include <corio/sync/latch.hpp>
#include <corio/sync/mutex.hpp>
#include <corio/sync/oneshot.hpp>
#include <corio/sync/semaphore.hpp>
#include <corio/sync/shared_mutex.hpp>
#include <corio/sync/task_group.hpp>

#include <corio/ipc/ipc.hpp>
#include <corio/ipc/process/process.hpp>
