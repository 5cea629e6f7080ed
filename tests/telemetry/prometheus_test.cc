// SPDX-License-Identifier: Apache-2.0
// flowkv::prometheus (lib/telemetry/): a known workload over real engines
// on loopback (two engines moving bytes, two KvTransfers finishing and
// timing out requests, an allocator), then a scrape of the exposer's
// http://127.0.0.1:<port>/metrics over a plain socket, whose values must be
// exactly what the workload did. Also the collector's and the exposer's
// refusals.

#include "flowkv/telemetry/prometheus.h"

#include <arpa/inet.h>
#include <map>
#include <netinet/in.h>
#include <sstream>
#include <string>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "flowkv/block_allocator.h"
#include "tests/support/engine_pair.h"
#include "tests/support/kv_fixture.h"
#include "tests/support/metrics_workload.h"

namespace flowkv {
namespace {

using flowkv::telemetry::ExposerPort;
using flowkv::telemetry::MetricsCollector;
using flowkv::telemetry::StartMetricsExposer;
using flowkv::testing::PoolPair;
using W = flowkv::testing::WorkloadExpectation;

// GET http://127.0.0.1:<port><path> over a plain socket (HTTP/1.0: the
// server closes when done); the whole response, "" on a socket error.
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval timeout{10, 0};  // no hang if the server stalls
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request =
        absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if (send(fd, request.data(), request.size(), 0) ==
        static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t n;
      while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) {
        response.append(buffer, static_cast<size_t>(n));
      }
    }
  }
  close(fd);
  return response;
}

// The samples of a text exposition, keyed by name{label="value",...} with
// the labels sorted by name.
std::map<std::string, double> ParseSamples(const std::string& body) {
  std::map<std::string, double> samples;
  std::istringstream lines(body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    const std::string series = line.substr(0, space);
    const double value = std::stod(line.substr(space + 1));
    const size_t brace = series.find('{');
    if (brace == std::string::npos) {
      samples[series] = value;
      continue;
    }
    std::map<std::string, std::string> labels;
    const std::string inner =
        series.substr(brace + 1, series.size() - brace - 2);
    size_t pos = 0;
    while (pos < inner.size()) {
      const size_t eq = inner.find('=', pos);
      const size_t end = inner.find('"', eq + 2);
      labels[inner.substr(pos, eq - pos)] = inner.substr(eq + 2, end - eq - 2);
      pos = end + 2;  // past '",'
    }
    samples[absl::StrCat(series.substr(0, brace), "{",
                         absl::StrJoin(labels, ",",
                                       [](std::string* out, const auto& label) {
                                         absl::StrAppend(out, label.first,
                                                         "=\"", label.second,
                                                         "\"");
                                       }),
                         "}")] = value;
  }
  return samples;
}

// The value of `series` (labels sorted by name), or -1 when absent.
double Value(const std::map<std::string, double>& samples,
             const std::string& series) {
  auto it = samples.find(series);
  return it == samples.end() ? -1 : it->second;
}

