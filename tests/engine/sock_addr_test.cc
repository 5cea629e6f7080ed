// SPDX-License-Identifier: Apache-2.0
// Tests of lib/engine/wireup/sock_addr.h: every accepted form gives the right
// family, port and address bytes; every refused form gives InvalidArgument
// whose message names the (escaped) address and what is wrong with it.

#include "lib/engine/wireup/sock_addr.h"

#include <arpa/inet.h>
#include <cstring>
#include <netinet/in.h>
#include <string>
#include <string_view>
#include <sys/socket.h>

#include <catch2/catch.hpp>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace flowkv::internal {
namespace {

SockAddr MustParse(std::string_view text) {
  absl::StatusOr<SockAddr> addr = ParseSockAddr(text);
  INFO("address: " << text << ", status: " << addr.status().ToString());
  REQUIRE(addr.ok());
  return *addr;
}

// Parses `text` and checks it is an AF_INET address `ip` (dotted quad) with
// `port`.
void CheckIpv4(std::string_view text, const char* ip, uint16_t port) {
  INFO("address: " << text);
  const SockAddr addr = MustParse(text);
  REQUIRE(addr.storage.ss_family == AF_INET);
  CHECK(addr.length == sizeof(sockaddr_in));
  sockaddr_in v4;
  std::memcpy(&v4, &addr.storage, sizeof(v4));
  CHECK(ntohs(v4.sin_port) == port);
  in_addr expected = {};
  REQUIRE(inet_pton(AF_INET, ip, &expected) == 1);
  CHECK(v4.sin_addr.s_addr == expected.s_addr);
}

// Parses `text` and checks it is an AF_INET6 address `ip` with `port`.
void CheckIpv6(std::string_view text, const char* ip, uint16_t port) {
  INFO("address: " << text);
  const SockAddr addr = MustParse(text);
  REQUIRE(addr.storage.ss_family == AF_INET6);
  CHECK(addr.length == sizeof(sockaddr_in6));
  sockaddr_in6 v6;
  std::memcpy(&v6, &addr.storage, sizeof(v6));
  CHECK(ntohs(v6.sin6_port) == port);
  in6_addr expected = {};
  REQUIRE(inet_pton(AF_INET6, ip, &expected) == 1);
  CHECK(std::memcmp(&v6.sin6_addr, &expected, sizeof(expected)) == 0);
}

std::string Escape(std::string_view text) {
  return absl::CEscape(absl::string_view(text.data(), text.size()));
}

// Checks that `text` is refused with InvalidArgument, that the message names
// the escaped address and contains `reason`.
void CheckRefused(std::string_view text, std::string_view reason) {
  INFO("address: \"" << Escape(text) << "\"");
  absl::StatusOr<SockAddr> addr = ParseSockAddr(text);
  REQUIRE_FALSE(addr.ok());
  CHECK(addr.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string message(addr.status().message());
  CHECK_THAT(message, Catch::Contains(absl::StrCat("\"", Escape(text), "\"")) &&
                          Catch::Contains(std::string(reason)));
}

TEST_CASE("ParseSockAddr accepts IPv4 dotted quads with a port",
          "[sock_addr]") {
  CheckIpv4("127.0.0.1:0", "127.0.0.1", 0);
  CheckIpv4("127.0.0.1:65535", "127.0.0.1", 65535);
  CheckIpv4("127.0.0.1:1", "127.0.0.1", 1);
  CheckIpv4("0.0.0.0:8080", "0.0.0.0", 8080);
  CheckIpv4("255.255.255.255:10000", "255.255.255.255", 10000);
}

TEST_CASE("ParseSockAddr accepts bracketed IPv6 literals with a port",
          "[sock_addr]") {
  CheckIpv6("[::1]:8080", "::1", 8080);
  CheckIpv6("[::1]:0", "::1", 0);
  CheckIpv6("[::]:65535", "::", 65535);
  CheckIpv6("[fe80::1]:5", "fe80::1", 5);
  CheckIpv6("[2001:db8:0:0:0:0:0:1]:443", "2001:db8::1", 443);
  CheckIpv6("[::ffff:10.0.0.1]:7", "::ffff:10.0.0.1", 7);
}

TEST_CASE("ParseSockAddr leaves every other byte of the storage zero",
          "[sock_addr]") {
  const SockAddr addr = MustParse("127.0.0.1:80");
  const auto* bytes = reinterpret_cast<const unsigned char*>(&addr.storage);
  for (size_t i = sizeof(sockaddr_in); i < sizeof(addr.storage); ++i) {
    INFO("byte " << i);
    CHECK(bytes[i] == 0);
  }
}

TEST_CASE("ParseSockAddr refuses malformed ports", "[sock_addr]") {
  CheckRefused("127.0.0.1:+5", "port \"+5\" is not 1 to 5 decimal digits");
  CheckRefused("127.0.0.1:-5", "port \"-5\" is not 1 to 5 decimal digits");
  CheckRefused("127.0.0.1:0x10", "port \"0x10\" is not 1 to 5 decimal digits");
  CheckRefused("127.0.0.1:65536", "port 65536 is above 65535");
  CheckRefused("127.0.0.1:99999", "port 99999 is above 65535");
  CheckRefused("127.0.0.1:123456",
               "port \"123456\" is not 1 to 5 decimal digits");
  CheckRefused("127.0.0.1:080", "port \"080\" has a leading zero");
  CheckRefused("127.0.0.1:00", "port \"00\" has a leading zero");
  CheckRefused("127.0.0.1:", "the port is empty");
  CheckRefused("[::1]:", "the port is empty");
  CheckRefused("[::1]:8:0", "port \"8:0\" is not 1 to 5 decimal digits");
}

TEST_CASE("ParseSockAddr refuses whitespace, NUL and control bytes",
          "[sock_addr]") {
  CheckRefused("127.0.0.1:0 ", "whitespace at offset 11");
  CheckRefused(" 127.0.0.1:0", "whitespace at offset 0");
  CheckRefused("127.0.0.1: 5", "whitespace at offset 10");
  CheckRefused("127.0.0.1:\t5", "whitespace at offset 10");
  CheckRefused("[ ::1]:5", "whitespace at offset 1");
  CheckRefused("127.0.0.1:5\n", "whitespace at offset 11");
  CheckRefused(std::string("127.0.0.1:5\0junk", 16), "NUL byte at offset 11");
  CheckRefused(std::string("127.0.0.1:5\0", 12), "NUL byte at offset 11");
  CheckRefused("127.0.0.1:5\x7f", "non-printable byte 0x7f at offset 11");
  CheckRefused("127.0.0.1:5\xc3\xa9", "non-printable byte 0xc3 at offset 11");
  // The escaped message shows the NUL.
  absl::StatusOr<SockAddr> addr =
      ParseSockAddr(std::string("127.0.0.1:5\0junk", 16));
  REQUIRE_FALSE(addr.ok());
  CHECK_THAT(std::string(addr.status().message()),
             Catch::Contains("127.0.0.1:5\\000junk"));
}

TEST_CASE("ParseSockAddr refuses a missing host, port or ':'", "[sock_addr]") {
  CheckRefused("", "is empty");
  CheckRefused(":80", "the host is empty");
  CheckRefused("[]:80", "the host is empty");
  CheckRefused("127.0.0.1", "no ':' before the port");
  CheckRefused("[::1]80", "expected ':' after ']', found \"80\"");
  CheckRefused("[::1]", "expected ':' after ']', found \"\"");
  CheckRefused("[::1", "no ']' closes the IPv6 host");
  CheckRefused("[::1]:80]", "port \"80]\" is not 1 to 5 decimal digits");
}

TEST_CASE("ParseSockAddr refuses hosts that are not numeric addresses",
          "[sock_addr]") {
  CheckRefused("::1:0", "write an IPv6 address as \"[addr]:port\"");
  CheckRefused("fe80::1:80", "write an IPv6 address as \"[addr]:port\"");
  CheckRefused("localhost:80",
               "host \"localhost\" is not a numeric IPv4 address");
  CheckRefused("1.2.3.4.5:1",
               "host \"1.2.3.4.5\" is not a numeric IPv4 address");
  CheckRefused("1.2.3:1", "host \"1.2.3\" is not a numeric IPv4 address");
  CheckRefused("256.0.0.1:1",
               "host \"256.0.0.1\" is not a numeric IPv4 address");
  CheckRefused("010.0.0.1:1",
               "host \"010.0.0.1\" is not a numeric IPv4 address");
  CheckRefused("0x7f.0.0.1:1",
               "host \"0x7f.0.0.1\" is not a numeric IPv4 address");
  CheckRefused("[127.0.0.1]:5",
               "host \"127.0.0.1\" in brackets is not a numeric IPv6 address");
  CheckRefused("[::1::2]:5",
               "host \"::1::2\" in brackets is not a numeric IPv6 address");
  CheckRefused("[[::1]]:5", "expected ':' after ']', found \"]:5\"");
  CheckRefused("[fe80::1%eth0]:5", "IPv6 zone ids are not supported");
}

TEST_CASE("FormatSockAddr is the inverse of ParseSockAddr", "[sock_addr]") {
  struct Case {
    const char* text;       // parsed
    const char* formatted;  // FormatSockAddr of it (canonical text)
  };
  const Case cases[] = {
      {"127.0.0.1:0", "127.0.0.1:0"},
      {"127.0.0.1:65535", "127.0.0.1:65535"},
      {"10.1.2.3:8080", "10.1.2.3:8080"},
      {"[::1]:8080", "[::1]:8080"},
      {"[::1]:0", "[::1]:0"},
      {"[0:0:0:0:0:0:0:1]:5", "[::1]:5"},
      {"[2001:DB8::A]:443", "[2001:db8::a]:443"},
      {"[::ffff:10.0.0.1]:7", "[::ffff:10.0.0.1]:7"},
  };
  for (const Case& c : cases) {
    INFO("address: " << c.text);
    const SockAddr first = MustParse(c.text);
    const std::string text = FormatSockAddr(first.storage);
    CHECK(text == c.formatted);
    const SockAddr second = MustParse(text);
    CHECK(second.length == first.length);
    CHECK(std::memcmp(&second.storage, &first.storage, first.length) == 0);
  }
}

TEST_CASE("FormatSockAddr names an unknown family", "[sock_addr]") {
  sockaddr_storage addr = {};
  addr.ss_family = AF_UNIX;
  const std::string text = FormatSockAddr(addr);
  CHECK(text == "<address family " + std::to_string(AF_UNIX) + ">");
  CHECK_FALSE(ParseSockAddr(text).ok());
}

}  // namespace
}  // namespace flowkv::internal
