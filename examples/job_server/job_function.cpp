// job_server's job function (declared in job_function.hpp): str upper-cased, bytes
// reversed, int and float squared; anything else throws.
#include "job_function.hpp"

#include <cstdint>
#include <stdexcept>
#include <string>

namespace job_server {

namespace pickle = corio::ipc::pickle;

namespace {

// 128-bit integers (a GNU extension g++ and clang share): an int64's square fits.
__extension__ using int128 = __int128;
__extension__ using uint128 = unsigned __int128;

}  // namespace

pickle::value job_function(const pickle::value& data) {
  switch (data.type()) {
    case pickle::kind::str: {
      std::string s = *data.if_str();
      for (char& c : s) {
        if (c >= 'a' && c <= 'z') {
          c = static_cast<char>(c - 'a' + 'A');
        }
      }
      return s;
    }
    case pickle::kind::bytes: {
      std::string b = *data.if_bytes();
      return pickle::value::make_bytes(std::string(b.rbegin(), b.rend()));
    }
    case pickle::kind::boolean:
    case pickle::kind::integer: {
      int128 x = data.type() == pickle::kind::boolean ? (*data.as<bool>() ? 1 : 0) : *data.as<std::int64_t>();
      int128 sq = x * x;
      if (sq <= INT64_MAX) {
        return static_cast<std::int64_t>(sq);
      }
      std::uint8_t le[17] = {};
      for (int i = 0; i < 16; ++i) {
        le[i] = static_cast<std::uint8_t>(static_cast<uint128>(sq) >> (8 * i));
      }
      return pickle::big_int::from_twos_complement(le);  // 17 bytes: the top one keeps it positive
    }
    case pickle::kind::floating: {
      double d = *data.as<double>();
      return d * d;
    }
    case pickle::kind::big_integer: throw std::runtime_error("this job function squares ints below 2**63 only");
    default: throw std::runtime_error(std::string("no job function for a ") + std::string(data.type_name()));
  }
}

}  // namespace job_server
