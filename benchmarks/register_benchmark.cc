// SPDX-License-Identifier: Apache-2.0
// Registration cost: TransferEngine::RegisterMemory of a 1 and 4 GiB host
// region (16 GiB too when the machine has room for it) against, in the same
// run, a bare ucp_mem_map of the same bytes in a UCX context with the
// engine's features, and a ucp_mem_map split into chunks mapped on several
// threads (the "parallel registration" candidate). Engines register tens of
// GiB at start-up, so the question is how registration time grows with the
// size and whether RegisterMemory adds to UCX's own cost.
//
// The region is mapped and touched once per size, outside the timing (an
// engine registers a pool it already allocated); each iteration times one
// registration and undoes it untimed. Transports come from UCX_TLS;
// UCX_NET_DEVICES is pinned to lo.
//
//   UCX_NET_DEVICES=lo UCX_TLS=posix,cma,self,tcp build/bin/register_benchmark

#include <benchmark/benchmark.h>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <sys/mman.h>
#include <thread>
#include <ucp/api/ucp.h>
#include <vector>

#include "flowkv/transfer_engine.h"

namespace flowkv {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;

// One touched anonymous mapping per size, kept for the whole run.
struct Region {
  void* base = nullptr;
  uint64_t length = 0;
};

Region& RegionOf(uint64_t gib) {
  static Region regions[64];
  Region& region = regions[gib];
  if (region.base == nullptr) {
    region.length = gib * kGiB;
    void* p = mmap(nullptr, region.length, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return region;
    std::memset(p, 1, region.length);
    region.base = p;
  }
  return region;
}

// Bytes of memory available now (/proc/meminfo MemAvailable).
uint64_t MemAvailable() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

// A UCX context with the engine's features (lib/engine/ucx_worker.cc).
class RawContext {
 public:
  RawContext() {
    ucp_config_t* config = nullptr;
    if (ucp_config_read(nullptr, nullptr, &config) != UCS_OK) return;
    ucp_params_t params{};
    params.field_mask =
        UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
    params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
    params.mt_workers_shared = 0;
    if (ucp_init(&params, config, &context_) != UCS_OK) context_ = nullptr;
    ucp_config_release(config);
  }
  ~RawContext() {
    if (context_ != nullptr) ucp_cleanup(context_);
  }
  ucp_context_h get() const { return context_; }

 private:
  ucp_context_h context_ = nullptr;
};

ucs_status_t MemMap(ucp_context_h context, void* base, uint64_t length,
                    ucp_mem_h* memh) {
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS |
                      UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                      UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
  params.address = base;
  params.length = length;
  params.memory_type = UCS_MEMORY_TYPE_HOST;
  return ucp_mem_map(context, &params, memh);
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since)
      .count();
}

void SetCounters(benchmark::State& state, uint64_t bytes) {
  state.counters["GiB"] = static_cast<double>(bytes) / kGiB;
  state.counters["GBps"] =
      benchmark::Counter(static_cast<double>(bytes) *
                             static_cast<double>(state.iterations()) / 1e9,
                         benchmark::Counter::kIsRate);
}

void BM_RegisterFlowkv(benchmark::State& state) {
  const uint64_t gib = static_cast<uint64_t>(state.range(0));
  setenv("UCX_NET_DEVICES", "lo", 0);
  Region& region = RegionOf(gib);
  if (region.base == nullptr) {
    state.SkipWithError("mmap failed");
    return;
  }
  auto engine = TransferEngine::Create({});
  if (!engine.ok()) {
    state.SkipWithError(engine.status().ToString().c_str());
    return;
  }
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<RegionId> id =
        (*engine)->RegisterMemory(region.base, region.length);
    state.SetIterationTime(Seconds(start));
    if (!id.ok()) {
      state.SkipWithError(id.status().ToString().c_str());
      return;
    }
    if (!(*engine)->DeregisterMemory(*id).ok()) {
      state.SkipWithError("DeregisterMemory failed");
      return;
    }
  }
  SetCounters(state, region.length);
}

// ucp_mem_map of the region as `chunks` pieces, each mapped on its own
// thread (1: one call on this thread, the bare baseline).
void BM_RegisterUcx(benchmark::State& state) {
  const uint64_t gib = static_cast<uint64_t>(state.range(0));
  const uint64_t chunks = static_cast<uint64_t>(state.range(1));
  setenv("UCX_NET_DEVICES", "lo", 0);
  Region& region = RegionOf(gib);
  RawContext context;
  if (region.base == nullptr || context.get() == nullptr) {
    state.SkipWithError("mmap or ucp_init failed");
    return;
  }
  const uint64_t chunk = region.length / chunks;
  std::vector<ucp_mem_h> memh(chunks, nullptr);
  std::vector<ucs_status_t> status(chunks, UCS_OK);
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    if (chunks == 1) {
      status[0] = MemMap(context.get(), region.base, region.length, &memh[0]);
    } else {
      std::vector<std::thread> threads;
      for (uint64_t i = 0; i < chunks; ++i) {
        threads.emplace_back([&, i] {
          status[i] =
              MemMap(context.get(), static_cast<char*>(region.base) + i * chunk,
                     chunk, &memh[i]);
        });
      }
      for (std::thread& t : threads) t.join();
    }
    state.SetIterationTime(Seconds(start));
    for (uint64_t i = 0; i < chunks; ++i) {
      if (status[i] != UCS_OK) {
        state.SkipWithError(ucs_status_string(status[i]));
        return;
      }
      ucp_mem_unmap(context.get(), memh[i]);
    }
  }
  SetCounters(state, region.length);
}

int RegisterAll() {
  std::vector<int64_t> sizes = {1, 4};
  // 16 GiB only with 4 GiB to spare beside it (and the 1 + 4 GiB regions).
  if (MemAvailable() > (16 + 5 + 4) * kGiB) sizes.push_back(16);
  for (int64_t gib : sizes) {
    benchmark::RegisterBenchmark("BM_Register/flowkv", BM_RegisterFlowkv)
        ->ArgName("gib")
        ->Arg(gib)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("BM_Register/ucp_mem_map", BM_RegisterUcx)
        ->ArgNames({"gib", "threads"})
        ->Args({gib, 1})
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("BM_Register/ucp_mem_map_parallel",
                                 BM_RegisterUcx)
        ->ArgNames({"gib", "threads"})
        ->Args({gib, 4})
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
  return 0;
}

const int registered = RegisterAll();

}  // namespace
}  // namespace flowkv

BENCHMARK_MAIN();
