// runtime/task.hpp stands alone: a translation unit that includes only it compiles and
// links task<T> (its final suspend reaches finish_root through detail/join_state.hpp),
// and task.hpp does not pull in spawn.hpp (the include cycle task.hpp -> spawn.hpp ->
// task.hpp is gone): the `join_handle` below would clash with spawn.hpp's class template.
#include <catch2/catch.hpp>

#include <corio/runtime/task.hpp>

#include <string>

namespace corio {
struct join_handle {};  // an error if spawn.hpp (template <class T> class join_handle) is included
}  // namespace corio

namespace {

corio::task<std::string> greet() { co_return "hello"; }

corio::task<int> length() {
  std::string s = co_await greet();
  co_return static_cast<int>(s.size());
}

}  // namespace

TEST_CASE("a task built from task.hpp alone can be created, moved and destroyed unstarted", "[task]") {
  corio::task<int> t = length();
  CHECK(t.valid());
  corio::task<int> moved = std::move(t);
  CHECK(moved.valid());
  CHECK_FALSE(t.valid());  // NOLINT(bugprone-use-after-move): checking the moved-from state
  (void)corio::join_handle{};
}
