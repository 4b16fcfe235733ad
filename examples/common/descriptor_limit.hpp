// example::fit_descriptor_limit / open_descriptors: how a server example makes room for
// its --max-connections under the limit on open descriptors (RLIMIT_NOFILE).
//
// Concept: each connection holds a descriptor, and past the soft RLIMIT_NOFILE accept
// fails with EMFILE: the accept loop backs off and clients wait in the listen backlog with
// no answer. Once the runtime and the listener are open, main() calls
// fit_descriptor_limit(), which counts the descriptors open then and raises the soft
// limit to them + the connections' + kSpareDescriptors. If the hard limit is lower (only
// root may raise it), it returns the number that fits, which the server then serves. For
// a number the user asked for (--max-connections, --idle-test) it first says so on stderr
// (what the connections need, the hard limit, how many connections fit, how to raise it),
// as nginx warns when worker_connections exceed its open-file limit; a program's default
// (echo_server's 100,000, far above many machines' hard limit) fits itself silently.
// Either way it says so, and returns 0, when not even one fits. Used by echo_server and
// http_hello.
// Thread-safety: call from main(); the limit is the process's, shared by every thread.
// Cost: a listing of /proc/self/fd and two system calls, once.
#pragma once

#include <dirent.h>
#include <sys/resource.h>

#include <cstdio>

namespace example {

/// How many descriptors this process has open (the entries of /proc/self/fd, less the
/// one that reads them); -1 if they cannot be listed.
inline int open_descriptors() {
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) {
    return -1;
  }
  int n = 0;
  while (const dirent* e = ::readdir(d)) {
    n += e->d_name[0] != '.' ? 1 : 0;
  }
  ::closedir(d);
  return n - 1;
}

/// Descriptors kept free beyond the connections: connections accepted past the limit
/// (http_hello's, each held until its 503 is written; echo_server's one waiting for a
/// place), a self-test's extra clients and listeners, and whatever the runtime opens
/// later.
inline constexpr unsigned kSpareDescriptors = 64;

/// Who chose the number of connections: the user (a message when they do not fit) or the
/// program's default (fitted to the limit without a word).
enum class chosen_by { user, default_value };

/// Raises the soft RLIMIT_NOFILE so that `wanted` connections of `per_connection`
/// descriptors each fit beside the descriptors open now. Returns how many connections
/// fit: `wanted`, or fewer when the hard limit is lower than they need (after a message
/// on stderr naming `program` if the user chose `wanted`); 0, with a message, when not
/// even one fits. When the limit or the open descriptors cannot be read it returns
/// `wanted` (accept then backs off on EMFILE).
inline unsigned fit_descriptor_limit(const char* program, unsigned wanted, unsigned per_connection, chosen_by who) {
  rlimit rl{};
  const int open_now = open_descriptors();
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || open_now < 0) {
    return wanted;
  }
  const rlim_t reserve = static_cast<rlim_t>(open_now) + kSpareDescriptors;
  const rlim_t need = reserve + static_cast<rlim_t>(wanted) * per_connection;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      rl = raised;
    }
  }
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need) {
    return wanted;
  }
  const rlim_t fit = rl.rlim_cur > reserve ? (rl.rlim_cur - reserve) / per_connection : 0;
  if (fit != 0 && who == chosen_by::default_value) {
    return static_cast<unsigned>(fit);  // (fit < wanted: it fits an unsigned)
  }
  std::fprintf(stderr,
               "%s: %u connections at once need %llu open descriptors, but their hard limit (RLIMIT_NOFILE) is %llu",
               program, wanted, static_cast<unsigned long long>(need), static_cast<unsigned long long>(rl.rlim_max));
  if (fit == 0) {
    std::fprintf(stderr, ": not even one connection fits; raise the hard limit (ulimit -Hn, LimitNOFILE=)\n");
    return 0;
  }
  std::fprintf(stderr,
               ": serving at most %llu connections at once; raise the hard limit (ulimit -Hn, LimitNOFILE=) to "
               "serve more\n",
               static_cast<unsigned long long>(fit));
  return static_cast<unsigned>(fit);
}

}  // namespace example
