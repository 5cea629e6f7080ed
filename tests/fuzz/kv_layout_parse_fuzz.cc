// SPDX-License-Identifier: Apache-2.0
// Fuzzes the layout-descriptor decoder, KvLayout::Parse
// (include/flowkv/kv_layout.h, lib/layout/layout_serialize.cc), on
// arbitrary bytes (the bytes a peer's pool notice carries).
//
// Checks: no crash, leak or undefined behaviour; errors are
// InvalidArgument with a message; a parsed layout meets the factory
// contract (every ElementAddress within its region, tests/fuzz/
// fuzz_layout.h) and round-trips: Serialize() parses to an equal layout
// with the same name and fingerprint, and re-serializes to the same bytes.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "flowkv/kv_layout.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/fuzz_layout.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flowkv;  // NOLINT
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<KvLayout> layout = KvLayout::Parse(bytes);
  if (!layout.ok()) {
    FUZZ_CHECK(layout.status().code() == absl::StatusCode::kInvalidArgument,
               layout.status().ToString());
    FUZZ_CHECK(!layout.status().message().empty());
    return 0;
  }
  fuzz::CheckLayout(*layout);
  const std::string again = layout->Serialize();
  absl::StatusOr<KvLayout> back = KvLayout::Parse(again);
  FUZZ_CHECK(back.ok(), back.status().ToString());
  FUZZ_CHECK(*back == *layout);
  FUZZ_CHECK(back->name() == layout->name());
  FUZZ_CHECK(back->Fingerprint() == layout->Fingerprint());
  FUZZ_CHECK(back->Serialize() == again);
  return 0;
}
