// SPDX-License-Identifier: Apache-2.0
// One 64 MiB KvTransfer::Send over each path, in one run: two
// TransferEngines in this process over loopback (transport from UCX_TLS),
// a block-major prefill pool and a layer-major decode pool (so the request
// is 2 x 32 x 32 runs of 32 KiB).
//
//   BM_KvPath/direct    engine regions, UCX puts between them
//   BM_KvPath/staging   path_policy kForceStaging: gather into the ring,
//                       read by the receiver, scatter (default ring: 64 MiB
//                       of 4 MiB slots)
//   BM_KvPath/ipc       pools from MakeSharedHostPool: one memcpy per run
//
// A Send is done when the decode side acknowledged the data notice (the
// bytes are in its pool). Counters: bytes_per_second, slots per request
// (staging), copies per request (IPC). A thread polls the decode side. One
// untimed Send precedes the timed ones.

#include <atomic>
#include <benchmark/benchmark.h>
#include <memory>
#include <stdlib.h>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "flowkv/kv_layout.h"
#include "flowkv/kv_pool_memory.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/transfer_engine.h"
#include "tests/support/transfer_test_util.h"

namespace flowkv {
namespace {

// 32 layers x 2 parts x 32 blocks x 32 KiB = 64 MiB.
constexpr KvGeometry kGeometry = {.num_layers = 32,
                                  .num_blocks = 32,
                                  .block_tokens = 16,
                                  .kv_heads = 8,
                                  .head_dim = 128,
                                  .dtype_bytes = 2};

enum Path { kDirectPath = 0, kStagingPath = 1, kIpcPath = 2 };

struct Side {
  std::unique_ptr<TransferEngine> engine;
  std::shared_ptr<KvPoolMemory> shared;
  std::unique_ptr<KvTransfer> kv;
};

absl::Status MakeSide(const std::string& name, const KvLayout& layout,
                      Path path, Side* side) {
  TransferEngineOptions options;
  options.name = name;
  options.cluster_token = "kv-staging-bench";
  options.ucx_peer_error_handling = !testing::SharedMemoryMode();
  auto engine = TransferEngine::Create(options);
  if (!engine.ok()) return engine.status();
  side->engine = *std::move(engine);
  KvTransferOptions kv_options;
  absl::StatusOr<std::unique_ptr<KvTransfer>> kv;
  if (path == kIpcPath) {
    auto pool = MakeSharedHostPool({layout.total_bytes()});
    if (!pool.ok()) return pool.status();
    side->shared = *std::move(pool);
    testing::FillRandom(static_cast<uint8_t*>(side->shared->region_base(0)),
                        layout.total_bytes(), 1);
    kv = KvTransfer::Create(side->engine.get(), layout, side->shared,
                            kv_options);
  } else {
    auto region = side->engine->AllocateMemory(layout.total_bytes());
    if (!region.ok()) return region.status();
    testing::FillRandom(static_cast<uint8_t*>(region->data),
                        layout.total_bytes(), 1);
    if (path == kStagingPath) {
      kv_options.path_policy = KvPathPolicy::kForceStaging;
    }
    kv = KvTransfer::Create(side->engine.get(), layout, {region->id},
                            kv_options);
  }
  if (!kv.ok()) return kv.status();
  side->kv = *std::move(kv);
  return absl::OkStatus();
}

void BM_KvPath(benchmark::State& state) {
  setenv("UCX_NET_DEVICES", "lo", 0);
  const auto path = static_cast<Path>(state.range(0));
  const KvLayout prefill_layout = *KvLayout::Create({.geometry = kGeometry});
  const KvLayout decode_layout = *KvLayout::Create(
      {.geometry = kGeometry, .pool_order = PoolOrder::kLayerMajor});
  Side prefill;
  Side decode;
  absl::Status status = MakeSide("prefill", prefill_layout, path, &prefill);
  if (status.ok()) status = MakeSide("decode", decode_layout, path, &decode);
  if (!status.ok()) {
    state.SkipWithError(status.ToString().c_str());
    return;
  }
  absl::StatusOr<std::string> address = decode.engine->Listen("127.0.0.1:0");
  absl::StatusOr<PeerId> peer = absl::UnavailableError("not listening");
  if (address.ok()) {
    peer = prefill.engine->Connect(*address);
  } else {
    peer = address.status();
  }
  if (peer.ok()) status = prefill.kv->AnnouncePool(*peer);
  std::atomic<bool> stop{false};
  std::thread drainer([&] {
    while (!stop)
      benchmark::DoNotOptimize(decode.kv->Poll(absl::Milliseconds(1)));
  });
  if (status.ok() && peer.ok()) {
    status = prefill.kv->WaitForPeerPool(*peer, absl::Seconds(10));
  }
  if (!status.ok() || !peer.ok() || !address.ok()) {
    stop = true;
    drainer.join();
    state.SkipWithError(
        (status.ok() ? peer.status() : status).ToString().c_str());
    return;
  }
  const BlockList blocks({{0, kGeometry.num_blocks}});
  const KvPiece request = {
      .src_blocks = blocks,
      .dst_blocks = blocks,
      .num_tokens = uint64_t{kGeometry.num_blocks} * kGeometry.block_tokens};
  // One untimed Send first: maps the peer's memory and faults its pages in
  // (as BM_Transfer's warm-up does), so the timed Sends compare with it.
  if (absl::Status s = prefill.kv->Send("warm-up", *peer, request).Wait();
      !s.ok()) {
    stop = true;
    drainer.join();
    state.SkipWithError(s.ToString().c_str());
    return;
  }
  const KvTransferStats before = prefill.kv->Stats();
  uint64_t i = 0;
  for (auto _ : state) {
    absl::Status s =
        prefill.kv->Send(absl::StrCat("req-", i++), *peer, request).Wait();
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
  }
  stop = true;
  drainer.join();
  const KvTransferStats stats = prefill.kv->Stats();
  state.SetBytesProcessed(
      static_cast<int64_t>(i * prefill_layout.total_bytes()));
  if (i > 0) {
    state.counters["chunks_per_request"] =
        static_cast<double>(stats.staged_slots_sent -
                            before.staged_slots_sent) /
        i;
    state.counters["copies_per_request"] =
        static_cast<double>(stats.ipc_copies - before.ipc_copies) / i;
  }
  state.SetLabel(path == kDirectPath    ? "direct"
                 : path == kStagingPath ? "staging"
                                        : "ipc");
}
BENCHMARK(BM_KvPath)
    ->Arg(kDirectPath)
    ->Arg(kStagingPath)
    ->Arg(kIpcPath)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace flowkv

BENCHMARK_MAIN();
