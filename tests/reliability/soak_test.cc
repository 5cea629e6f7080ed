// SPDX-License-Identifier: Apache-2.0
// Load and soak between processes through KvTransfer (the verified request
// streams of tests/support/kv_stream.h): 16 sender processes into one receiving
// process, and one sending process to 16 receiver processes, each for a
// bounded time. Every request is checked byte for byte at its receiver;
// failures must be zero; this process's resident memory (VmRSS) and open
// descriptors are sampled every few seconds and must stay flat after the
// warm-up. Prints a summary table.
//
//   FLOWKV_SOAK_SECONDS      run time of each direction (default 60)
//   FLOWKV_SOAK_PEERS        processes on the many side (default 16)
//   FLOWKV_SOAK_INTERVAL_MS  least time between two requests of one stream
//                            (default 20: at most 50 requests/s per stream)
//
// Flat: after the warm-up (the first quarter of the run), the largest RSS
// sample exceeds the one at the end of the warm-up by at most
// max(8 MiB, 5 %), and the descriptor count varies by at most 2.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/transfer_engine.h"
#include "tests/support/kv_fixture.h"
#include "tests/support/kv_stream.h"
#include "tests/support/kv_test_util.h"

namespace flowkv {
namespace {

using testing::ChildProcess;
using testing::kKvSoon;
using testing::ParseStreamMessage;
using testing::StreamReceiver;
using testing::StreamSender;
using testing::StreamSenderSide;

uint64_t EnvOr(const char* name, uint64_t fallback) {
  uint64_t value = 0;
  const char* text = std::getenv(name);
  return text != nullptr && absl::SimpleAtoi(text, &value) ? value : fallback;
}

struct SoakConfig {
  absl::Duration run = absl::Seconds(EnvOr("FLOWKV_SOAK_SECONDS", 60));
  uint32_t peers = static_cast<uint32_t>(
      std::min<uint64_t>(EnvOr("FLOWKV_SOAK_PEERS", 16), testing::kMaxStreams));
  uint64_t interval_ms = EnvOr("FLOWKV_SOAK_INTERVAL_MS", 20);
  absl::Duration warm_up() const { return run / 4; }
  absl::Duration sample_every() const {
    return std::min(absl::Seconds(2), run / 10);
  }
};

// This process's resident memory and open descriptors.
struct Sample {
  absl::Duration at;
  uint64_t rss_kib = 0;
  uint64_t fds = 0;
};

Sample TakeSample(absl::Duration at) {
  Sample s;
  s.at = at;
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::vector<std::string> words =
          absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (words.size() >= 2) (void)absl::SimpleAtoi(words[1], &s.rss_kib);
    }
  }
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') ++s.fds;
    }
    closedir(dir);
    --s.fds;  // the descriptor of the listing itself
  }
  return s;
}

// Samples on a schedule while the run goes on.
class Sampler {
 public:
  explicit Sampler(const SoakConfig& config)
      : config_(config), start_(absl::Now()) {}
  void MaybeSample() {
    const absl::Duration at = absl::Now() - start_;
    if (!samples_.empty() && at < samples_.back().at + config_.sample_every())
      return;
    samples_.push_back(TakeSample(at));
  }
  bool Running() const { return absl::Now() - start_ < config_.run; }

  // The flatness check of the file comment; prints the samples.
  void CheckFlat(const std::string& what) const {
    const Sample* base = nullptr;
    uint64_t rss_max = 0;
    uint64_t fds_min = UINT64_MAX;
    uint64_t fds_max = 0;
    for (const Sample& s : samples_) {
      if (s.at < config_.warm_up()) continue;
      if (base == nullptr) base = &s;
      rss_max = std::max(rss_max, s.rss_kib);
      fds_min = std::min(fds_min, s.fds);
      fds_max = std::max(fds_max, s.fds);
    }
    REQUIRE(base != nullptr);
    const uint64_t tolerance_kib =
        std::max<uint64_t>(8 * 1024, base->rss_kib / 20);
    std::printf(
        "soak %s: RSS after warm-up %llu KiB, max %llu KiB (tolerance %llu "
        "KiB); fds %llu..%llu over %zu samples\n",
        what.c_str(), static_cast<unsigned long long>(base->rss_kib),
        static_cast<unsigned long long>(rss_max),
        static_cast<unsigned long long>(tolerance_kib),
        static_cast<unsigned long long>(fds_min),
        static_cast<unsigned long long>(fds_max), samples_.size());
    INFO(what);
    CHECK(rss_max <= base->rss_kib + tolerance_kib);
    CHECK(fds_max - fds_min <= 2);
  }
  const std::vector<Sample>& samples() const { return samples_; }

