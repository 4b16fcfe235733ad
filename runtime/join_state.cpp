// The life of a spawned task's join state (runtime/detail/join_state.hpp): finishing the
// task (finish_root), publishing its result and waking the waiter (complete), and the
// reference count shared by the task, its handle and the runtime's registry, and abort
// (request_abort, the lazily created stop source, the parked join wait).
#include <corio/runtime/detail/join_state.hpp>

#include <cassert>
#include <cstdio>
#include <exception>
#include <system_error>
#include <thread>

#include <corio/runtime/result.hpp>

#include <corio/runtime/internal/thread_waiter.hpp>
#include <corio/runtime/internal/runtime_core.hpp>
#include <corio/runtime/port.hpp>

namespace corio::detail {

void finish_root(std::coroutine_handle<> frame, join_state_base* root, std::exception_ptr error) noexcept {
  // An abort requested before this point makes the outcome errc::aborted, whatever the
  // body returned or threw (the abort linearizes at this read).
  root->aborted = root->abort_requested();
  if (error && !root->aborted) {
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
    // Off the runtime's workers `rt` may be gone by now: unlink_if_owner checks first.
    runtime_core::unlink_if_owner(rt, this, shard);
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

namespace corio::detail {

[[noreturn]] void throw_aborted() { throw std::system_error(make_error_code(errc::aborted)); }

void join_state_base::request_abort() noexcept {
  // seq_cst (here and in park): the abort bit's write and the read of `parked` below, and
  // park's write of `parked` and its read of the bit, are in one total order, so either
  // we see the parked hook or park sees the bit (neither can miss the other). It also
  // acquires `source`, created before kHasSource was set.
  std::uint8_t prev = abort_bits.fetch_or(kAbortRequested, std::memory_order_seq_cst);
  if ((prev & kAbortRequested) != 0) {
    return;  // aborted already
  }
  if ((prev & kHasSource) != 0) {
    source.request_stop();  // wakes every wait registered on the task's token
  }
  std::uintptr_t hook = parked.load(std::memory_order_seq_cst);
  // seq_cst CAS: fails if the wait withdrew its hook meanwhile; on success the wait's
  // unpark() waits for our release store below before its frame may go.
  if (hook != 0 && hook != kFiring &&
      parked.compare_exchange_strong(hook, kFiring, std::memory_order_seq_cst)) {
    auto* h = reinterpret_cast<abort_hook*>(hook);
    h->fire(h);
    parked.store(0, std::memory_order_release);
  }
}

const std::stop_token* join_state_base::abort_token() noexcept {
  // Relaxed: only the task sets kHasSource, and its frames run one at a time (a worker
  // hand-over orders them), so it always sees its own earlier write.
  if ((abort_bits.load(std::memory_order_relaxed) & kHasSource) == 0) {
    source = std::stop_source();  // allocates; out of memory terminates (noexcept)
    token = source.get_token();
    // acq_rel: release publishes `source` to request_abort; acquire orders an abort that
    // came first, which did not see the source and leaves the stop to us.
    if ((abort_bits.fetch_or(kHasSource, std::memory_order_acq_rel) & kAbortRequested) != 0) {
      source.request_stop();
    }
  }
  return &token;
}

bool join_state_base::park(abort_hook* hook) noexcept {
  std::uintptr_t expected = 0;
  const auto mine = reinterpret_cast<std::uintptr_t>(hook);
  // seq_cst: see request_abort.
  if (!parked.compare_exchange_strong(expected, mine, std::memory_order_seq_cst)) {
    return false;
  }
  if ((abort_bits.load(std::memory_order_seq_cst) & kAbortRequested) != 0) {
    // The abort may or may not have seen us: whoever takes the hook out of the slot fires it.
    expected = mine;
    if (parked.compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) {
      hook->fire(hook);
    } else {
      unpark(hook);  // request_abort is firing it: wait for the end
    }
  }
  return true;
}

void join_state_base::unpark(abort_hook* hook) noexcept {
  std::uintptr_t expected = reinterpret_cast<std::uintptr_t>(hook);
  // acq_rel: on failure the acquire load below sees request_abort's writes by the hook.
  if (parked.compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) {
    return;
  }
  // Not ours any more: request_abort took it (kFiring until the hook returned), or it
  // fired already. Only one firing ever happens, so kFiring here is ours.
  // acquire: pairs with request_abort's release store of 0.
  while (parked.load(std::memory_order_acquire) == kFiring) {
    std::this_thread::yield();
  }
}

}  // namespace corio::detail
