// SPDX-License-Identifier: Apache-2.0
// Fuzzes the MakeSharedHostPool share-descriptor parser
// (lib/pool/host_share_descriptor.h): ParseHostShareDescriptor on arbitrary
// bytes (the whole input is the descriptor).
//
// Checks: no crash, leak or undefined behaviour; errors are InvalidArgument
// with a message; what parses obeys the documented limits (1..1024
// regions, each a shm_open name without a second "/" or a NUL, and > 0
// bytes); and the format is canonical: EncodeHostShareDescriptor of the
// value gives the input bytes back.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "lib/pool/host_share_descriptor.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flowkv::internal;  // NOLINT
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<HostShareDescriptor> parsed = ParseHostShareDescriptor(bytes);
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument,
               parsed.status().ToString());
    FUZZ_CHECK(!parsed.status().message().empty());
    return 0;
  }
  FUZZ_CHECK(parsed->boot_id.size() <= kMaxHostShareBootIdBytes);
  FUZZ_CHECK(!parsed->regions.empty() &&
             parsed->regions.size() <= kMaxHostShareRegions);
  for (const HostShareRegion& region : parsed->regions) {
    FUZZ_CHECK(region.size > 0);
    FUZZ_CHECK(region.name.size() >= 2 &&
               region.name.size() <= kMaxHostShareNameBytes);
    FUZZ_CHECK(region.name[0] == '/');
    FUZZ_CHECK(region.name.find('/', 1) == std::string::npos);
    FUZZ_CHECK(region.name.find('\0') == std::string::npos);
  }
  const std::string again = EncodeHostShareDescriptor(*parsed);
  FUZZ_CHECK(again == bytes, "re-encoded bytes differ from the input");
  return 0;
}
