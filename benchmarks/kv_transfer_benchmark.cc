// SPDX-License-Identifier: Apache-2.0
// KvTransfer::Send from several threads at once: two TransferEngines in this
// process over loopback (transport from UCX_TLS), a block-major prefill pool
// and a vLLM-style layer-major decode pool, so every Send plans 2 x L ops.
//
//   BM_KvSendConcurrent/real_time/threads:<n>   n = 1, 2, 4, 8
//
// Each thread sends one-block requests (its own blocks, unique request ids)
// and keeps up to kWindow of them in flight, waiting for the oldest (done =
// the decode side acknowledged the notice). A drainer thread polls the
// decode side's KvTransfer, which tracks every request to its finish.
// Counters: sends_per_s (all threads together), send_us (time inside the
// Send call, per send: validation, planning, posting), ops_per_send. The
// 1-thread run is the baseline of the same binary run: Sends that
// serialized on one lock around planning and posting would not gain from
// more threads.
// FLOWKV_BENCH_BUSY_POLL=1 makes both engines' progress threads spin.

#include <atomic>
#include <benchmark/benchmark.h>
#include <cstdlib>
#include <deque>
#include <memory>
#include <stdlib.h>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "flowkv/kv_layout.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/transfer_engine.h"
#include "tests/support/transfer_test_util.h"

namespace flowkv {
namespace {

constexpr int kMaxThreads = 8;
constexpr size_t kWindow = 16;
// Llama-3.1-8B's 32 layers with a narrow head slice, so that planning and
// posting, not bytes, dominate: 64 ops of 2 KiB per one-block request.
constexpr KvGeometry kGeometry = {.num_layers = 32,
                                  .num_blocks = 64,
                                  .block_tokens = 16,
                                  .kv_heads = 1,
                                  .head_dim = 64,
                                  .dtype_bytes = 2};

using flowkv::testing::SharedMemoryMode;

struct Side {
  std::unique_ptr<TransferEngine> engine;
  std::unique_ptr<KvTransfer> kv;
  RegionId region = 0;
};

// The two connected sides and the decode side's drainer.
struct Setup {
  KvLayout prefill_layout = *KvLayout::Create({.geometry = kGeometry});
  KvLayout decode_layout = *KvLayout::Create(
      {.geometry = kGeometry, .pool_order = PoolOrder::kLayerMajor});
  Side prefill;
  Side decode;
  PeerId peer = 0;
  std::atomic<bool> stop{false};
  std::thread drainer;
  std::string error;

  ~Setup() {
    stop = true;
    if (drainer.joinable()) drainer.join();
    prefill.kv.reset();
    decode.kv.reset();
    prefill.engine.reset();
    decode.engine.reset();
  }
};

absl::Status MakeSide(const std::string& name, const KvLayout& layout,
                      Side* side) {
  TransferEngineOptions options;
  options.name = name;
  options.cluster_token = "kv-bench";
  options.ucx_peer_error_handling = !SharedMemoryMode();
  const char* busy = std::getenv("FLOWKV_BENCH_BUSY_POLL");
  options.busy_poll = busy != nullptr && std::string(busy) == "1";
  auto engine = TransferEngine::Create(options);
  if (!engine.ok()) return engine.status();
  side->engine = *std::move(engine);
  auto region = side->engine->AllocateMemory(layout.total_bytes());
  if (!region.ok()) return region.status();
  side->region = region->id;
  auto kv = KvTransfer::Create(side->engine.get(), layout, {region->id});
  if (!kv.ok()) return kv.status();
  side->kv = *std::move(kv);
  return absl::OkStatus();
}

std::unique_ptr<Setup>& SetupSlot() {
  static std::unique_ptr<Setup> setup;
  return setup;
}

// Created once, by whichever benchmark thread comes first.
Setup& GetSetup() {
  static Setup* const setup = [] {
    setenv("UCX_NET_DEVICES", "lo", 0);
    auto s = std::make_unique<Setup>();
    absl::Status status = MakeSide("prefill", s->prefill_layout, &s->prefill);
    if (status.ok()) status = MakeSide("decode", s->decode_layout, &s->decode);
    absl::StatusOr<std::string> address;
    if (status.ok()) {
      address = s->decode.engine->Listen("127.0.0.1:0");
      status = address.status();
    }
    if (status.ok()) {
      absl::StatusOr<PeerId> peer = s->prefill.engine->Connect(*address);
      status = peer.status();
      if (peer.ok()) s->peer = *peer;
    }
    if (status.ok()) {
      status = s->prefill.kv->AddPeerPool(s->peer, s->decode_layout,
                                          {s->decode.region});
    }
    if (status.ok()) {
      Setup* raw = s.get();
      s->drainer = std::thread([raw] {
        while (!raw->stop) {
          KvPollResult r = raw->decode.kv->Poll(absl::Milliseconds(1));
          benchmark::DoNotOptimize(r);
        }
      });
    } else {
      s->error = status.ToString();
    }
    SetupSlot() = std::move(s);
    return SetupSlot().get();
  }();
  return *setup;
}

void BM_KvSendConcurrent(benchmark::State& state) {
  Setup& s = GetSetup();
  if (!s.error.empty()) {
    state.SkipWithError(s.error.c_str());
    return;
  }
  const int t = state.thread_index();
  // Each thread its own blocks on both sides (8 threads x 8 blocks).
  const KvPiece request = {
      .src_blocks = BlockList({{static_cast<BlockId>(t * 8), 1}}),
      .dst_blocks =
          BlockList({{static_cast<BlockId>((kMaxThreads - 1 - t) * 8), 1}}),
      .num_tokens = kGeometry.block_tokens};
  const std::string prefix = absl::StrCat("bench-", t, "-", state.threads(),
                                          "-", state.max_iterations, "-");
  std::deque<TransferHandle> window;
  uint64_t sent = 0;
  uint64_t failed = 0;
  uint64_t ops = 0;
  absl::Duration in_send;
  std::string error;
  auto retire = [&] {
    const absl::Status status = window.front().Wait();
    ops += window.front().stats().ops;
    if (!status.ok()) {
      ++failed;
      if (error.empty()) error = status.ToString();
    }
    window.pop_front();
  };
  for (auto _ : state) {
    const std::string id = absl::StrCat(prefix, sent++);
    const absl::Time start = absl::Now();
    window.push_back(s.prefill.kv->Send(id, s.peer, request));
    in_send += absl::Now() - start;
    if (window.size() >= kWindow) retire();
  }
  while (!window.empty()) retire();
  if (failed > 0) {
    state.SkipWithError(error.c_str());
    return;
  }
  state.counters["sends_per_s"] = benchmark::Counter(
      static_cast<double>(sent), benchmark::Counter::kIsRate);
  // Time inside Send (validation, planning, posting): it would grow with
  // the threads if Sends serialized on a lock.
  state.counters["send_us"] = benchmark::Counter(
      sent == 0 ? 0.0 : absl::ToDoubleMicroseconds(in_send) / sent,
      benchmark::Counter::kAvgThreads);
  state.counters["ops_per_send"] =
      benchmark::Counter(sent == 0 ? 0.0 : static_cast<double>(ops) / sent,
                         benchmark::Counter::kAvgThreads);
}

BENCHMARK(BM_KvSendConcurrent)
    ->Threads(1)
    ->Threads(2)
    ->Threads(4)
    ->Threads(kMaxThreads)
    ->UseRealTime()
    ->MinTime(1.0);

}  // namespace
}  // namespace flowkv

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  flowkv::SetupSlot().reset();  // stop the drainer and the engines
  return 0;
}