 private:
  const SoakConfig& config_;
  absl::Time start_;
  std::vector<Sample> samples_;
};

void PrintSummary(const std::string& direction, const SoakConfig& config,
                  uint64_t requests, uint64_t bytes, uint64_t failures,
                  const Sampler& sampler) {
  const Sample& first = sampler.samples().front();
  const Sample& last = sampler.samples().back();
  std::printf(
      "\n| soak | peers | seconds | requests verified | bytes verified | "
      "failures | RSS first/last KiB | fds first/last |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- |\n"
      "| %s | %u | %.0f | %llu | %llu | %llu | %llu / %llu | %llu / %llu "
      "|\n\n",
      direction.c_str(), config.peers, absl::ToDoubleSeconds(config.run),
      static_cast<unsigned long long>(requests),
      static_cast<unsigned long long>(bytes),
      static_cast<unsigned long long>(failures),
      static_cast<unsigned long long>(first.rss_kib),
      static_cast<unsigned long long>(last.rss_kib),
      static_cast<unsigned long long>(first.fds),
      static_cast<unsigned long long>(last.fds));
}

TEST_CASE("stream sender child", "[.stream_child]") {
  testing::RunStreamSenderChild();
}

TEST_CASE("stream receiver child", "[.stream_child]") {
  testing::RunStreamReceiverChild();
}

TEST_CASE("Soak: many sender processes into one receiver", "[soak]") {
  const SoakConfig config;
  kv_fixture::Side receiving("receiver", kv_fixture::kDecodeSpec);
  std::memset(receiving.data, 0, receiving.layout.total_bytes());
  auto address = receiving.engine->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  StreamReceiver receiver(&receiving, absl::Milliseconds(config.interval_ms));
  std::vector<std::unique_ptr<ChildProcess>> senders;
  for (uint32_t s = 0; s < config.peers; ++s) {
    senders.push_back(std::make_unique<ChildProcess>(
        "stream sender child",
        std::vector<std::string>{"FLOWKV_STREAM_ADDRESS=" + *address,
                                 absl::StrCat("FLOWKV_STREAM_ID=", s)}));
  }
  const absl::Time started = absl::Now();
  while (receiver.streams.size() < config.peers &&
         absl::Now() - started < kKvSoon + kKvSoon) {
    receiver.Poll(absl::Milliseconds(10));
  }
  REQUIRE(receiver.streams.size() == config.peers);

  Sampler sampler(config);
  while (sampler.Running()) {
    sampler.MaybeSample();
    receiver.Poll(absl::Milliseconds(10));
  }
  receiver.StopGoing();
  const absl::Time stopping = absl::Now();
  while (!receiver.Quiet() && absl::Now() - stopping < kKvSoon) {
    receiver.Poll(absl::Milliseconds(10));
  }
  REQUIRE(receiver.Quiet());
  receiver.SendStop();

  uint64_t requests = 0;
  uint64_t bytes = 0;
  uint64_t failures = 0;
  for (uint32_t s = 0; s < config.peers; ++s) {
    INFO("stream " << s);
    const StreamReceiver::Stream& stream = receiver.streams[s];
    const std::string sent = senders[s]->ReadLine(kKvSoon);
    std::vector<std::string> words = absl::StrSplit(sent, ' ');
    uint64_t posted = 0;
    uint64_t pieces_failed = 0;
    REQUIRE(words.size() == 4);
    REQUIRE(absl::SimpleAtoi(words[1], &posted));
    REQUIRE(absl::SimpleAtoi(words[3], &pieces_failed));
    CHECK(stream.finished > 0);
    CHECK(stream.finished == posted);  // every request posted arrived
    CHECK(stream.mismatched == 0);
    CHECK(stream.failed.empty());
    CHECK(!stream.disconnected);
    CHECK(pieces_failed == 0);
    requests += stream.finished;
    bytes += stream.bytes_verified;
    failures += stream.mismatched + stream.failed.size() + pieces_failed;
  }
  CHECK(receiver.unknown_requests == 0);
  sampler.MaybeSample();
  PrintSummary(absl::StrCat(config.peers, " senders -> 1 receiver"), config,
               requests, bytes, failures, sampler);
  sampler.CheckFlat("receiver");
}