TEST_CASE("a scrape over loopback reports a known workload exactly",
          "[prometheus]") {
  // Engines a -> b: the metrics workload.
  PoolPair pair;
  flowkv::testing::MakePoolPair(
      flowkv::testing::kWorkloadPoolBytes,
      flowkv::testing::WorkloadSenderOptions(),
      flowkv::testing::TestEngineOptions("b", "cluster-secret"), &pair);
  flowkv::testing::RunKnownWorkload(&pair);

  // KvTransfer: two requests finish at decode, one times out.
  using flowkv::kv_fixture::Fixture;
  Fixture f;
  const BlockList src({{0, 2}});
  for (const char* id : {"req-1", "req-2"}) {
    REQUIRE(f.prefill.kv
                ->Send(id, f.to_decode,
                       {.src_blocks = src,
                        .dst_blocks = BlockList({{8, 2}}),
                        .num_tokens = 32})
                .Wait()
                .ok());
  }
  REQUIRE(f.decode.kv->Expect("never-sent", absl::Now()).ok());
  flowkv::testing::Seen seen;
  REQUIRE(flowkv::testing::PollUntil(
      *f.decode.kv, seen, flowkv::kv_fixture::kSoon, [](const auto& s) {
        return s.finished.size() == 2 && s.failed.size() == 1;
      }));

  // An allocator: lists of 10 and 5 blocks out of 100, packed from the
  // start (no growth slack), so one free run of 85 is left.
  auto allocator =
      BlockAllocator::Create({.num_blocks = 100, .growth_slack_blocks = 0});
  REQUIRE(allocator.ok());
  REQUIRE((*allocator)->Allocate(10).ok());
  REQUIRE((*allocator)->Allocate(5).ok());

  auto collector = MetricsCollector::Create();
  REQUIRE(collector->AddEngine(pair.a.get()).ok());
  REQUIRE(collector->AddEngine(pair.b.get()).ok());
  REQUIRE(
      collector->AddKvTransfer(f.decode.kv.get(), {{"role", "decode"}}).ok());
  REQUIRE(
      collector->AddKvTransfer(f.prefill.kv.get(), {{"role", "prefill"}}).ok());
  REQUIRE(collector->AddAllocator(allocator->get(), {{"pool", "test"}}).ok());
  auto exposer = StartMetricsExposer("127.0.0.1:0", {collector});
  INFO(exposer.status().ToString());
  REQUIRE(exposer.ok());
  const int port = ExposerPort(**exposer);
  REQUIRE(port > 0);

  const std::string response = HttpGet(port, "/metrics");
  INFO(response);
  REQUIRE(response.rfind("HTTP/1.", 0) == 0);
  CHECK(response.find(" 200 ") != std::string::npos);
  const size_t body = response.find("\r\n\r\n");
  REQUIRE(body != std::string::npos);
  const auto s = ParseSamples(response.substr(body + 4));

  CHECK(Value(s, "flowkv_engine_transfers_started_total{engine=\"a\"}") ==
        W::kStarted);
  CHECK(Value(s, "flowkv_engine_transfers_total{engine=\"a\",status=\"OK\"}") ==
        W::kOk);
  CHECK(Value(s,
              "flowkv_engine_transfers_total{engine=\"a\",status=\"OUT_OF_"
              "RANGE\"}") == 1);
  CHECK(Value(s,
              "flowkv_engine_transfers_total{engine=\"a\",status=\"NOT_"
              "FOUND\"}") == 1);
  CHECK(Value(s, "flowkv_engine_bytes_total{engine=\"a\",kind=\"write\"}") ==
        W::kBytesWritten);
  CHECK(Value(s, "flowkv_engine_bytes_total{engine=\"a\",kind=\"read\"}") ==
        W::kReadBytes);
  CHECK(Value(s, "flowkv_engine_bytes_total{engine=\"a\",kind=\"send\"}") ==
        W::kMessageBytes);
  CHECK(Value(s,
              "flowkv_engine_transfer_duration_seconds_count{engine=\"a\","
              "size_class=\"64KiB\"}") == W::kClass0);
  CHECK(Value(s,
              "flowkv_engine_transfer_duration_seconds_bucket{engine=\"a\","
              "le=\"+Inf\",size_class=\"64KiB\"}") == W::kClass0);
  CHECK(Value(s,
              "flowkv_engine_transfer_duration_seconds_count{engine=\"a\","
              "size_class=\"16MiB\"}") == W::kClass2);
  CHECK(Value(s,
              "flowkv_engine_transfer_duration_seconds_count{engine=\"a\","
              "size_class=\"1MiB\"}") == 0);
  CHECK(Value(s,
              "flowkv_engine_transfer_duration_seconds_bucket{engine=\"a\","
              "le=\"10\",size_class=\"16MiB\"}") == W::kClass2);
  CHECK(Value(s, "flowkv_engine_windows_posted_total{engine=\"a\"}") ==
        W::kWindows);
  CHECK(Value(s, "flowkv_engine_heartbeats_missed_total{engine=\"a\"}") == 0);
  CHECK(Value(s, "flowkv_engine_peer_failures_total{engine=\"a\"}") == 0);
  CHECK(Value(s, "flowkv_engine_transfers_active{engine=\"a\"}") == 0);
  CHECK(Value(s, "flowkv_engine_transfers_queued{engine=\"a\"}") == 0);
  CHECK(Value(s, "flowkv_engine_peers_connected{engine=\"a\"}") == 1);
  CHECK(Value(s, "flowkv_engine_peers_connected{engine=\"b\"}") == 1);
  CHECK(Value(s, "flowkv_engine_registered_bytes{engine=\"a\"}") ==
        flowkv::testing::kWorkloadPoolBytes);
  const std::string peer = absl::StrCat("peer=\"", pair.a_to_b, "\"");
  CHECK(Value(s, absl::StrCat("flowkv_engine_peer_transfers_total{engine="
                              "\"a\",outcome=\"ok\",",
                              peer, ",peer_name=\"b\"}")) == W::kOk);
  CHECK(Value(s, absl::StrCat("flowkv_engine_peer_transfers_total{engine="
                              "\"a\",outcome=\"failed\",",
                              peer, ",peer_name=\"b\"}")) == 0);
  CHECK(Value(s, absl::StrCat("flowkv_engine_peer_bytes_total{engine=\"a\",",
                              peer, ",peer_name=\"b\"}")) ==
        W::kBytesWritten + W::kReadBytes + W::kMessageBytes);
  // b sent nothing.
  CHECK(Value(s, "flowkv_engine_transfers_started_total{engine=\"b\"}") == 0);

  CHECK(Value(s,
              "flowkv_kv_requests_total{outcome=\"finished\",role="
              "\"decode\"}") == 2);
  CHECK(Value(s,
              "flowkv_kv_requests_total{outcome=\"timed_out\",role="
              "\"decode\"}") == 1);
  CHECK(Value(s,
              "flowkv_kv_requests_total{outcome=\"failed\",role="
              "\"decode\"}") == 0);
  CHECK(Value(s,
              "flowkv_kv_requests_total{outcome=\"finished\",role="
              "\"prefill\"}") == 0);
  CHECK(Value(s, "flowkv_kv_requests_active{role=\"decode\"}") == 0);
  CHECK(Value(s, "flowkv_kv_ring_slots{role=\"decode\"}") == 0);  // direct
  CHECK(Value(s,
              "flowkv_kv_staged_chunks_total{direction=\"sent\",role="
              "\"prefill\"}") == 0);

  CHECK(Value(s, "flowkv_allocator_blocks{pool=\"test\"}") == 100);
  CHECK(Value(s, "flowkv_allocator_free_blocks{pool=\"test\"}") == 85);
  CHECK(Value(s, "flowkv_allocator_free_runs{pool=\"test\"}") == 1);
  CHECK(Value(s, "flowkv_allocator_live_lists{pool=\"test\"}") == 2);
  CHECK(Value(s, "flowkv_allocator_runs_per_list{pool=\"test\"}") == 1);
  CHECK(Value(s, "flowkv_allocator_lists_by_runs{pool=\"test\",runs=\"1\"}") ==
        2);

  // A removed source is gone from the next scrape; the others stay.
  REQUIRE(collector->Remove(pair.b.get()).ok());
  const std::string again = HttpGet(port, "/metrics");
  CHECK(again.find("engine=\"b\"") == std::string::npos);
  CHECK(again.find("engine=\"a\"") != std::string::npos);
}

