// job_server's job function (job_function.cpp): what a job's data_a becomes, the result
// routed to the job's channel. A separate file so that the server (job_server.cpp) holds
// only the serving.
#pragma once

#include <corio/ipc/pickle.hpp>

#include <cstddef>

namespace job_server {

/// The most bits (of its magnitude, Python's int.bit_length()) of an int the job function
/// squares. Its square, of at most 8,192 bits (2,467 decimal digits), stays printable
/// under Python's default limit on the digits of an int converted to str (4,300).
inline constexpr std::size_t kMaxSquaredBits = 4096;

/// str -> upper-cased (ASCII letters), bytes -> reversed, int (bool too) -> its exact
/// square (any int of at most kMaxSquaredBits bits, negative ones included), float -> its
/// square. Throws std::runtime_error for anything else, or a larger int (the job's client
/// gets an error dict instead of a result, see job_server.cpp).
corio::ipc::pickle::value job_function(const corio::ipc::pickle::value& data);

}  // namespace job_server
