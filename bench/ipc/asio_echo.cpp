// asio_echo: Boost.Asio 1.81 TCP echo server with C++20 coroutines (the peer).
// Built twice: -DBOOST_ASIO_HAS_IO_URING -DBOOST_ASIO_DISABLE_EPOLL (io_uring backend) and
// the default epoll reactor. One coroutine per connection: async_read_some then
// async_write of what was read.   asio_echo PORT [THREADS=1]
#include <boost/asio.hpp>

#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using asio::ip::tcp;

static asio::awaitable<void> session(tcp::socket s) {
  std::vector<char> buf(64 * 1024);
  s.set_option(tcp::no_delay(true));
  try {
    for (;;) {
      std::size_t n = co_await s.async_read_some(asio::buffer(buf), asio::use_awaitable);
      co_await asio::async_write(s, asio::buffer(buf.data(), n), asio::use_awaitable);
    }
  } catch (const std::exception&) {
  }
}

static asio::awaitable<void> listener(tcp::acceptor& a) {
  for (;;) {
    tcp::socket s = co_await a.async_accept(asio::use_awaitable);
    asio::co_spawn(a.get_executor(), session(std::move(s)), asio::detached);
  }
}

int main(int argc, char** argv) {
  unsigned short port = static_cast<unsigned short>(argc > 1 ? std::atoi(argv[1]) : 7002);
  int threads = argc > 2 ? std::atoi(argv[2]) : 1;
  asio::io_context ctx(threads);
  tcp::acceptor a(ctx, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  asio::co_spawn(ctx, listener(a), asio::detached);
  std::printf("asio_echo listening on 127.0.0.1:%u\n", port);
  std::fflush(stdout);
  std::vector<std::thread> ts;
  for (int i = 1; i < threads; ++i) {
    ts.emplace_back([&] { ctx.run(); });
  }
  ctx.run();
  for (auto& t : ts) {
    t.join();
  }
}
