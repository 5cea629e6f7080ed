// SPDX-License-Identifier: Apache-2.0
// The EngineInfo blob's HMAC: what ParseSignedEngineInfo accepts and refuses.
// A blob is refused unless it was signed with the same key, whatever else an
// attacker recomputes (the FNV checksum is public).

#include "lib/engine/wireup/wire_format.h"

#include <cstdint>
#include <random>
#include <string>
#include <string_view>

#include <catch2/catch.hpp>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/common/hmac.h"

namespace flowkv::internal {
namespace {

// Offsets in an EngineInfo blob (see the format in wire_format.h).
constexpr size_t kMagicBytes = 4;
constexpr size_t kVersionEnd = kMagicBytes + 2;
constexpr size_t kChecksumBytes = 8;

EngineInfo MakeInfo() {
  EngineInfo info;
  info.instance_id = 0x0123456789abcdefull;
  info.name = "prefill-0";
  info.ucx_version = 0x010d01;  // 1.13.1
  info.address_format = 1;
  for (int i = 0; i < 80; ++i) {
    info.worker_address.push_back(static_cast<char>(i * 7 + 1));
  }
  info.regions.push_back({.id = 1,
                          .kind = 0,
                          .base = 0x7f0000000000,
                          .length = 1 << 20,
                          .rkey = std::string(18, '\x11')});
  info.regions.push_back({.id = 2,
                          .kind = 1,
                          .base = 0x7e0000000000,
                          .length = 4096,
                          .rkey = std::string(24, '\x22')});
  return info;
}

// Rewrites the trailing 8-byte little-endian FNV-1a-64 over everything
// before it, as anyone can (written here independently of Fnv1a64).
void RecomputeChecksum(std::string* blob) {
  REQUIRE(blob->size() >= kChecksumBytes);
  const size_t body = blob->size() - kChecksumBytes;
  uint64_t hash = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < body; ++i) {
    hash ^= static_cast<uint8_t>((*blob)[i]);
    hash *= 0x100000001b3ull;
  }
  for (size_t i = 0; i < kChecksumBytes; ++i) {
    (*blob)[body + i] = static_cast<char>(hash >> (8 * i));
  }
}

void PutU32(std::string* blob, size_t at, uint32_t v) {
  for (size_t i = 0; i < 4; ++i)
    (*blob)[at + i] = static_cast<char>(v >> (8 * i));
}

TEST_CASE("A signed blob verifies with its key", "[wire_format]") {
  const EngineInfo info = MakeInfo();
  for (const std::string& key :
       {std::string("cluster-a"), std::string(), std::string("\0\1", 2)}) {
    const std::string blob = EncodeEngineInfo(info, key);
    absl::StatusOr<EngineInfo> parsed =
        ParseSignedEngineInfo(AsBytes(blob), key);
    REQUIRE(parsed.ok());
    CHECK(*parsed == info);
    // The structure-only parser accepts it too.
    absl::StatusOr<EngineInfo> unsigned_parse = ParseEngineInfo(AsBytes(blob));
    REQUIRE(unsigned_parse.ok());
    CHECK(*unsigned_parse == info);
  }
}

TEST_CASE("A blob signed with another key is PermissionDenied",
          "[wire_format]") {
  const EngineInfo info = MakeInfo();
  const std::pair<std::string_view, std::string_view> cases[] = {
      {"cluster-a", "cluster-b"},
      {"cluster-a", ""},
      {"", "cluster-a"},
      {"cluster-a", "cluster-a "},
  };
  for (const auto& [signed_with, checked_with] : cases) {
    INFO("signed with \"" << signed_with << "\", checked with \""
                          << checked_with << "\"");
    const std::string blob = EncodeEngineInfo(info, signed_with);
    absl::StatusOr<EngineInfo> parsed =
        ParseSignedEngineInfo(AsBytes(blob), checked_with);
    REQUIRE(parsed.status().code() == absl::StatusCode::kPermissionDenied);
    CHECK(absl::StrContains(parsed.status().message(),
                            "not signed with this cluster's token"));
  }
}

TEST_CASE("Random worker-address bytes with a recomputed checksum never verify",
          "[wire_format]") {
  const EngineInfo info = MakeInfo();
  const std::string key = "cluster-a";
  const std::string signed_blob = EncodeEngineInfo(info, key);
  // The worker address follows the magic, the version, the instance id,
  // the name, the UCX version (u32) and the address format (u8): u32
  // length + bytes.
  const size_t address_at = kVersionEnd + 8 + 4 + info.name.size() + 4 + 1;
  const size_t address_end = address_at + 4 + info.worker_address.size();
  for (uint64_t seed = 0; seed < 2000; ++seed) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    // Half the seeds keep the length, the others pick a new one (the length
    // prefix is rewritten so the structure stays valid).
    const size_t length =
        seed % 2 == 0 ? info.worker_address.size() : 1 + rng() % 256;
    std::string address(length, '\0');
    for (char& c : address) c = static_cast<char>(rng());
    std::string blob = signed_blob.substr(0, address_at);
    blob.append(4, '\0');
    PutU32(&blob, address_at, static_cast<uint32_t>(length));
    blob += address;
    blob += signed_blob.substr(address_end);
    RecomputeChecksum(&blob);

    // The checksum and the structure pass: only the MAC stops the bytes.
    absl::StatusOr<EngineInfo> unchecked = ParseEngineInfo(AsBytes(blob));
    REQUIRE(unchecked.ok());
    REQUIRE(unchecked->worker_address == address);
    absl::StatusOr<EngineInfo> parsed =
        ParseSignedEngineInfo(AsBytes(blob), key);
    REQUIRE(parsed.status().code() == absl::StatusCode::kPermissionDenied);
  }
}

