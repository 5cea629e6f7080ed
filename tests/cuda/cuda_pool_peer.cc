// SPDX-License-Identifier: Apache-2.0
// The exporting side of the two-process CUDA pool tests
// (tests/cuda/cuda_pool_memory_test.cc) and the IPC benchmark: allocates a
// CudaPoolMemory, fills it and serves line commands on stdin.
//
//   cuda_pool_peer --device D --region_bytes B [--regions N] [--seed S]
//                  [--suballocate 1]
//
// --suballocate 1: every region lies inside one cudaMalloc allocation, 4 KiB
// after the previous one ends (as a caching allocator hands out memory), so
// that the importer must place regions at their offsets.
//
// Prints "DESCRIPTOR <hex>" once the pool is filled with pattern S
// (tests/support/cuda_pool_pattern.h; S = 0: zeros), then answers:
//   HASH <region>      -> "HASH <fnv-1a of the region's bytes>"
//   FILL <seed>        -> "FILLED" (every region refilled with that pattern)
//   EXIT               -> exits 0
// Errors print "ERROR <message>" and exit 1.

#include <cstdint>
#include <cstdio>
#include <cuda_runtime_api.h>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "flowkv/cuda/cuda_pool_memory.h"
#include "tests/support/cuda_pool_pattern.h"

namespace {

int Fail(const std::string& message) {
  std::printf("ERROR %s\n", message.c_str());
  std::fflush(stdout);
  return 1;
}

bool Fill(flowkv::cuda::CudaPoolMemory& pool, uint32_t seed) {
  for (uint32_t r = 0; r < pool.num_regions(); ++r) {
    if (seed == 0) {  // zeros, fast (large benchmark pools)
      if (cudaMemset(pool.region_base(r), 0, pool.region_bytes(r)) !=
          cudaSuccess) {
        return false;
      }
      continue;
    }
    const std::vector<std::byte> bytes =
        flowkv::testing::Pattern(seed, r, pool.region_bytes(r));
    if (cudaMemcpy(pool.region_base(r), bytes.data(), bytes.size(),
                   cudaMemcpyHostToDevice) != cudaSuccess) {
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int device = 0;
  uint64_t region_bytes = 1 << 20;
  uint32_t regions = 1;
  uint32_t seed = 1;
  bool suballocate = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const uint64_t value = std::stoull(argv[i + 1]);
    if (flag == "--device") device = static_cast<int>(value);
    if (flag == "--region_bytes") region_bytes = value;
    if (flag == "--regions") regions = static_cast<uint32_t>(value);
    if (flag == "--seed") seed = static_cast<uint32_t>(value);
    if (flag == "--suballocate") suballocate = value != 0;
  }
  if (cudaSetDevice(device) != cudaSuccess) return Fail("cudaSetDevice");
  const std::vector<uint64_t> sizes(regions, region_bytes);
  absl::StatusOr<std::unique_ptr<flowkv::cuda::CudaPoolMemory>> pool;
  if (suballocate) {
    // Freed when the process exits.
    constexpr uint64_t kGap = 4096;
    void* allocation = nullptr;
    if (cudaMalloc(&allocation, regions * (region_bytes + kGap)) !=
        cudaSuccess) {
      return Fail("cudaMalloc");
    }
    std::vector<void*> bases;
    for (uint32_t r = 0; r < regions; ++r) {
      bases.push_back(static_cast<std::byte*>(allocation) + kGap +
                      r * (region_bytes + kGap));
    }
    pool = flowkv::cuda::CudaPoolMemory::Create(device, bases, sizes);
  } else {
    pool = flowkv::cuda::CudaPoolMemory::Allocate(device, sizes);
  }
  if (!pool.ok()) return Fail(pool.status().ToString());
  if (!Fill(**pool, seed)) return Fail("filling the pool");
  std::string hex;
  for (const char c : (*pool)->ShareDescriptor()) {
    char pair[3];
    std::snprintf(pair, sizeof(pair), "%02x", static_cast<uint8_t>(c));
    hex += pair;
  }
  std::printf("DESCRIPTOR %s\n", hex.c_str());
  std::fflush(stdout);

  std::string command;
  while (std::cin >> command) {
    if (command == "HASH") {
      uint32_t region = 0;
      std::cin >> region;
      if (region >= (*pool)->num_regions()) return Fail("bad region");
      std::vector<std::byte> bytes((*pool)->region_bytes(region));
      if (cudaMemcpy(bytes.data(), (*pool)->region_base(region), bytes.size(),
                     cudaMemcpyDeviceToHost) != cudaSuccess) {
        return Fail("reading the pool");
      }
      std::printf("HASH %llu\n", static_cast<unsigned long long>(
                                     flowkv::testing::HashBytes(bytes)));
    } else if (command == "FILL") {
      uint32_t fill_seed = 0;
      std::cin >> fill_seed;
      if (!Fill(**pool, fill_seed)) return Fail("filling the pool");
      std::printf("FILLED\n");
    } else if (command == "EXIT") {
      return 0;
    } else {
      return Fail("unknown command " + command);
    }
    std::fflush(stdout);
  }
  return 0;
}
