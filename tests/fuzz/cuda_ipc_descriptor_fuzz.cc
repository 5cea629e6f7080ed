// SPDX-License-Identifier: Apache-2.0
// Fuzzes the CudaPoolMemory share-descriptor parser (cuda/ipc_descriptor.h):
// ParseIpcDescriptor on arbitrary bytes. Builds without CUDA: the parser is
// pure (cuda/ipc_descriptor.cc is compiled into the target).
//
// Input: one selector byte, then the descriptor. Selector bit 0 set: the
// descriptor's last 8 bytes are replaced by the checksum of the bytes before
// them first, so that mutations reach the fields behind the checksum;
// clear: the bytes are parsed as they are.
//
// Checks: no crash, leak or undefined behaviour; errors are InvalidArgument
// with a message; what parses obeys the documented limits (1..4096
// regions, each > 0 bytes and inside its allocation); and the format is
// canonical: EncodeIpcDescriptor of the value gives the parsed bytes back.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "cuda/ipc_descriptor.h"
#include "lib/common/byte_io.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flowkv::cuda::internal;  // NOLINT
  if (size == 0) return 0;
  std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) != 0 && bytes.size() >= 8) {
    bytes.resize(bytes.size() - 8);
    const uint64_t sum = flowkv::internal::Fnv1a64(
        {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
    for (int i = 0; i < 8; ++i)
      bytes.push_back(static_cast<char>(sum >> (8 * i)));
  }
  absl::StatusOr<IpcDescriptor> parsed = ParseIpcDescriptor(bytes);
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument,
               parsed.status().ToString());
    FUZZ_CHECK(!parsed.status().message().empty());
    return 0;
  }
  FUZZ_CHECK(parsed->boot_id.size() <= 255);
  FUZZ_CHECK(!parsed->regions.empty() &&
             parsed->regions.size() <= kMaxIpcRegions);
  for (const IpcRegion& region : parsed->regions) {
    FUZZ_CHECK(region.size > 0);
    FUZZ_CHECK(region.offset <= region.allocation_bytes);
    FUZZ_CHECK(region.size <= region.allocation_bytes - region.offset);
  }
  const std::string again = EncodeIpcDescriptor(*parsed);
  FUZZ_CHECK(again == bytes, "re-encoded bytes differ from the input");
  absl::StatusOr<IpcDescriptor> back = ParseIpcDescriptor(again);
  FUZZ_CHECK(back.ok() && *back == *parsed);
  return 0;
}
