// SPDX-License-Identifier: Apache-2.0
// flowkv-cluster's model (tools/cluster/model/model.h) on this CPU: prefill
// throughput and decode step time at a few lengths, with OpenBLAS and with
// the plain loops in the same run (when the build has BLAS), both on one
// thread.
//
//   build/bin/cluster_model_benchmark
//
// BM_Prefill/<backend>/<prompt tokens>: tokens_per_s, ms per prompt.
// BM_DecodeStep/<backend>/<context>: ms per step (one request, one token)
// after a prompt of <context> tokens.

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
        memory(layout),
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

void BM_DecodeStep(benchmark::State& state) {
  const Model& model = ModelFor(BackendArg(state));
  const int context = static_cast<int>(state.range(1));
  const int max_steps = 64;
  Pool pool(model, context + max_steps);
  const std::vector<int> prompt = Prompt(context);
  int token = model.Prefill(prompt, pool.kv, nullptr).value();
  int step = 0;
  for (auto _ : state) {
    // Cycle over max_steps positions: the context stays near `context`.
    token = model.DecodeStep(token, context + step, pool.kv).value();
    step = (step + 1) % max_steps;
  }
  state.SetLabel(std::string(MatmulBackendName(model.backend())));
  state.counters["steps_per_s"] =
      benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
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
BENCHMARK(BM_DecodeStep)->Apply([](benchmark::internal::Benchmark* b) {
  Backends(b, {64, 512, 2048});
});

}  // namespace
}  // namespace flowkv::cluster

BENCHMARK_MAIN();
