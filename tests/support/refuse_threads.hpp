// corio_test::refuse_new_threads: while it lives, no thread the process creates can start,
// as when the system is out of threads (tests of what fails when the blocking pool cannot
// start a thread).
#pragma once

#include <catch2/catch.hpp>

#include <pthread.h>

#include <cstddef>

namespace corio_test {

// The default stack (std::thread uses the default attributes) is made larger than the
// address space, so pthread_create returns EAGAIN. Threads that already run are not
// affected. Not thread-safe: the default attributes are the process's.
class refuse_new_threads {
 public:
  refuse_new_threads() {
    REQUIRE(::pthread_getattr_default_np(&m_saved) == 0);
    pthread_attr_t huge;
    ::pthread_attr_init(&huge);
    REQUIRE(::pthread_attr_setstacksize(&huge, std::size_t{1} << 50) == 0);
    REQUIRE(::pthread_setattr_default_np(&huge) == 0);
    ::pthread_attr_destroy(&huge);
  }
  refuse_new_threads(const refuse_new_threads&) = delete;
  refuse_new_threads& operator=(const refuse_new_threads&) = delete;
  ~refuse_new_threads() {
    ::pthread_setattr_default_np(&m_saved);
    ::pthread_attr_destroy(&m_saved);
  }

 private:
  pthread_attr_t m_saved;
};

}  // namespace corio_test
