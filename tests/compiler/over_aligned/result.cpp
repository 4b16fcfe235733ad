// Compiled by over_aligned_check.sh once per CASE (syntax only). CASE 0 must compile: a
// result aligned to the default new alignment, and an over-aligned one held by pointer.
// CASE 1 (a task's result) and CASE 2 (a spawned task's, in its join state) must fail
// with corio's static_assert: a coroutine frame is aligned to 16 bytes only.
#include <corio/corio.hpp>

#include <memory>

struct alignas(__STDCPP_DEFAULT_NEW_ALIGNMENT__) fits {
  char bytes[16];
};
struct alignas(64) cache_line {
  char bytes[64];
};

corio::task<fits> make_fits() { co_return fits{}; }
corio::task<std::unique_ptr<cache_line>> make_held() { co_return std::make_unique<cache_line>(); }

#if CASE == 1
corio::task<cache_line> make_line() { co_return cache_line{}; }
#elif CASE == 2
void spawn_line(corio::task<cache_line> t) { (void)corio::spawn(std::move(t)); }
#endif

int main() { return 0; }
