// SPDX-License-Identifier: Apache-2.0
// Fuzzes the trace readers (include/flowkv/sim/trace.h): ParseMooncakeTrace
// (JSONL) and ParseAzureTrace (CSV) on arbitrary text. Input: one selector
// byte (even: Mooncake, odd: Azure), then the text.
//
// Checks: no crash, leak, hang or undefined behaviour; errors are
// InvalidArgument starting with "line N:"; ParseTrace with the same format
// gives the same result; accepted traces obey the documented contract:
// the first arrival is 0, arrivals never decrease and are finite, token
// counts are at least 1. (The readers have no encoder, so there is no
// round trip.)

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "flowkv/sim/trace.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flowkv;  // NOLINT
  if (size == 0) return 0;
  const TraceFormat format =
      data[0] % 2 == 0 ? TraceFormat::kMooncakeJsonl : TraceFormat::kAzureCsv;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1,
                              size - 1);
  absl::StatusOr<std::vector<TraceRecord>> trace =
      format == TraceFormat::kMooncakeJsonl ? ParseMooncakeTrace(text)
                                            : ParseAzureTrace(text);
  absl::StatusOr<std::vector<TraceRecord>> again = ParseTrace(text, format);
  FUZZ_CHECK(trace.status() == again.status());
  if (!trace.ok()) {
    FUZZ_CHECK(trace.status().code() == absl::StatusCode::kInvalidArgument,
               trace.status().ToString());
    FUZZ_CHECK(absl::StartsWith(trace.status().message(), "line "),
               trace.status().ToString());
    return 0;
  }
  FUZZ_CHECK(*trace == *again);
  for (size_t i = 0; i < trace->size(); ++i) {
    const TraceRecord& r = (*trace)[i];
    FUZZ_CHECK(std::isfinite(r.arrival_ms));
    FUZZ_CHECK(i > 0 || r.arrival_ms == 0);
    FUZZ_CHECK(i == 0 || r.arrival_ms >= (*trace)[i - 1].arrival_ms);
    FUZZ_CHECK(r.input_tokens >= 1 && r.output_tokens >= 1);
  }
  return 0;
}
