// corio: a C++20 coroutine runtime on io_uring with work stealing.
// The umbrella header: #include <corio/corio.hpp> brings in every public concept.
// Each concept also has its own header (see README.md).
#pragma once

#include <corio/runtime/blocking.hpp>
#include <corio/runtime/config.hpp>
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
