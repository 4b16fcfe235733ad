// job_server's job function (job_function.cpp): what a job's data_a becomes, the result
// routed to the job's channel. A separate file so that the server (job_server.cpp) holds
// only the serving.
#pragma once

#include <corio/ipc/pickle.hpp>

namespace job_server {

/// str -> upper-cased (ASCII letters), bytes -> reversed, int (bool too) and float -> its
/// square. Throws std::runtime_error for anything else (the job's client gets an error
/// dict instead of a result, see job_server.cpp).
corio::ipc::pickle::value job_function(const corio::ipc::pickle::value& data);

}  // namespace job_server
