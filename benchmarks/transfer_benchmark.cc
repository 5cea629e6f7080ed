// SPDX-License-Identifier: Apache-2.0
// Transfer of one request's KV cache between two TransferEngines in this
// process over loopback (transport from UCX_TLS), Llama-3.1-8B geometry
// (32 layers, 8 KV heads, head_dim 128, 2-byte elements: 128 KiB/token).
//
//   BM_Transfer/<mode>/<tokens>/<block_tokens>         engine-allocated pools
//   BM_TransferUserMem/<mode>/<tokens>/<block_tokens>  user memory, registered
//
// Modes:
//   blockwise          layer-major pools, one op per (layer, K|V, block), as
//                      vLLM's NIXL connector posts them
//   layer_runs         layer-major pools, contiguous blocks, planned (2 L ops)
//   flowkv             block-major pools, contiguous blocks, planned (1 op)
//   flowkv_fragmented  block-major pools, block lists from an allocator
//                      churned at 90 % occupancy, planned (1 op per run)
//   raw                one op of the same byte count (the transport ceiling)
//   memcpy             a local memcpy of the same bytes in one thread
//   kv_send            KvTransfer::Send of the flowkv request over the same
//                      engines and pools (block-major both sides: 1 op),
//                      done when the receiver acknowledged the data notice;
//                      a thread polls the receiving KvTransfer
//
// Counters: calls (ops per request), bytes (per request), GBps, post_us (CPU
// time to plan and post one request: planning + the engine's post time),
// process_cpu_ms (CPU time of every thread of the process per request: the
// cost of the bytes independent of how much CPU a loaded machine gave).
// Shared memory: UCX_TLS=posix,cma,self,tcp (the engines then run without
// UCX peer error handling, which UCX 1.13's shared-memory transports lack;
// tcp only sets up the connection). TCP: UCX_TLS=tcp.
// FLOWKV_BENCH_BUSY_POLL=1 makes both engines' progress threads spin.

#include <atomic>
#include <benchmark/benchmark.h>
#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <stdlib.h>
#include <string>
#include <thread>
#include <time.h>
#include <vector>

#include "absl/strings/str_cat.h"
#include "flowkv/block_allocator.h"
#include "flowkv/kv_layout.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/transfer_engine.h"
#include "flowkv/transfer_plan.h"
#include "tests/support/transfer_test_util.h"