TEST_CASE("Every single-byte mutation of a signed blob is refused",
          "[wire_format]") {
  const std::string key = "cluster-a";
  const std::string blob = EncodeEngineInfo(MakeInfo(), key);
  const size_t mac_end = blob.size() - kChecksumBytes;
  for (size_t at = 0; at < blob.size(); ++at) {
    for (int delta = 1; delta < 256; ++delta) {
      INFO("byte " << at << " of " << blob.size() << " xor " << delta);
      std::string mutated = blob;
      mutated[at] = static_cast<char>(mutated[at] ^ delta);
      // As it arrives: the checksum catches it.
      absl::StatusOr<EngineInfo> parsed =
          ParseSignedEngineInfo(AsBytes(mutated), key);
      REQUIRE(parsed.status().code() == absl::StatusCode::kInvalidArgument);
      if (at >= mac_end) continue;  // a mutated checksum byte
      // With the checksum recomputed: the magic and the version are checked
      // before the MAC, everything after them by the MAC.
      RecomputeChecksum(&mutated);
      parsed = ParseSignedEngineInfo(AsBytes(mutated), key);
      const absl::StatusCode want =
          at < kMagicBytes   ? absl::StatusCode::kInvalidArgument
          : at < kVersionEnd ? absl::StatusCode::kFailedPrecondition
                             : absl::StatusCode::kPermissionDenied;
      REQUIRE(parsed.status().code() == want);
    }
  }
}

TEST_CASE("Every truncation of a signed blob is refused", "[wire_format]") {
  const std::string key = "cluster-a";
  const std::string blob = EncodeEngineInfo(MakeInfo(), key);
  for (size_t size = 0; size < blob.size(); ++size) {
    INFO("first " << size << " bytes");
    std::string truncated = blob.substr(0, size);
    CHECK(ParseSignedEngineInfo(AsBytes(truncated), key).status().code() ==
          absl::StatusCode::kInvalidArgument);
    // Even with a checksum that fits.
    if (size >= kChecksumBytes) {
      RecomputeChecksum(&truncated);
      CHECK(!ParseSignedEngineInfo(AsBytes(truncated), key).ok());
      CHECK(!ParseEngineInfo(AsBytes(truncated)).ok());
    }
  }
}

TEST_CASE("Version 1 metadata (without a MAC) is FailedPrecondition",
          "[wire_format]") {
  std::string blob = EncodeEngineInfo(MakeInfo(), "cluster-a");
  blob[kMagicBytes] = 1;
  blob[kMagicBytes + 1] = 0;
  RecomputeChecksum(&blob);
  absl::Status status =
      ParseSignedEngineInfo(AsBytes(blob), "cluster-a").status();
  CHECK(status.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StrContains(status.message(), "protocol version 1"));
  CHECK(ParseEngineInfo(AsBytes(blob)).status().code() ==
        absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("A blob too short for its MAC is InvalidArgument", "[wire_format]") {
  // The magic, version 4, 20 more bytes and a valid checksum: 34 bytes, under
  // the 46 that the magic, version, MAC and checksum take alone.
  std::string blob = "FKVM";
  blob += std::string("\x04\x00", 2);
  blob += std::string(20 + kChecksumBytes, '\0');
  RecomputeChecksum(&blob);
  absl::Status status = ParseSignedEngineInfo(AsBytes(blob), "").status();
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(status.message(), "46-byte minimum"));
}

}  // namespace
}  // namespace flowkv::internal
