// job_server's connection limit (connection_limit.cpp): how many connections each of its
// two ports serves at once (--max-connections, fitted to the limit on open descriptors),
// and a watch that says on stderr when clients wait to be accepted.
//
// Each connection holds a descriptor; past the soft RLIMIT_NOFILE accepting fails with
// EMFILE, and past a manager's max_connections it waits for a place: either way the
// clients wait in the listen backlog, unanswered (Python's Client has no timeout). So at
// start the soft limit is raised to what both ports' connections need
// (example::fit_descriptor_limit, as echo_server and http_hello do), and each manager's
// max_connections is set to the number that fits. watch_ports() reads both managers'
// stats() (ipc::manager_stats::connections: connections in use against the limit, those
// waiting in the accept queue, accepts refused for lack of descriptors) and says on
// stderr when clients wait at the limit for a second or more, or descriptors ran out.
#pragma once

#include <corio/ipc/manager_server.hpp>
#include <corio/runtime/task.hpp>

#include <stop_token>

namespace job_server {

/// The default --max-connections: connections at once on each port (the manager's own
/// default).
inline constexpr unsigned kDefaultMaxConnections = 16384;

/// How many connections each port serves at once: `given` (--max-connections; 0: none
/// given, kDefaultMaxConnections), or fewer when the descriptor limit cannot be raised
/// enough (two descriptors per place: one connection on each port, as a tutorial client
/// holds). A lower number is said on stderr for a given one (the default fits silently);
/// 0, said on stderr, when not even one fits. Call once the runtime is up and before the
/// managers bind (their two descriptors are within the spare ones).
unsigned fit_max_connections(unsigned given);

/// Says on stdout how many connections each port serves: "[Notice] at most M connections
/// at once on each port".
void announce_limit(unsigned served);

/// Watches both managers while they serve, until `stop`: twice a second it reads their
/// stats(). When every connection slot of one was in use with connections waiting in its
/// accept queue for three checks in a row (a second or more: a server with room accepts
/// within microseconds), one line on stderr names the port, how many wait and the limit,
/// once until that port has room or an empty queue again. When accepts on one were
/// refused for lack of descriptors (EMFILE, ENFILE) since the last check, another line
/// says so, once until a check finds no new refusal. It reads the managers: await it
/// before they are destroyed.
corio::task<void> watch_ports(const corio::ipc::manager_server& sender, const corio::ipc::manager_server& receiver,
                              std::stop_token stop);

}  // namespace job_server
