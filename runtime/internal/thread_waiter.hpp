// What runtime::block_on's thread waits on: the join state's waiter word holds its
// address tagged with join_state_base::kThread, and the task's completion releases it.
// Thread-safety: one waiting thread, one releasing thread. Cost: a semaphore.
#pragma once

#include <semaphore>

namespace corio::detail {

struct thread_waiter {
  std::binary_semaphore done{0};
};

}  // namespace corio::detail
