// SPDX-License-Identifier: Apache-2.0
// Request traces: parsers for the two public trace formats the simulator
// replays (see data/traces/README.md).
//
//   * Mooncake JSONL, one object per line:
//       {"timestamp": 0, "input_length": 6758, "output_length": 500,
//        "hash_ids": [0, 1, ...]}
//     timestamp in milliseconds from the start of the trace.
//   * Azure LLM inference CSV, a header row then one request per row:
//       TIMESTAMP,ContextTokens,GeneratedTokens
//       2023-11-16 18:17:03.9799600,4808,10
//     wall-clock timestamps (100 ns resolution), CRLF or LF line ends.
//
// Arrivals come out relative to the first record (the first is at 0).
// A malformed line is an InvalidArgument error that starts with its 1-based
// line number: "line 17: missing field \"input_length\"". Timestamps must not
// decrease (the replay order is the file order).
//
//   absl::StatusOr<std::vector<flowkv::TraceRecord>> trace =
//       flowkv::ReadTraceFile("data/traces/conversation_trace.jsonl");
//
// Thread safety: the functions are thread-safe (no shared state).

#ifndef FLOWKV_SIM_TRACE_H_
#define FLOWKV_SIM_TRACE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "flowkv/export.h"

namespace flowkv {

// One request of a trace.
struct TraceRecord {
  // Arrival, milliseconds after the first record of the trace.
  double arrival_ms = 0;
  uint32_t input_tokens = 0;
  uint32_t output_tokens = 0;
  // Mooncake's "hash_ids": one id per 512-token block of the prompt (the
  // last one may be partial); equal ids at the same position mean the same
  // prefix up to that block. Empty for Azure traces.
  std::vector<uint64_t> hash_ids = {};

  friend bool operator==(const TraceRecord&, const TraceRecord&) = default;
};

enum class TraceFormat : uint8_t { kMooncakeJsonl, kAzureCsv };

// Parses Mooncake JSONL text. Blank lines are skipped. Each object needs
// integer fields "timestamp" (>= 0), "input_length" (>= 1) and
// "output_length" (>= 1); "hash_ids", when present, must be an array of
// non-negative integers (kept in TraceRecord::hash_ids); other fields are
// checked for JSON syntax and ignored.
FLOWKV_EXPORT absl::StatusOr<std::vector<TraceRecord>> ParseMooncakeTrace(
    std::string_view text);

// Parses Azure CSV text: the header row TIMESTAMP,ContextTokens,
// GeneratedTokens, then rows "YYYY-MM-DD HH:MM:SS[.f...]",int,int.
// ContextTokens and GeneratedTokens must be >= 1.
FLOWKV_EXPORT absl::StatusOr<std::vector<TraceRecord>> ParseAzureTrace(
    std::string_view text);

FLOWKV_EXPORT absl::StatusOr<std::vector<TraceRecord>> ParseTrace(
    std::string_view text, TraceFormat format);

// Reads and parses a trace file; the format comes from the extension
// (.jsonl / .json: Mooncake, .csv: Azure), else from the first character
// ('{': Mooncake). NotFound when the file cannot be opened; parse errors as
// above, prefixed with the path.
FLOWKV_EXPORT absl::StatusOr<std::vector<TraceRecord>> ReadTraceFile(
    const std::string& path);

}  // namespace flowkv

#endif  // FLOWKV_SIM_TRACE_H_