namespace flowkv {
namespace {

enum class Mode {
  kBlockwise,
  kLayerRuns,
  kFlowkv,
  kFragmented,
  kRaw,
  kMemcpy,
  kKvSend
};

constexpr uint32_t kMaxTokens = 8192;

using flowkv::testing::SharedMemoryMode;

KvGeometry Geometry(uint32_t block_tokens) {
  // Room for the largest request plus 25 % (fragmentation headroom).
  const uint32_t blocks =
      (kMaxTokens * 5 / 4 + block_tokens - 1) / block_tokens;
  return {.num_layers = 32,
          .num_blocks = blocks,
          .block_tokens = block_tokens,
          .kv_heads = 8,
          .head_dim = 128,
          .dtype_bytes = 2};
}

// Two connected engines with one pool each. Rebuilt when the memory kind or
// the pool size changes (regions travel in the handshake).
struct Setup {
  bool user_memory = false;
  uint64_t pool_bytes = 0;
  std::unique_ptr<TransferEngine> a;
  std::unique_ptr<TransferEngine> b;
  std::vector<uint8_t> a_user;
  std::vector<uint8_t> b_user;
  uint8_t* a_base = nullptr;
  uint8_t* b_base = nullptr;
  RegionId a_region = 0;
  RegionId b_region = 0;
  PeerId peer = 0;
  // kv_send: a KvTransfer on each engine over the pools, made on first use
  // (destroyed before the engines).
  std::unique_ptr<KvTransfer> a_kv;
  std::unique_ptr<KvTransfer> b_kv;
};

// Makes setup->a_kv and setup->b_kv over the pools (laid out by `layout`)
// and exchanges the pools.
absl::Status MakeKvTransfers(Setup* setup, const KvLayout& layout) {
  if (setup->a_kv != nullptr) return absl::OkStatus();
  auto a = KvTransfer::Create(setup->a.get(), layout, {setup->a_region}, {});
  if (!a.ok()) return a.status();
  auto b = KvTransfer::Create(setup->b.get(), layout, {setup->b_region}, {});
  if (!b.ok()) return b.status();
  if (absl::Status s = (*a)->AnnouncePool(setup->peer); !s.ok()) return s;
  std::atomic<bool> stop{false};
  std::thread drainer([&] {
    while (!stop) benchmark::DoNotOptimize((*b)->Poll(absl::Milliseconds(1)));
  });
  absl::Status status = (*a)->WaitForPeerPool(setup->peer, absl::Seconds(30));
  stop = true;
  drainer.join();
  if (!status.ok()) return status;
  setup->a_kv = *std::move(a);
  setup->b_kv = *std::move(b);
  return absl::OkStatus();
}

Setup* GetSetup(bool user_memory, uint64_t pool_bytes, std::string* error) {
  static Setup* setup = new Setup;
  if (setup->a && setup->user_memory == user_memory &&
      setup->pool_bytes == pool_bytes) {
    return setup;
  }
  setup->a_kv.reset();
  setup->b_kv.reset();
  setup->b.reset();
  setup->a.reset();
  setup->a_user = {};
  setup->b_user = {};
  setup->user_memory = user_memory;
  setup->pool_bytes = pool_bytes;
  setenv("UCX_NET_DEVICES", "lo", 1);
  TransferEngineOptions options;
  options.cluster_token = "bench";
  options.ucx_peer_error_handling = !SharedMemoryMode();
  // Whole-pool copies on a loaded machine can keep a progress thread busy
  // for seconds; failure detection is not what is measured here.
  options.peer_failure_timeout = absl::Seconds(60);
  options.default_timeout = absl::Seconds(300);
  // FLOWKV_BENCH_BUSY_POLL=1: both progress threads spin.
  const char* busy = std::getenv("FLOWKV_BENCH_BUSY_POLL");
  options.busy_poll = busy != nullptr && std::string(busy) == "1";
  options.name = "sender";
  auto a = TransferEngine::Create(options);
  options.name = "receiver";
  auto b = TransferEngine::Create(options);
  if (!a.ok() || !b.ok()) {
    *error = (!a.ok() ? a.status() : b.status()).ToString();
    return nullptr;
  }
  setup->a = *std::move(a);
  setup->b = *std::move(b);
  for (int side = 0; side < 2; ++side) {
    TransferEngine* engine = side == 0 ? setup->a.get() : setup->b.get();
    uint8_t*& base = side == 0 ? setup->a_base : setup->b_base;
    RegionId& region = side == 0 ? setup->a_region : setup->b_region;
    if (user_memory) {
      std::vector<uint8_t>& memory = side == 0 ? setup->a_user : setup->b_user;
      memory.assign(pool_bytes, static_cast<uint8_t>(side + 1));
      auto id = engine->RegisterMemory(memory.data(), pool_bytes);
      if (!id.ok()) {
        *error = id.status().ToString();
        return nullptr;
      }
      base = memory.data();
      region = *id;
    } else {
      auto allocated = engine->AllocateMemory(pool_bytes);
      if (!allocated.ok()) {
        *error = allocated.status().ToString();
        return nullptr;
      }
      base = static_cast<uint8_t*>(allocated->data);
      std::memset(base, side + 1, pool_bytes);
      region = allocated->id;
    }
  }
  auto address = setup->b->Listen("127.0.0.1:0");
  if (!address.ok()) {
    *error = address.status().ToString();
    return nullptr;
  }
  auto peer = setup->a->Connect(*address);
  if (!peer.ok()) {
    *error = peer.status().ToString();
    return nullptr;
  }
  setup->peer = *peer;
  // One untimed transfer of the whole pool: maps the peer's memory and
  // faults its pages in.
  const TransferOp warm{setup->a_region, 0, setup->b_region, 0, pool_bytes};
  const absl::Status status = setup->a->Write(setup->peer, {&warm, 1}).Wait();
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return setup;
}

// CPU time of every thread of this process so far.
double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

// A block list of `n` blocks taken from an allocator of `num_blocks` blocks
// after churn at 90 % occupancy (requests of 2..64 blocks come and go).
BlockList FragmentedBlocks(uint32_t n, uint32_t num_blocks, uint64_t seed) {
  auto allocator = BlockAllocator::Create({.num_blocks = num_blocks});
  std::mt19937_64 rng(seed);
  std::vector<BlockList> live;
  uint64_t used = 0;
  const uint64_t target = uint64_t{num_blocks} * 9 / 10;
  for (int step = 0; step < 4000; ++step) {
    if (used < target) {
      const uint32_t size =
          std::min<uint64_t>(2 + rng() % 63, num_blocks - used);
      auto list = (*allocator)->Allocate(size);
      if (list.ok()) {
        used += list->num_blocks();
        live.push_back(*std::move(list));
        continue;
      }
    }
    if (!live.empty()) {
      const size_t victim = rng() % live.size();
      used -= live[victim].num_blocks();
      (void)(*allocator)->Free(live[victim]);
      live[victim] = std::move(live.back());
      live.pop_back();
    }
  }
  // Make room for the request by freeing random requests.
  while (num_blocks - used < n && !live.empty()) {
    const size_t victim = rng() % live.size();
    used -= live[victim].num_blocks();
    (void)(*allocator)->Free(live[victim]);
    live[victim] = std::move(live.back());
    live.pop_back();
  }
  auto list = (*allocator)->Allocate(n);
  return list.ok() ? *list : BlockList();
}

void RunTransfer(benchmark::State& state, Mode mode, bool user_memory) {
  const uint32_t tokens = static_cast<uint32_t>(state.range(0));
  const uint32_t block_tokens = static_cast<uint32_t>(state.range(1));
  const KvGeometry geometry = Geometry(block_tokens);
  const bool block_major = mode == Mode::kFlowkv || mode == Mode::kFragmented ||
                           mode == Mode::kRaw || mode == Mode::kMemcpy ||
                           mode == Mode::kKvSend;
  const KvLayout layout =
      *KvLayout::Create({.geometry = geometry,
                         .pool_order = block_major ? PoolOrder::kBlockMajor
                                                   : PoolOrder::kLayerMajor});
  std::string error;
  Setup* setup = GetSetup(user_memory, layout.total_bytes(), &error);
  if (setup == nullptr) {
    state.SkipWithError(error.c_str());
    return;
  }
  const uint32_t blocks = (tokens + block_tokens - 1) / block_tokens;
  BlockList src_blocks;
  BlockList dst_blocks;
  if (mode == Mode::kFragmented) {
    src_blocks = FragmentedBlocks(blocks, geometry.num_blocks, 1);
    dst_blocks = FragmentedBlocks(blocks, geometry.num_blocks, 2);
  } else {
    src_blocks.Append(0, blocks);
    dst_blocks.Append(0, blocks);
  }
  const uint64_t bytes = uint64_t{blocks} * layout.block_bytes();

  TransferPlanRequest request;
  request.src_layout = &layout;
  request.src_blocks = src_blocks;
  request.dst_layout = &layout;
  request.dst_blocks = dst_blocks;
  request.num_tokens = tokens;

  std::atomic<bool> stop_drainer{false};
  std::thread drainer;
  if (mode == Mode::kKvSend) {
    if (absl::Status s = MakeKvTransfers(setup, layout); !s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      return;
    }
    drainer = std::thread([&] {
      while (!stop_drainer) {
        benchmark::DoNotOptimize(setup->b_kv->Poll(absl::Milliseconds(1)));
      }
    });
  }
  const KvPiece piece = {
      .src_blocks = src_blocks, .dst_blocks = dst_blocks, .num_tokens = tokens};
  // Unique across the runs of this benchmark (the receiver remembers ids).
  static uint64_t kv_requests = 0;

  std::vector<TransferOp> ops;
  double total_seconds = 0;
  double post_seconds = 0;
  double cpu_seconds = 0;
  uint64_t calls = 0;
  int64_t iterations = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = ProcessCpuSeconds();
    if (mode == Mode::kMemcpy) {
      std::memcpy(setup->b_base, setup->a_base, bytes);
      benchmark::ClobberMemory();
      calls = 0;
    } else if (mode == Mode::kKvSend) {
      TransferHandle handle = setup->a_kv->Send(
          absl::StrCat("req-", kv_requests++), setup->peer, piece);
      const absl::Status status = handle.Wait();
      if (!status.ok()) {
        state.SkipWithError(status.ToString().c_str());
        break;
      }
      post_seconds += absl::ToDoubleSeconds(handle.stats().post_time);
      calls = handle.stats().ops;
    } else {
      ops.clear();
      if (mode == Mode::kBlockwise) {
        for (uint32_t layer = 0; layer < geometry.num_layers; ++layer) {
          for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
            for (uint64_t i = 0; i < blocks; ++i) {
              const ByteAddress s =
                  layout.TileAddress(layer, part, src_blocks.BlockAt(i));
              const ByteAddress d =
                  layout.TileAddress(layer, part, dst_blocks.BlockAt(i));
              ops.push_back({setup->a_region, s.offset, setup->b_region,
                             d.offset, layout.tile_bytes()});
            }
          }
        }
      } else if (mode == Mode::kRaw) {
        ops.push_back({setup->a_region, 0, setup->b_region, 0, bytes});
      } else {
        if (!AppendTransferPlan(request, &ops).ok()) {
          state.SkipWithError("planning failed");
          return;
        }
        for (TransferOp& op : ops) {
          op.src_region = setup->a_region;
          op.dst_region = setup->b_region;
        }
      }
      const auto planned = std::chrono::steady_clock::now();
      TransferHandle handle = setup->a->Write(setup->peer, ops);
      const absl::Status status = handle.Wait();
      if (!status.ok()) {
        state.SkipWithError(status.ToString().c_str());
        return;
      }
      post_seconds += std::chrono::duration<double>(planned - start).count() +
                      absl::ToDoubleSeconds(handle.stats().post_time);
      calls = ops.size();
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    cpu_seconds += ProcessCpuSeconds() - cpu_start;
    state.SetIterationTime(seconds);
    total_seconds += seconds;
    ++iterations;
  }
  if (drainer.joinable()) {
    stop_drainer = true;
    drainer.join();
  }
  state.counters["calls"] = static_cast<double>(calls);
  state.counters["bytes"] = static_cast<double>(bytes);
  state.counters["GBps"] =
      total_seconds > 0 ? bytes * iterations / total_seconds / 1e9 : 0;
  state.counters["post_us"] =
      iterations > 0 ? post_seconds / iterations * 1e6 : 0;
  state.counters["process_cpu_ms"] =
      iterations > 0 ? cpu_seconds / iterations * 1e3 : 0;
}

const char* ModeName(Mode mode) {
  switch (mode) {
    case Mode::kBlockwise:
      return "blockwise";
    case Mode::kLayerRuns:
      return "layer_runs";
    case Mode::kFlowkv:
      return "flowkv";
    case Mode::kFragmented:
      return "flowkv_fragmented";
    case Mode::kRaw:
      return "raw";
    case Mode::kMemcpy:
      return "memcpy";
    case Mode::kKvSend:
      return "kv_send";
  }
  return "?";
}

// Registers the benchmarks grouped by pool geometry (block_tokens), so the
// engines are rebuilt only when the pool changes.
int RegisterAll() {
  for (bool user_memory : {false, true}) {
    for (int64_t block_tokens : {16, 1}) {
      for (Mode mode :
           {Mode::kBlockwise, Mode::kLayerRuns, Mode::kFlowkv,
            Mode::kFragmented, Mode::kRaw, Mode::kMemcpy, Mode::kKvSend}) {
        for (int64_t tokens : {1024, 4096, 8192}) {
          const std::string name =
              std::string(user_memory ? "BM_TransferUserMem/"
                                      : "BM_Transfer/") +
              ModeName(mode);
          benchmark::RegisterBenchmark(
              name.c_str(),
              [mode, user_memory](benchmark::State& state) {
                RunTransfer(state, mode, user_memory);
              })
              ->Args({tokens, block_tokens})
              ->UseManualTime()
              ->Unit(benchmark::kMillisecond)
              ->MinTime(0.5);
        }
      }
    }
  }
  return 0;
}

const int registered = RegisterAll();

}  // namespace
}  // namespace flowkv

BENCHMARK_MAIN();
