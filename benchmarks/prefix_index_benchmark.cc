// SPDX-License-Identifier: Apache-2.0
// PrefixIndex cost at router scale: a million cached blocks over 64 or
// 1,024 nodes (8000-token prompts of 16-token blocks, a 512-token system
// prompt shared by all, each conversation cached on two nodes).
//
//   BM_PrefixIndex/Match/<nodes>     one request's per-node prefix lookup
//                                    (its chain extends a cached one)
//   BM_PrefixIndex/Event/<nodes>     one Stored or Removed event of 16 blocks
//   BM_PrefixIndex/Place/<nodes>     a whole kv_aware placement with the
//                                    index, for comparison
//
//   build/bin/prefix_index_benchmark

#include <benchmark/benchmark.h>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "absl/time/time.h"
#include "flowkv/prefix_index.h"
#include "flowkv/scheduler.h"

namespace flowkv {
namespace {

constexpr uint32_t kChainBlocks = 500;  // 8000 tokens
constexpr uint32_t kSharedBlocks = 32;  // the system prompt
constexpr uint64_t kTargetBlocks = 1'000'000;
const absl::Time kNow = absl::FromUnixSeconds(1'000'000);

uint64_t BlockHash(uint64_t chain, uint32_t i) {
  return i < kSharedBlocks ? i : (chain << 20) | i;
}

std::vector<uint64_t> Chain(uint64_t chain, uint32_t blocks) {
  std::vector<uint64_t> out(blocks);
  for (uint32_t i = 0; i < blocks; ++i) out[i] = BlockHash(chain, i);
  return out;
}

struct Fixture {
  ClusterView cluster;
  uint64_t chains = 0;
  std::vector<uint64_t> seq;
};

// Built once per node count (a million blocks take a while).
Fixture& Get(int num_nodes) {
  static std::map<int, std::unique_ptr<Fixture>> cache;
  auto& f = cache[num_nodes];
  if (f) return *f;
  f = std::make_unique<Fixture>();
  f->seq.assign(num_nodes, 0);
  for (int i = 0; i < num_nodes; ++i) {
    NodeInfo node;
    node.id = static_cast<NodeId>(i);
    node.role = i % 2 == 0 ? NodeRole::kPrefill : NodeRole::kDecode;
    if (!f->cluster.AddNode(node).ok()) std::abort();
  }
  PrefixIndex& index = f->cluster.prefix_index();
  std::mt19937_64 rng(5);
  for (uint64_t c = 1; index.total_blocks() < kTargetBlocks; ++c) {
    const std::vector<uint64_t> chain = Chain(c, kChainBlocks);
    for (int copy = 0; copy < 2; ++copy) {
      const NodeId node = static_cast<NodeId>(rng() % num_nodes);
      if (!index.ApplyStored(node, ++f->seq[node], chain).ok()) std::abort();
    }
    f->chains = c;
  }
  return *f;
}

void BM_Match(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  std::mt19937_64 rng(9);
  std::vector<std::vector<uint64_t>> requests;
  for (int i = 0; i < 256; ++i) {
    std::vector<uint64_t> r = Chain(1 + rng() % f.chains, kChainBlocks);
    for (uint32_t k = 0; k < 100; ++k) r.push_back((uint64_t{1} << 60) + k);
    requests.push_back(std::move(r));
  }
  std::vector<PrefixMatch> out;
  size_t i = 0, matched = 0;
  for (auto _ : state) {
    f.cluster.prefix_index().Match(requests[i++ & 255], &out);
    matched += out.size();
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["nodes"] = static_cast<double>(state.range(0));
  state.counters["cached_blocks"] =
      static_cast<double>(f.cluster.prefix_index().total_blocks());
  state.counters["nodes_matched"] = benchmark::Counter(
      static_cast<double>(matched), benchmark::Counter::kAvgIterations);
}

void BM_Event(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  PrefixIndex& index = f.cluster.prefix_index();
  const NodeId node = 0;
  const std::vector<uint64_t> blocks = Chain(f.chains + 1, kSharedBlocks + 16);
  const std::vector<uint64_t> event(blocks.begin() + kSharedBlocks,
                                    blocks.end());
  bool store = true;
  for (auto _ : state) {
    absl::Status s = store ? index.ApplyStored(node, ++f.seq[node], event)
                           : index.ApplyRemoved(node, ++f.seq[node], event);
    if (!s.ok()) std::abort();
    store = !store;
  }
  state.counters["nodes"] = static_cast<double>(state.range(0));
  state.counters["blocks_per_event"] = static_cast<double>(event.size());
}

void BM_Place(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  auto scheduler = CreateScheduler("kv_aware", {});
  if (!scheduler.ok()) std::abort();
  std::mt19937_64 rng(9);
  std::vector<std::vector<uint64_t>> chains;
  for (int i = 0; i < 256; ++i) {
    chains.push_back(Chain(1 + rng() % f.chains, kChainBlocks));
  }
  size_t i = 0;
  for (auto _ : state) {
    const std::vector<uint64_t>& chain = chains[i++ & 255];
    absl::StatusOr<Placement> where =
        (*scheduler)
            ->Place({.input_tokens = 8000, .block_hashes = chain}, f.cluster,
                    kNow);
    benchmark::DoNotOptimize(where);
  }
  state.counters["nodes"] = static_cast<double>(state.range(0));
}

BENCHMARK(BM_Match)->Name("BM_PrefixIndex/Match")->Arg(64)->Arg(1024);
BENCHMARK(BM_Event)->Name("BM_PrefixIndex/Event")->Arg(64)->Arg(1024);
BENCHMARK(BM_Place)->Name("BM_PrefixIndex/Place")->Arg(64)->Arg(1024);

}  // namespace
}  // namespace flowkv

BENCHMARK_MAIN();
