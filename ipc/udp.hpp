// corio::ipc::udp_socket: UDP datagrams over IPv4/IPv6 as awaitables.
//
// Concept: a datagram_socket (ipc/socket.hpp) of family AF_INET/AF_INET6: send_to and
// recv_from (sendmsg/recvmsg through the ring), or connect() once and then send/recv.
// A datagram longer than the buffer is cut, and recv_from and recv report truncated = true.
// Thread-safety: one owner; a send and a recv may be in flight together.
// Cost: send/recv one SQE; send_to/recv_from one SQE plus a task frame (recycled).
// Cancellation: every wait takes a std::stop_token and honours the inherited one
// (std::errc::operation_canceled); a cancelled recv loses no datagram it did not report.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <corio/ipc/address.hpp>
#include <corio/ipc/socket.hpp>
#include <corio/runtime/result.hpp>

namespace corio::ipc {

/// A UDP socket: datagram I/O (datagram_socket) plus bind, open and broadcast.
class udp_socket : public datagram_socket {
 public:
  using datagram_socket::datagram_socket;

  /// A socket bound to `addr` (port 0 picks a free port).
  [[nodiscard]] static result<udp_socket> bind(const socket_address& addr);
  /// An unbound socket of `family` (AF_INET or AF_INET6); the kernel binds it on first send.
  [[nodiscard]] static result<udp_socket> open(int family);

  /// SO_BROADCAST: allow sending to broadcast addresses.
  result<void> set_broadcast(bool on) { return set_option(SOL_SOCKET, SO_BROADCAST, on ? 1 : 0); }
};

}  // namespace corio::ipc
