// SPDX-License-Identifier: Apache-2.0
// MakeSharedHostPool's share descriptor (lib/pool/host_share_descriptor.h):
// its bytes as the header specifies them, round trips, and refusal of every
// truncation, bad field and trailing byte with InvalidArgument.

#include "lib/pool/host_share_descriptor.h"

#include <cstdint>
#include <string>

#include <catch2/catch.hpp>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "lib/common/byte_io.h"

namespace flowkv::internal {
namespace {

HostShareDescriptor Sample() {
  return {.boot_id = "0d1e2f30-aaaa-bbbb-cccc-000000000001",
          .regions = {{.name = "/flowkv-1-0-ab-r0", .size = 4096},
                      {.name = "/flowkv-1-0-ab-r1", .size = 100}}};
}

// The descriptor written field by field, independently of the encoder.
std::string ByHand(const HostShareDescriptor& d) {
  ByteWriter w;
  w.Magic("FKVS");
  w.U16(1);
  w.Bytes(d.boot_id);
  w.U32(static_cast<uint32_t>(d.regions.size()));
  for (const HostShareRegion& r : d.regions) {
    w.Bytes(r.name);
    w.U64(r.size);
  }
  return std::move(w).Take();
}

void CheckRefused(const std::string& bytes, const char* why) {
  auto parsed = ParseHostShareDescriptor(bytes);
  INFO(why);
  REQUIRE(!parsed.ok());
  CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(parsed.status().message(), why));
}

TEST_CASE("Host share descriptor: bytes and round trip",
          "[host_share_descriptor]") {
  const HostShareDescriptor d = Sample();
  const std::string bytes = EncodeHostShareDescriptor(d);
  CHECK(bytes == ByHand(d));
  CHECK(bytes.substr(0, 6) == std::string("FKVS\x01\x00", 6));
  auto parsed = ParseHostShareDescriptor(bytes);
  REQUIRE(parsed.ok());
  CHECK(*parsed == d);

  HostShareDescriptor empty_boot = d;
  empty_boot.boot_id.clear();
  auto back = ParseHostShareDescriptor(EncodeHostShareDescriptor(empty_boot));
  REQUIRE(back.ok());
  CHECK(*back == empty_boot);
}

TEST_CASE("Host share descriptor: malformed input is refused",
          "[host_share_descriptor]") {
  const std::string bytes = EncodeHostShareDescriptor(Sample());
  for (size_t n = 0; n < bytes.size(); ++n) {
    CheckRefused(bytes.substr(0, n), "truncated");
  }
  CheckRefused(bytes + "x", "trailing");
  CheckRefused("garbage", "magic");
  std::string v2 = bytes;
  v2[4] = 2;
  CheckRefused(v2, "version 2");

  HostShareDescriptor d = Sample();
  d.regions.clear();
  CheckRefused(ByHand(d), "num_regions 0");
  d.regions.assign(kMaxHostShareRegions + 1, {.name = "/r", .size = 1});
  CheckRefused(ByHand(d), "num_regions 1025");
  d.regions.resize(kMaxHostShareRegions);
  CHECK(ParseHostShareDescriptor(ByHand(d)).ok());

  for (const std::string& name :
       {std::string(""), std::string("/"), std::string("r0"),
        std::string("/a/b"), std::string("/a\0b", 4)}) {
    d = Sample();
    d.regions[1].name = name;
    CheckRefused(ByHand(d), "region 1: name");
  }
  d = Sample();
  d.regions[1].name = "/" + std::string(kMaxHostShareNameBytes, 'n');
  CheckRefused(ByHand(d), "name length 256 exceeds the limit 255");
  d = Sample();
  d.regions[0].size = 0;
  CheckRefused(ByHand(d), "region 0 has 0 bytes");
  d = Sample();
  d.boot_id = std::string(kMaxHostShareBootIdBytes + 1, 'b');
  CheckRefused(ByHand(d), "boot_id length 256");
}

}  // namespace
}  // namespace flowkv::internal