TEST_CASE("the collector refuses bad sources and labels", "[prometheus]") {
  auto engine = flowkv::testing::MakeEngine("solo");
  auto collector = MetricsCollector::Create();
  CHECK(collector->AddEngine(nullptr).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(collector->AddEngine(engine.get(), {{"status", "x"}}).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(collector->AddEngine(engine.get(), {{"9lives", "x"}}).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(collector->AddEngine(engine.get(), {{"__name__", "x"}}).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(collector->AddEngine(engine.get(), {{"a-b", "x"}}).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(collector->AddEngine(engine.get(), {{"", "x"}}).code() ==
        absl::StatusCode::kInvalidArgument);
  // Nothing was added by the refusals.
  CHECK(collector->Collect().empty());
  REQUIRE(collector->AddEngine(engine.get()).ok());
  CHECK(collector->AddEngine(engine.get(), {{"node", "n"}}).code() ==
        absl::StatusCode::kInvalidArgument);  // added already
  // Same name, same labels: the series would collide.
  auto twin = flowkv::testing::MakeEngine("solo");
  CHECK(collector->AddEngine(twin.get()).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(collector->AddEngine(twin.get(), {{"node", "twin"}}).ok());
  CHECK(collector->Remove(&collector).code() == absl::StatusCode::kNotFound);
  REQUIRE(collector->Remove(engine.get()).ok());
  CHECK(collector->Remove(engine.get()).code() == absl::StatusCode::kNotFound);
  REQUIRE(collector->Remove(twin.get()).ok());
  CHECK(collector->Collect().empty());
}

TEST_CASE("the exposer refuses bad addresses and a port in use",
          "[prometheus]") {
  auto collector = MetricsCollector::Create();
  for (const char* bad :
       {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:x1", "127.0.0.1:80a"}) {
    INFO(bad);
    CHECK(StartMetricsExposer(bad, {collector}).status().code() ==
          absl::StatusCode::kInvalidArgument);
  }
  CHECK(StartMetricsExposer("127.0.0.1:0", {nullptr}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  auto first = StartMetricsExposer("127.0.0.1:0", {collector});
  REQUIRE(first.ok());
  const int port = ExposerPort(**first);
  REQUIRE(port > 0);
  auto second =
      StartMetricsExposer(absl::StrCat("127.0.0.1:", port), {collector});
  CHECK(second.status().code() == absl::StatusCode::kUnavailable);
  // The first still serves (an empty collector: no samples).
  const std::string response = HttpGet(port, "/metrics");
  CHECK(response.find(" 200 ") != std::string::npos);
}

}  // namespace
}  // namespace flowkv
