// SPDX-License-Identifier: Apache-2.0
// Fuzzes KvLayout creation (include/flowkv/kv_layout.h) from random specs:
// every preset, KvLayout::Create and CreateStrided with a fuzzed tensor
// table, on fuzzed geometry (small sizes mostly, sometimes zero or up to
// 2^32 - 1).
//
// Checks: a factory either returns InvalidArgument with a message, or a
// layout whose every ElementAddress lies within its region (with no two
// elements overlapping when the layout is small enough to enumerate) and
// whose sizes agree (tests/fuzz/fuzz_layout.h, CheckLayout); that layout
// serializes and parses back to an equal layout with the same fingerprint.

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "flowkv/kv_layout.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/fuzz_layout.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flowkv;  // NOLINT
  fuzz::FuzzInput in(data, size);
  const bool small = in.Bool();
  absl::StatusOr<KvLayout> layout = fuzz::FuzzLayout(in, small);
  if (!layout.ok()) {
    FUZZ_CHECK(layout.status().code() == absl::StatusCode::kInvalidArgument,
               layout.status().ToString());
    FUZZ_CHECK(!layout.status().message().empty());
    return 0;
  }
  fuzz::CheckLayout(*layout);
  absl::StatusOr<KvLayout> back = KvLayout::Parse(layout->Serialize());
  FUZZ_CHECK(back.ok(), back.status().ToString());
  FUZZ_CHECK(*back == *layout);
  FUZZ_CHECK(back->name() == layout->name());
  FUZZ_CHECK(back->Fingerprint() == layout->Fingerprint());
  return 0;
}
