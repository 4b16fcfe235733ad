// corio/ipc/process: child processes (command, child), ipc::fork and process_pool.
// The umbrella header of this folder; each concept also has its own header.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <corio/ipc/process/child.hpp>
#include <corio/ipc/process/child_stdio.hpp>
#include <corio/ipc/process/command.hpp>
#include <corio/ipc/process/exit_status.hpp>
#include <corio/ipc/process/fork.hpp>
#include <corio/ipc/process/process_pool.hpp>
#include <corio/ipc/process/process_result.hpp>
