// SPDX-License-Identifier: Apache-2.0
// Socket addresses as text: the strict parser behind every "host:port" a
// user hands the transfer engine, and its inverse for messages and metadata.
// Owns only the text <-> sockaddr conversion; it resolves no names and opens
// no sockets (it calls inet_pton / inet_ntop and nothing else).
//
// Accepted forms, and nothing else:
//   "a.b.c.d:port"  a numeric IPv4 dotted quad, by inet_pton(AF_INET) rules
//                   (four decimal parts 0-255, no leading zeros)
//   "[ipv6]:port"   an IPv6 literal by inet_pton(AF_INET6) rules, only inside
//                   brackets (so "::1:0" is refused: write "[::1]:0")
// where port is 1 to 5 ASCII decimal digits with a value in [0, 65535] and no
// leading zero unless the port is "0" itself: no sign, no hex, no spaces.
// Port 0 is allowed (a listener's "pick a free port"). The whole string must
// be consumed. Refused as well: host names ("localhost"), IPv6 zone ids
// ("[fe80::1%eth0]:5"), an IPv4 address in brackets, and any whitespace, NUL
// or other non-printable byte anywhere.
//
// Example:
//   absl::StatusOr<SockAddr> addr = ParseSockAddr("[::1]:8080");
//   if (!addr.ok()) return addr.status();
//   bind(fd, reinterpret_cast<const sockaddr*>(&addr->storage), addr->length);
//
// Thread safety: thread-safe (pure functions and a value type).

#ifndef FLOWKV_LIB_ENGINE_WIREUP_SOCK_ADDR_H_
#define FLOWKV_LIB_ENGINE_WIREUP_SOCK_ADDR_H_

#include <string>
#include <string_view>
#include <sys/socket.h>

#include "absl/status/statusor.h"

namespace flowkv::internal {

// A parsed address: `storage` holds a sockaddr_in (AF_INET) or sockaddr_in6
// (AF_INET6) with the port in network byte order, every other byte zero;
// `length` is the size of that struct, ready for bind() / connect().
struct SockAddr {
  sockaddr_storage storage = {};
  socklen_t length = 0;
};

// Parses "a.b.c.d:port" or "[ipv6]:port" (the forms above). Any other input
// gives InvalidArgument whose message names the address, escaped with
// absl::CEscape so that a NUL or control byte is visible, and says what is
// wrong with it.
absl::StatusOr<SockAddr> ParseSockAddr(std::string_view address);

// The inverse of ParseSockAddr: "a.b.c.d:port" for AF_INET, "[ipv6]:port" for
// AF_INET6 (inet_ntop's canonical text), so ParseSockAddr(FormatSockAddr(a))
// gives back the same address and port. Any other family gives
// "<address family N>", which ParseSockAddr refuses.
std::string FormatSockAddr(const sockaddr_storage& addr);

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_ENGINE_WIREUP_SOCK_ADDR_H_
