// SPDX-License-Identifier: Apache-2.0
// ParseSockAddr / FormatSockAddr (see sock_addr.h for the accepted forms).
// Calls only inet_pton / inet_ntop and Abseil string helpers.

#include "lib/engine/wireup/sock_addr.h"

#include <algorithm>
#include <arpa/inet.h>
#include <cstdint>
#include <cstring>
#include <netinet/in.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace flowkv::internal {
namespace {

constexpr char kForms[] = "expected \"a.b.c.d:port\" or \"[ipv6]:port\"";
constexpr size_t kMaxPortDigits = 5;
constexpr uint32_t kMaxPort = 65535;

// absl::CEscape for a std::string_view (this Abseil build's absl::string_view
// is its own type, not std::string_view).
std::string Escape(std::string_view text) {
  return absl::CEscape(absl::string_view(text.data(), text.size()));
}

absl::Status Refuse(std::string_view address, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrFormat("socket address \"%s\": %s", Escape(address), what));
}

// `port` as a number, or InvalidArgument naming `address`.
absl::StatusOr<uint16_t> ParsePort(std::string_view address,
                                   std::string_view port) {
  if (port.empty()) {
    return Refuse(address, "the port is empty");
  }
  const bool all_digits = std::all_of(
      port.begin(), port.end(), [](char c) { return absl::ascii_isdigit(c); });
  if (!all_digits || port.size() > kMaxPortDigits) {
    return Refuse(address, absl::StrFormat("port \"%s\" is not 1 to %d "
                                           "decimal digits",
                                           Escape(port), kMaxPortDigits));
  }
  if (port.size() > 1 && port[0] == '0') {
    return Refuse(address, absl::StrFormat("port \"%s\" has a leading zero",
                                           Escape(port)));
  }
  uint32_t value = 0;
  for (char c : port) value = value * 10 + static_cast<uint32_t>(c - '0');
  if (value > kMaxPort) {
    return Refuse(address,
                  absl::StrFormat("port %d is above %d", value, kMaxPort));
  }
  return static_cast<uint16_t>(value);
}

}  // namespace

absl::StatusOr<SockAddr> ParseSockAddr(std::string_view address) {
  if (address.empty()) {
    return Refuse(address, absl::StrCat("is empty; ", kForms));
  }
  for (size_t i = 0; i < address.size(); ++i) {
    const char c = address[i];
    if (c == '\0') {
      return Refuse(address, absl::StrFormat("NUL byte at offset %d", i));
    }
    if (absl::ascii_isspace(c)) {
      return Refuse(address, absl::StrFormat("whitespace at offset %d", i));
    }
    if (!absl::ascii_isgraph(c)) {
      return Refuse(address,
                    absl::StrFormat("non-printable byte 0x%02x at offset %d",
                                    static_cast<unsigned char>(c), i));
    }
  }

  const bool bracketed = address[0] == '[';
  std::string_view host;
  std::string_view port;
  if (bracketed) {
    const size_t close = address.find(']');
    if (close == std::string_view::npos) {
      return Refuse(address,
                    "no ']' closes the IPv6 host; expected "
                    "\"[ipv6]:port\"");
    }
    host = address.substr(1, close - 1);
    const std::string_view rest = address.substr(close + 1);
    if (rest.empty() || rest[0] != ':') {
      return Refuse(address,
                    absl::StrFormat("expected ':' after ']', found \"%s\"",
                                    Escape(rest)));
    }
    port = rest.substr(1);
  } else {
    const size_t colon = address.find(':');
    if (colon == std::string_view::npos) {
      return Refuse(address, absl::StrCat("no ':' before the port; ", kForms));
    }
    if (address.find(':', colon + 1) != std::string_view::npos) {
      return Refuse(address,
                    "more than one ':' outside brackets; write an IPv6 "
                    "address as \"[addr]:port\"");
    }
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  if (host.empty()) {
    return Refuse(address, "the host is empty");
  }
  absl::StatusOr<uint16_t> port_value = ParsePort(address, port);
  if (!port_value.ok()) return port_value.status();

  SockAddr out;
  const std::string host_text(host);  // inet_pton wants a C string
  if (bracketed) {
    if (host.find('%') != std::string_view::npos) {
      return Refuse(address,
                    absl::StrFormat("IPv6 zone ids are not supported (host "
                                    "\"%s\")",
                                    Escape(host)));
    }
    sockaddr_in6 v6 = {};
    if (inet_pton(AF_INET6, host_text.c_str(), &v6.sin6_addr) != 1) {
      return Refuse(address,
                    absl::StrFormat("host \"%s\" in brackets is not a numeric "
                                    "IPv6 address",
                                    Escape(host)));
    }
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(*port_value);
    std::memcpy(&out.storage, &v6, sizeof(v6));
    out.length = sizeof(v6);
    return out;
  }
  sockaddr_in v4 = {};
  if (inet_pton(AF_INET, host_text.c_str(), &v4.sin_addr) != 1) {
    return Refuse(address,
                  absl::StrFormat("host \"%s\" is not a numeric IPv4 address "
                                  "(a.b.c.d; names are not resolved)",
                                  Escape(host)));
  }
  v4.sin_family = AF_INET;
  v4.sin_port = htons(*port_value);
  std::memcpy(&out.storage, &v4, sizeof(v4));
  out.length = sizeof(v4);
  return out;
}

std::string FormatSockAddr(const sockaddr_storage& addr) {
  char text[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    sockaddr_in v4;
    std::memcpy(&v4, &addr, sizeof(v4));
    inet_ntop(AF_INET, &v4.sin_addr, text, sizeof(text));
    return absl::StrCat(text, ":", ntohs(v4.sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    sockaddr_in6 v6;
    std::memcpy(&v6, &addr, sizeof(v6));
    inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof(text));
    return absl::StrCat("[", text, "]:", ntohs(v6.sin6_port));
  }
  return absl::StrCat("<address family ", addr.ss_family, ">");
}

}  // namespace flowkv::internal
