// SPDX-License-Identifier: Apache-2.0
// Tests for the trace parsers and the workload generator.

#include "flowkv/sim/trace.h"

#include <filesystem>
#include <string>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "flowkv/sim/workload.h"

namespace flowkv {
namespace {

TEST_CASE("Mooncake JSONL parses fields, relative arrivals, blank lines",
          "[sim][trace]") {
  const std::string text =
      "{\"timestamp\": 1000, \"input_length\": 6758, \"output_length\": 500, "
      "\"hash_ids\": [0, 1, 2]}\n"
      "\n"
      "{\"output_length\": 3, \"timestamp\": 4000, \"input_length\": 12, "
      "\"hash_ids\": []}\n";
  absl::StatusOr<std::vector<TraceRecord>> t = ParseMooncakeTrace(text);
  REQUIRE(t.ok());
  REQUIRE(t->size() == 2);
  CHECK((*t)[0] == TraceRecord{0, 6758, 500, {0, 1, 2}});
  CHECK((*t)[1] == TraceRecord{3000, 12, 3, {}});
}

TEST_CASE("Mooncake hash_ids are kept; a malformed list is an error",
          "[sim][trace]") {
  absl::StatusOr<std::vector<TraceRecord>> t = ParseMooncakeTrace(
      "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 1, "
      "\"hash_ids\": [7, 18446744073709551615]}\n");
  REQUIRE(t.ok());
  CHECK((*t)[0].hash_ids == std::vector<uint64_t>{7, 18446744073709551615u});
  for (const char* bad : {"[1, -2]", "[1.5]", "[\"a\"]", "3", "[1,", "[1 2]",
                          "[18446744073709551616]", "[+1]"}) {
    absl::StatusOr<std::vector<TraceRecord>> r = ParseMooncakeTrace(
        absl::StrCat("{\"timestamp\": 0, \"input_length\": 600, "
                     "\"output_length\": 1, \"hash_ids\": ",
                     bad, "}\n"));
    INFO(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(r.status().message(), "line 1"));
  }
}

TEST_CASE("Mooncake JSONL rejects malformed lines with the line number",
          "[sim][trace]") {
  const std::string good =
      "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 5}\n";
  struct Case {
    std::string line;
    std::string needle;
  };
  const Case cases[] = {
      {"not json", "expected '{'"},
      {"{\"timestamp\": 5, \"input_length\": 10}",
       "missing field \"output_length\""},
      {"{\"timestamp\": 5, \"input_length\": -3, \"output_length\": 1}",
       "input_length"},
      {"{\"timestamp\": 5, \"input_length\": 0, \"output_length\": 1}",
       "input_length 0"},
      {"{\"timestamp\": 5, \"input_length\": 1.5, \"output_length\": 1}",
       "input_length"},
      {"{\"timestamp\": 5, \"input_length\": 10, \"output_length\": 1", "'}'"},
      {"{\"timestamp\": 5, \"input_length\": 10, \"output_length\": 1} x",
       "trailing"},
      {"{\"timestamp\": 5, \"input_length\": 10, \"output_length\": 1, "
       "\"hash_ids\": [1, 2}",
       "hash_ids"},
  };
  for (const Case& c : cases) {
    INFO(c.line);
    absl::StatusOr<std::vector<TraceRecord>> t =
        ParseMooncakeTrace(good + good + c.line + "\n" + good);
    REQUIRE_FALSE(t.ok());
    CHECK(t.status().code() == absl::StatusCode::kInvalidArgument);
    const std::string msg(t.status().message());
    CHECK(msg.rfind("line 3: ", 0) == 0);
    CHECK(msg.find(c.needle) != std::string::npos);
  }
}

TEST_CASE("Mooncake JSONL rejects timestamps that go backwards",
          "[sim][trace]") {
  absl::StatusOr<std::vector<TraceRecord>> t = ParseMooncakeTrace(
      "{\"timestamp\": 50, \"input_length\": 1, \"output_length\": 1}\n"
      "{\"timestamp\": 40, \"input_length\": 1, \"output_length\": 1}\n");
  REQUIRE_FALSE(t.ok());
  CHECK(std::string(t.status().message()).rfind("line 2: ", 0) == 0);
}

TEST_CASE("Azure CSV parses CRLF rows and fractional timestamps",
          "[sim][trace]") {
  const std::string text =
      "TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
      "2023-11-16 18:17:03.9799600,4808,10\r\n"
      "2023-11-16 18:17:04.0319600,3180,8\r\n"
      "2023-11-16 18:18:04.0319600,110,27";
  absl::StatusOr<std::vector<TraceRecord>> t = ParseAzureTrace(text);
  REQUIRE(t.ok());
  REQUIRE(t->size() == 3);
  CHECK((*t)[0] == TraceRecord{0, 4808, 10});
  CHECK((*t)[1].arrival_ms == Approx(52.0));
  CHECK((*t)[1].input_tokens == 3180);
  CHECK((*t)[2].arrival_ms == Approx(60052.0));
  CHECK((*t)[2].output_tokens == 27);
}

TEST_CASE("Azure CSV rejects malformed lines with the line number",
          "[sim][trace]") {
  const std::string header = "TIMESTAMP,ContextTokens,GeneratedTokens\n";
  const std::string good = "2023-11-16 18:17:03.9799600,4808,10\n";
  struct Case {
    std::string line;
    std::string needle;
  };
  const Case cases[] = {
      {"2023-11-16 18:17:04.0,12", "3 comma-separated"},
      {"yesterday,12,4", "TIMESTAMP"},
      {"2023-11-16 18:17:04.0,abc,4", "ContextTokens"},
      {"2023-11-16 18:17:04.0,12,0", "GeneratedTokens"},
      {"2023-11-16 18:17:04.0,12,4,9", "3 comma-separated"},
      {"2023-11-16 18:17:01.0,12,4", "backwards"},
  };
  for (const Case& c : cases) {
    INFO(c.line);
    absl::StatusOr<std::vector<TraceRecord>> t =
        ParseAzureTrace(header + good + c.line + "\n" + good);
    REQUIRE_FALSE(t.ok());
    CHECK(t.status().code() == absl::StatusCode::kInvalidArgument);
    const std::string msg(t.status().message());
    CHECK(msg.rfind("line 3: ", 0) == 0);
    CHECK(msg.find(c.needle) != std::string::npos);
  }
  absl::StatusOr<std::vector<TraceRecord>> t =
      ParseAzureTrace("time,in,out\n" + good);
  REQUIRE_FALSE(t.ok());
  CHECK(std::string(t.status().message()).rfind("line 1: ", 0) == 0);
}

TEST_CASE("ReadTraceFile reports a missing file as NotFound", "[sim][trace]") {
  absl::StatusOr<std::vector<TraceRecord>> t =
      ReadTraceFile("/nonexistent/flowkv/trace.csv");
  REQUIRE_FALSE(t.ok());
  CHECK(t.status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("the project's traces parse completely", "[sim][trace]") {
  const std::filesystem::path dir = FLOWKV_TRACES_DIR;
  REQUIRE(std::filesystem::exists(dir / "conversation_trace.jsonl"));
  // Row counts from data/traces/README.md.
  const std::pair<const char*, size_t> files[] = {
      {"conversation_trace.jsonl", 12031},
      {"AzureLLMInferenceTrace_code.csv", 8819},
      {"AzureLLMInferenceTrace_conv.csv", 19366},
  };
  for (const auto& [name, rows] : files) {
    INFO(name);
    absl::StatusOr<std::vector<TraceRecord>> t =
        ReadTraceFile((dir / name).string());
    REQUIRE(t.ok());
    CHECK(t->size() == rows);
    CHECK(t->front().arrival_ms == 0);
    if (absl::EndsWith(name, ".jsonl")) {
      // One hash id per 512-token prompt block (the last one partial).
      size_t mismatched = 0;
      for (const TraceRecord& r : *t) {
        mismatched += r.hash_ids.size() != (r.input_tokens + 511) / 512;
      }
      CHECK(mismatched == 0);
    }
  }
  absl::StatusOr<std::vector<SimRequest>> w = MakeWorkload(
      {.spec = "trace:" + (dir / "conversation_trace.jsonl").string(),
       .num_requests = 50,
       .time_scale = 2});
  REQUIRE(w.ok());
  CHECK(w->size() == 50);
  CHECK(w->front().input_tokens == 6758);
}

TEST_CASE("workload specs: errors name the spec", "[sim][workload]") {
  for (const char* spec :
       {"synthetic", "synthetic:10", "synthetic:0:5", "synthetic:a:b",
        "shift:0", "shift:1:2", "longbench:nope", "gov_reportx", ""}) {
    INFO(spec);
    absl::StatusOr<std::vector<SimRequest>> w = MakeWorkload({.spec = spec});
    REQUIRE_FALSE(w.ok());
    CHECK(w.status().code() == absl::StatusCode::kInvalidArgument);
  }
  CHECK(MakeWorkload({.spec = "synthetic:10:5", .rate = 0}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(MakeWorkload({.spec = "synthetic:10:5", .num_requests = 0})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  CHECK(MakeWorkload({.spec = "trace:/nonexistent.jsonl"}).status().code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE("workloads are deterministic and have the stated lengths",
          "[sim][workload]") {
  WorkloadOptions o{
      .spec = "gov_report", .rate = 2, .num_requests = 2000, .seed = 11};
  absl::StatusOr<std::vector<SimRequest>> a = MakeWorkload(o);
  absl::StatusOr<std::vector<SimRequest>> b = MakeWorkload(o);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(*a == *b);
  double sum = 0;
  for (const SimRequest& r : *a) {
    sum += r.input_tokens;
    CHECK(r.output_tokens == 512);
    CHECK(r.input_tokens >= 0.25 * 8734 * 1.3 - 1);
    CHECK(r.input_tokens <= 2.5 * 8734 * 1.3 + 1);
  }
  CHECK(sum / a->size() == Approx(8734 * 1.3).epsilon(0.03));
  // Poisson arrivals: mean gap 1 / rate.
  CHECK(a->back().arrival_ms / (a->size() - 1) == Approx(500).epsilon(0.08));
  o.seed = 12;
  CHECK(*MakeWorkload(o) != *a);

  absl::StatusOr<std::vector<SimRequest>> shift =
      MakeWorkload({.spec = "shift:10", .rate = 5, .num_requests = 500});
  REQUIRE(shift.ok());
  for (const SimRequest& r : *shift) {
    const bool prefill_phase = static_cast<int>(r.arrival_ms / 10000) % 2 == 0;
    INFO(r.arrival_ms);
    if (prefill_phase) {
      CHECK(r.input_tokens >= 5000);
      CHECK(r.output_tokens <= 48);
    } else {
      CHECK(r.input_tokens <= 750);
      CHECK(r.output_tokens >= 256);
    }
  }
}

}  // namespace
}  // namespace flowkv