TEST_CASE("Soak: one sender process to many receivers", "[soak]") {
  const SoakConfig config;
  constexpr uint64_t kSeed = 77;
  std::vector<std::unique_ptr<ChildProcess>> receivers;
  for (uint32_t s = 0; s < config.peers; ++s) {
    receivers.push_back(std::make_unique<ChildProcess>(
        "stream receiver child",
        std::vector<std::string>{
            "FLOWKV_STREAM_RECEIVER=1",
            absl::StrCat("FLOWKV_STREAM_INTERVAL_MS=", config.interval_ms)}));
  }
  setenv("UCX_NET_DEVICES", "lo", 1);
  StreamSenderSide sending(testing::KvEngineOptions("sender"), "", kSeed);
  std::vector<StreamSender> senders;
  for (uint32_t s = 0; s < config.peers; ++s) {
    const std::string line = receivers[s]->ReadLine(kKvSoon + kKvSoon);
    REQUIRE(line.rfind("listen ", 0) == 0);
    const PeerId peer = sending.ConnectTo(line.substr(7));
    senders.emplace_back(sending.engine.get(), sending.kv.get(), peer, s,
                         kSeed);
    REQUIRE(senders.back().Hello().ok());
  }
  auto serve = [&](absl::Duration wait) {
    for (Notification& n : sending.kv->Poll(wait).other) {
      uint64_t index = 0;
      if (!ParseStreamMessage(n.bytes, "go", &index)) continue;
      for (StreamSender& sender : senders) {
        if (sender.peer() == n.peer) sender.Go(index);
      }
    }
  };

  Sampler sampler(config);
  while (sampler.Running()) {
    sampler.MaybeSample();
    serve(absl::Milliseconds(10));
  }
  for (StreamSender& sender : senders) {
    REQUIRE(sending.engine->Send(sender.peer(), "stop").Wait().ok());
  }
  uint64_t requests = 0;
  uint64_t bytes = 0;
  uint64_t failures = 0;
  for (uint32_t s = 0; s < config.peers; ++s) {
    INFO("receiver " << s);
    // Serve "go"s that crossed the "stop" while waiting for the report.
    std::string line;
    const absl::Time deadline = absl::Now() + kKvSoon;
    while (line.empty() && absl::Now() < deadline) {
      serve(absl::ZeroDuration());
      line = receivers[s]->ReadLine(absl::Milliseconds(10));
    }
    std::vector<std::string> words = absl::StrSplit(line, ' ');
    REQUIRE(words.size() == 6);
    REQUIRE(words[0] == "received");
    uint64_t numbers[5] = {};
    for (int i = 0; i < 5; ++i) {
      REQUIRE(absl::SimpleAtoi(words[i + 1], &numbers[i]));
    }
    senders[s].Settle();
    CHECK(numbers[0] > 0);
    // The request posted for a "go" that crossed the "stop" may not be
    // counted by the receiver.
    CHECK(numbers[0] + 1 >= senders[s].requests_posted);
    CHECK(numbers[2] == 0);  // mismatched
    CHECK(numbers[3] == 0);  // failed
    CHECK(numbers[4] == 0);  // disconnected
    CHECK(senders[s].pieces_failed == 0);
    requests += numbers[0];
    bytes += numbers[1];
    failures += numbers[2] + numbers[3] + senders[s].pieces_failed;
  }
  sampler.MaybeSample();
  PrintSummary(absl::StrCat("1 sender -> ", config.peers, " receivers"), config,
               requests, bytes, failures, sampler);
  sampler.CheckFlat("sender");
}

}  // namespace
}  // namespace flowkv
