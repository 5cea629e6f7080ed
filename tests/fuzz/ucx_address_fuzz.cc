// SPDX-License-Identifier: Apache-2.0
// Fuzzes the check of peers' UCX worker addresses
// (lib/engine/wireup/ucx_address.h) on arbitrary bytes. The seeds
// (corpus/ucx_address_fuzz/) are real UCX 1.13.1 worker addresses of a
// transfer_peer: tcp on lo (format v1, 50 bytes) and posix,cma,self,tcp
// (149 bytes).
//
// Checks: no crash, leak or undefined behaviour (the check must never read
// past the input); every error is InvalidArgument or FailedPrecondition;
// an address that checks reports opaque ranges inside it, and checks
// against itself as the local address.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "lib/engine/wireup/ucx_address.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flowkv::internal;
  // Copied so that a read past the end is one past a heap block (ASan).
  const std::vector<uint8_t> bytes(data, data + size);
  const absl::Span<const uint8_t> address(bytes.data(), bytes.size());
  std::vector<UcxAddressRange> opaque;
  const absl::Status status = CheckUcxWorkerAddress(address, {}, &opaque);
  FUZZ_CHECK(status.ok() ||
                 status.code() == absl::StatusCode::kInvalidArgument ||
                 status.code() == absl::StatusCode::kFailedPrecondition,
             status.ToString());
  if (!status.ok()) return 0;
  for (const UcxAddressRange& range : opaque) {
    FUZZ_CHECK(range.offset <= size && range.length <= size - range.offset,
               absl::StrFormat("range [%d, +%d) of %d bytes", range.offset,
                               range.length, size));
  }
  FUZZ_CHECK(CheckUcxWorkerAddress(address, address).ok(), "self check");
  return 0;
}
