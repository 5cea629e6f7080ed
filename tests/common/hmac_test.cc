// SPDX-License-Identifier: Apache-2.0
// HMAC-SHA256 against the RFC 4231 test vectors (test cases 1 to 7).

#include "lib/common/hmac.h"

#include <cstdint>
#include <string>
#include <string_view>

#include <catch2/catch.hpp>

#include "lib/engine/wireup/wire_format.h"

namespace flowkv::internal {
namespace {

std::string Hex(const Sha256Digest& digest) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (uint8_t b : digest) {
    hex += kDigits[b >> 4];
    hex += kDigits[b & 0xf];
  }
  return hex;
}

std::string Hmac(std::string_view key, std::string_view message) {
  return Hex(HmacSha256(key, AsBytes(message)));
}

TEST_CASE("RFC 4231 test case 1: 20-byte key", "[hmac]") {
  CHECK(Hmac(std::string(20, '\x0b'), "Hi There") ==
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
}

TEST_CASE("RFC 4231 test case 2: key shorter than the output", "[hmac]") {
  CHECK(Hmac("Jefe", "what do ya want for nothing?") ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST_CASE("RFC 4231 test case 3: 50 bytes of 0xdd", "[hmac]") {
  CHECK(Hmac(std::string(20, '\xaa'), std::string(50, '\xdd')) ==
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
}

TEST_CASE("RFC 4231 test case 4: 25-byte key", "[hmac]") {
  std::string key;
  for (char c = 0x01; c <= 0x19; ++c) key += c;
  CHECK(Hmac(key, std::string(50, '\xcd')) ==
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
}

TEST_CASE("RFC 4231 test case 5: output truncated to 128 bits", "[hmac]") {
  CHECK(Hmac(std::string(20, '\x0c'), "Test With Truncation").substr(0, 32) ==
        "a3b6167473100ee06e0c796c2955552b");
}

TEST_CASE("RFC 4231 test case 6: key larger than the block", "[hmac]") {
  CHECK(Hmac(std::string(131, '\xaa'),
             "Test Using Larger Than Block-Size Key - Hash Key First") ==
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

TEST_CASE("RFC 4231 test case 7: key and data larger than the block",
          "[hmac]") {
  CHECK(Hmac(std::string(131, '\xaa'),
             "This is a test using a larger than block-size key and a larger "
             "than block-size data. The key needs to be hashed before being "
             "used by the HMAC algorithm.") ==
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

TEST_CASE("The empty key and the empty message are valid", "[hmac]") {
  // The empty cluster token signs metadata too.
  CHECK(Hmac("", "") ==
        "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
  CHECK(Hmac("", "Hi There") != Hmac("", "Hi there"));
}

TEST_CASE("SHA-256 matches FIPS 180-4", "[hmac]") {
  CHECK(Hex(Sha256(AsBytes("abc"))) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(Hex(Sha256(AsBytes(""))) ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("HMAC pads a short key with zeros (why tokens are not keys)",
          "[hmac]") {
  // RFC 2104: K and K followed by NULs are the same key. The engine
  // therefore never keys a MAC with the token itself (ClusterMacKey).
  using namespace std::string_literals;
  CHECK(Hmac("k"s, "m") == Hmac("k\0"s, "m"));
  CHECK(Hmac(""s, "m") == Hmac("\0"s, "m"));
  CHECK(ClusterMacKey("k"s) != ClusterMacKey("k\0"s));
  CHECK(ClusterMacKey(""s) != ClusterMacKey("\0"s));
  CHECK(ClusterMacKey(""s) != ClusterMacKey("\0\0"s));
}

}  // namespace
}  // namespace flowkv::internal
