// The out-of-line thread id that the README's workaround for clang's cached thread ids
// recommends: a function in another file, which the compiler cannot inline into (and so
// cannot cache across) a coroutine's suspension points.
#include "thread_id.hpp"

std::thread::id corio_test::current_thread_id() noexcept { return std::this_thread::get_id(); }
