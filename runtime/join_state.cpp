// The life of a spawned task's join state (runtime/detail/join_state.hpp): finishing the
// task (finish_root), publishing its result and waking the waiter (complete), and the
// reference count shared by the task, its handle and the runtime's registry.
#include <corio/runtime/detail/join_state.hpp>

#include <cassert>
#include <cstdio>
#include <exception>

#include <corio/runtime/internal/thread_waiter.hpp>
#include <corio/runtime/internal/runtime_core.hpp>
#include <corio/runtime/port.hpp>

namespace corio::detail {

void finish_root(std::coroutine_handle<> frame, join_state_base* root, std::exception_ptr error) noexcept {
  if (error) {
    root->error = std::move(error);
  }
  root->frame = {};
  frame.destroy();  // allowed: the frame is suspended at its final suspend point
  root->complete(false);
}

void join_state_base::complete(bool from_shutdown) noexcept {
  if (!from_shutdown) {
    // The registry keeps its reference until its owner sweeps it (runtime_core::sweep).
    if (worker* w = port::current_worker()) {
      w->note_root_finished();
    }
  }
  // acq_rel: release publishes the result to the awaiter (its acquire load/CAS); acquire
  // makes the awaiter's frame address and waiter_runtime visible to us.
  std::uintptr_t prev = waiter.exchange(kDone, std::memory_order_acq_rel);
  if (prev != 0 && prev != kCancelled) {
    if ((prev & kThread) != 0) {
      reinterpret_cast<thread_waiter*>(prev & ~kThread)->done.release();
    } else if (!from_shutdown || waiter_runtime != runtime) {
      // From our own shutdown, a waiting coroutine of this runtime is itself about to be
      // destroyed and is not resumed; one of another runtime is woken (it then sees
      // `cancelled` and throws errc::shut_down).
      port::wake(std::coroutine_handle<>::from_address(reinterpret_cast<void*>(prev)), waiter_runtime);
    }
  }
  release();
}

void join_state_base::release() noexcept {
  // Read before the decrement: once our reference is gone, another holder may free us.
  runtime_core* rt = runtime;
  unsigned shard = reg_shard;
  // acq_rel: the last owner must see every write of the other before freeing.
  std::uint32_t before = refs.fetch_sub(1, std::memory_order_acq_rel);
  assert((before & ~kRegistered) != 0 && "corio: join state released more often than referenced");
  if (before == 1) {
    destroy();
  } else if (before == (kRegistered | 1)) {
    // Only the registry still holds it. On its own worker, unlink and free it now (memory
    // comes back at once, as in a fork-join tree); elsewhere the owner's sweep does it.
    rt->unlink_if_owner(this, shard);
  }
}

void join_state_base::drop_registry() noexcept {
  // acq_rel: as in release(); the registry flag is the registry's reference.
  if (refs.fetch_sub(kRegistered, std::memory_order_acq_rel) == kRegistered) {
    destroy();
  }
}

void join_state_base::destroy() noexcept {
  if (error && !observed) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "corio: exception escaped a detached task: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "corio: exception escaped a detached task\n");
    }
  }
  free_self(this);
}

}  // namespace corio::detail
