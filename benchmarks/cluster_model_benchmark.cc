// SPDX-License-Identifier: Apache-2.0
// flowkv-cluster's model (tools/cluster/model/model.h) on this CPU: prefill
// throughput and decode step time at a few lengths, with OpenBLAS and with
// the plain loops in the same run (when the build has BLAS), both on one
// thread.
//
//   build/bin/cluster_model_benchmark
//
// BM_Prefill/<backend>/<prompt tokens>: tokens_per_s, ms per prompt.
// BM_DecodeBatch/<batch>/<context>: one DecodeBatch of <batch> requests at
// about <context> tokens each: time per iteration and per request,
// tokens_per_s.

#include <benchmark/benchmark.h>
#include <map>
#include <memory>
#include <vector>

#include "tools/cluster/model/model.h"

namespace flowkv::cluster {
namespace {

const Model& ModelFor(MatmulBackend backend) {
  static auto* models = new std::map<MatmulBackend, std::unique_ptr<Model>>();
  auto it = models->find(backend);
  if (it == models->end()) {
    ModelConfig config;
    config.backend = backend;
    it = models->emplace(backend, std::move(Model::Create(config).value()))
             .first;
  }
  return *it->second;
}

struct Pool {
  explicit Pool(const Model& model, int positions)
      : layout(MakeKvLayout(model.config(), KvPreset::kFlowKvBlockMajor,
                            (positions + 15) / 16, 16)
                   .value()),
        memory(HostKvPool::Create(layout).value()),
        kv{.layout = &layout,
           .region_bases = memory.bases(),
           .blocks = BlockList{{0, layout.geometry().num_blocks}}} {}
  KvLayout layout;
  HostKvPool memory;
  PagedKv kv;
};

std::vector<int> Prompt(int length) {
  std::vector<int> prompt(length);
  for (int i = 0; i < length; ++i) prompt[i] = (i * 31 + 7) % 256;
  return prompt;
}

MatmulBackend BackendArg(const benchmark::State& state) {
  return state.range(0) == 0 ? MatmulBackend::kLoops : MatmulBackend::kBlas;
}

void BM_Prefill(benchmark::State& state) {
  const Model& model = ModelFor(BackendArg(state));
  const int length = static_cast<int>(state.range(1));
  Pool pool(model, length);
  const std::vector<int> prompt = Prompt(length);
  for (auto _ : state) {
    benchmark::DoNotOptimize(model.Prefill(prompt, pool.kv, nullptr).value());
  }
  state.SetLabel(std::string(MatmulBackendName(model.backend())));
  state.counters["tokens_per_s"] =
      benchmark::Counter(static_cast<double>(length),
                         benchmark::Counter::kIsIterationInvariantRate);
}

// A decode iteration of `batch` requests, each at about `context` tokens,
// each in its own blocks of one pool. Decode always runs the loop products
// (model.h, "Exactness"), so there is no backend argument.
void BM_DecodeBatch(benchmark::State& state) {
  const Model& model = ModelFor(MatmulBackend::kAuto);
  const int batch_size = static_cast<int>(state.range(0));
  const int context = static_cast<int>(state.range(1));
  const int max_steps = 32;
  const uint32_t blocks_per_request = (context + max_steps + 15) / 16;
  const KvLayout layout =
      MakeKvLayout(model.config(), KvPreset::kFlowKvBlockMajor,
                   blocks_per_request * batch_size, 16)
          .value();
  HostKvPool memory = HostKvPool::Create(layout).value();
  std::vector<PagedKv> kvs;
  for (int i = 0; i < batch_size; ++i) {
    kvs.push_back(PagedKv{
        .layout = &layout,
        .region_bases = memory.bases(),
        .blocks = BlockList{{i * blocks_per_request, blocks_per_request}}});
  }
  // The first request's real prompt (the others attend over zeros: the
  // time does not depend on the values).
  std::vector<int> tokens(
      batch_size, model.Prefill(Prompt(context), kvs[0], nullptr).value());
  std::vector<DecodeRequest> batch(batch_size);
  int step = 0;
  for (auto _ : state) {
    for (int i = 0; i < batch_size; ++i) {
      batch[i] = {.token = tokens[i], .pos = context + step, .kv = &kvs[i]};
    }
    tokens = model.DecodeBatch(batch).value();
    step = (step + 1) % max_steps;
  }
  state.counters["time_per_request"] = benchmark::Counter(
      batch_size, benchmark::Counter::kIsIterationInvariantRate |
                      benchmark::Counter::kInvert);
  state.counters["tokens_per_s"] = benchmark::Counter(
      batch_size, benchmark::Counter::kIsIterationInvariantRate);
}

void Backends(benchmark::internal::Benchmark* b,
              const std::vector<int64_t>& lengths) {
  std::vector<int64_t> backends = {0};
  if (BlasAvailable()) backends.push_back(1);
  b->ArgNames({"blas", "tokens"});
  for (int64_t backend : backends) {
    for (int64_t length : lengths) b->Args({backend, length});
  }
  b->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_Prefill)->Apply([](benchmark::internal::Benchmark* b) {
  Backends(b, {32, 128, 512});
});
BENCHMARK(BM_DecodeBatch)
    ->ArgNames({"batch", "context"})
    ->ArgsProduct({{1, 4, 16}, {64, 512, 2048}})
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace flowkv::cluster

BENCHMARK_MAIN();
