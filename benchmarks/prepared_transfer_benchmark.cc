// SPDX-License-Identifier: Apache-2.0
// Prepared transfers (flowkv/prepared_transfer.h) against planning and
// posting each time: two TransferEngines in this process over loopback
// (transport from UCX_TLS), a pool of 32 layers x 64 blocks of 2 KiB tiles
// on each side.
//
//   BM_Prepared/<prepared>/<ops>   ops = 1, 64, 4096
//     prepared 0: AppendTransferPlan + Write each time (plan and post)
//     prepared 1: Post of a PreparedTransfer made once before the loop
//
// ops: 1 = block-major pools, 64 contiguous blocks (one run); 64 =
// layer-major pools, the same blocks (2 x 32 runs); 4096 = layer-major
// pools, every other block of 128 (no two tiles adjacent).
// The measured time (manual) is the caller's: planning and the Write or
// Post call; each transfer is then waited for outside it. Counters:
// post_us (that time, per transfer), done_us (to completion), ops. A fixed
// 300 transfers per run: the manual time is a small part of each.

#include <benchmark/benchmark.h>
#include <chrono>
#include <memory>
#include <stdlib.h>
#include <string>
#include <vector>

#include "flowkv/kv_layout.h"
#include "flowkv/prepared_transfer.h"
#include "flowkv/transfer_engine.h"
#include "flowkv/transfer_plan.h"
#include "tests/support/transfer_test_util.h"

namespace flowkv {
namespace {

constexpr KvGeometry kGeometry = {.num_layers = 32,
                                  .num_blocks = 128,
                                  .block_tokens = 16,
                                  .kv_heads = 1,
                                  .head_dim = 64,
                                  .dtype_bytes = 2};

struct Engines {
  std::unique_ptr<TransferEngine> a;
  std::unique_ptr<TransferEngine> b;
  RegionId a_region = 0;
  RegionId b_region = 0;
  PeerId peer = 0;
};

absl::Status MakeEngines(uint64_t pool_bytes, Engines* engines) {
  setenv("UCX_NET_DEVICES", "lo", 0);
  TransferEngineOptions options;
  options.cluster_token = "prepared-bench";
  options.ucx_peer_error_handling = !testing::SharedMemoryMode();
  options.name = "a";
  auto a = TransferEngine::Create(options);
  if (!a.ok()) return a.status();
  options.name = "b";
  auto b = TransferEngine::Create(options);
  if (!b.ok()) return b.status();
  engines->a = *std::move(a);
  engines->b = *std::move(b);
  auto a_region = engines->a->AllocateMemory(pool_bytes);
  if (!a_region.ok()) return a_region.status();
  auto b_region = engines->b->AllocateMemory(pool_bytes);
  if (!b_region.ok()) return b_region.status();
  engines->a_region = a_region->id;
  engines->b_region = b_region->id;
  auto address = engines->b->Listen("127.0.0.1:0");
  if (!address.ok()) return address.status();
  auto peer = engines->a->Connect(*address);
  if (!peer.ok()) return peer.status();
  engines->peer = *peer;
  return absl::OkStatus();
}

void BM_Prepared(benchmark::State& state) {
  const bool prepared_mode = state.range(0) == 1;
  const int64_t want_ops = state.range(1);
  const KvLayout layout =
      *KvLayout::Create({.geometry = kGeometry,
                         .pool_order = want_ops == 1 ? PoolOrder::kBlockMajor
                                                     : PoolOrder::kLayerMajor});
  Engines engines;
  if (absl::Status s = MakeEngines(layout.total_bytes(), &engines); !s.ok()) {
    state.SkipWithError(s.ToString().c_str());
    return;
  }
  BlockList blocks;
  if (want_ops == 4096) {
    for (uint32_t i = 0; i < 64; ++i) blocks.Append(2 * i, 1);
  } else {
    blocks.Append(0, 64);
  }
  TransferPlanRequest request;
  request.src_layout = &layout;
  request.src_blocks = blocks;
  request.dst_layout = &layout;
  request.dst_blocks = blocks;
  request.num_tokens = uint64_t{64} * kGeometry.block_tokens;
  std::vector<TransferOp> ops;
  const auto plan = [&]() -> absl::Status {
    ops.clear();
    if (absl::Status s = AppendTransferPlan(request, &ops); !s.ok()) return s;
    for (TransferOp& op : ops) {
      op.src_region = engines.a_region;
      op.dst_region = engines.b_region;
    }
    return absl::OkStatus();
  };
  if (absl::Status s = plan(); !s.ok()) {
    state.SkipWithError(s.ToString().c_str());
    return;
  }
  absl::StatusOr<PreparedTransfer> prepared =
      engines.a->PrepareWrite(engines.peer, ops);
  if (!prepared.ok()) {
    state.SkipWithError(prepared.status().ToString().c_str());
    return;
  }
  double post_seconds = 0;
  double done_seconds = 0;
  int64_t transfers = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    TransferHandle handle;
    if (prepared_mode) {
      handle = engines.a->Post(*prepared);
    } else {
      if (absl::Status s = plan(); !s.ok()) {
        state.SkipWithError(s.ToString().c_str());
        break;
      }
      handle = engines.a->Write(engines.peer, ops);
    }
    const auto posted = std::chrono::steady_clock::now();
    const absl::Status status = handle.Wait();
    const auto done = std::chrono::steady_clock::now();
    if (!status.ok()) {
      state.SkipWithError(status.ToString().c_str());
      break;
    }
    const double post = std::chrono::duration<double>(posted - start).count();
    state.SetIterationTime(post);
    post_seconds += post;
    done_seconds += std::chrono::duration<double>(done - start).count();
    ++transfers;
  }
  if (transfers > 0) {
    state.counters["post_us"] = post_seconds / transfers * 1e6;
    state.counters["done_us"] = done_seconds / transfers * 1e6;
  }
  state.counters["ops"] = static_cast<double>(prepared->num_ops());
  state.SetLabel(prepared_mode ? "prepared" : "plan_and_post");
}
BENCHMARK(BM_Prepared)
    ->ArgsProduct({{0, 1}, {1, 64, 4096}})
    ->UseManualTime()
    ->Iterations(300)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace flowkv

BENCHMARK_MAIN();
