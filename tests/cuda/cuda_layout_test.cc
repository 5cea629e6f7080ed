// SPDX-License-Identifier: Apache-2.0
// GPU tests of flowkv::cuda: every kernel's output is compared byte for byte
// with the CPU reference (flowkv/layout_convert.h) on random data. Without a
// GPU the device tests print "SKIP_NO_GPU" (CTest reports them as skipped)
// and only the host-side validation is tested.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>
#include <initializer_list>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/block_list.h"
#include "flowkv/cuda/layout_kernels.h"
#include "flowkv/kv_layout.h"
#include "flowkv/layout_convert.h"
#include "tests/support/cuda_test_util.h"
#include "tests/support/layout_test_util.h"

namespace flowkv {
namespace {

using testing::AllLayouts;
using testing::MakeLayout;
using testing::RandomBlocks;

BlockList Runs(std::initializer_list<BlockRun> runs) {
  return BlockList::FromRuns(runs);
}

// A region of device memory; the usable bytes start `offset` bytes into the
// allocation (to test unaligned bases).
class DeviceRegion {
 public:
  DeviceRegion(uint64_t bytes, uint64_t offset) : bytes_(bytes) {
    CUDA_REQUIRE(cudaMalloc(&allocation_, bytes + offset));
    data_ = static_cast<std::byte*>(allocation_) + offset;
  }
  DeviceRegion(const DeviceRegion&) = delete;
  DeviceRegion& operator=(const DeviceRegion&) = delete;
  ~DeviceRegion() { cudaFree(allocation_); }

  std::byte* data() const { return data_; }
  void Upload(const std::vector<std::byte>& host) const {
    REQUIRE(host.size() == bytes_);
    CUDA_REQUIRE(cudaMemcpy(data_, host.data(), bytes_, cudaMemcpyDefault));
  }
  std::vector<std::byte> Download() const {
    std::vector<std::byte> host(bytes_);
    CUDA_REQUIRE(cudaMemcpy(host.data(), data_, bytes_, cudaMemcpyDefault));
    return host;
  }

 private:
  void* allocation_ = nullptr;
  std::byte* data_ = nullptr;
  uint64_t bytes_ = 0;
};

// The same random pool on the host and on the device.
struct Pools {
  Pools(const KvLayout& layout, uint64_t offset, std::mt19937& rng) {
    for (uint32_t r = 0; r < layout.num_regions(); ++r) {
      std::vector<std::byte>& host =
          host_regions.emplace_back(layout.region_bytes(r));
      for (std::byte& b : host) b = static_cast<std::byte>(rng());
      device_regions.push_back(
          std::make_unique<DeviceRegion>(layout.region_bytes(r), offset));
      device_regions.back()->Upload(host);
    }
  }
  std::vector<const void*> HostConst() const {
    std::vector<const void*> bases;
    for (const auto& r : host_regions) bases.push_back(r.data());
    return bases;
  }
  std::vector<void*> Host() {
    std::vector<void*> bases;
    for (auto& r : host_regions) bases.push_back(r.data());
    return bases;
  }
  std::vector<const void*> DeviceConst() const {
    std::vector<const void*> bases;
    for (const auto& r : device_regions) bases.push_back(r->data());
    return bases;
  }
  std::vector<void*> Device() const {
    std::vector<void*> bases;
    for (const auto& r : device_regions) bases.push_back(r->data());
    return bases;
  }
  // Every device region equals its host region.
  bool DeviceMatchesHost() const {
    for (size_t r = 0; r < host_regions.size(); ++r) {
      if (device_regions[r]->Download() != host_regions[r]) return false;
    }
    return true;
  }

  std::vector<std::vector<std::byte>> host_regions;
  std::vector<std::unique_ptr<DeviceRegion>> device_regions;
};

class StreamHolder {
 public:
  StreamHolder() { CUDA_REQUIRE(cudaStreamCreate(&stream_)); }
  StreamHolder(const StreamHolder&) = delete;
  StreamHolder& operator=(const StreamHolder&) = delete;
  ~StreamHolder() { cudaStreamDestroy(stream_); }
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// Converts on the device and on the host (CPU reference) and compares every
// destination byte.
void CompareConvert(const KvLayout& src_layout, const BlockList& src_blocks,
                    const KvLayout& dst_layout, const BlockList& dst_blocks,
                    uint64_t offset, cudaStream_t stream, std::mt19937& rng) {
  INFO(src_layout.ToString()
       << " " << src_blocks.ToString() << " -> " << dst_layout.ToString() << " "
       << dst_blocks.ToString() << ", offset " << offset);
  const Pools src(src_layout, offset, rng);
  Pools dst(dst_layout, offset, rng);
  const absl::Status device =
      cuda::ConvertBlocksAsync(src_layout, src.DeviceConst(), src_blocks,
                               dst_layout, dst.Device(), dst_blocks, stream);
  REQUIRE(device.ok());
  CUDA_REQUIRE(cudaStreamSynchronize(stream));
  REQUIRE(ConvertBlocks(src_layout, src.HostConst(), src_blocks, dst_layout,
                        dst.Host(), dst_blocks)
              .ok());
  CHECK(dst.DeviceMatchesHost());
  CHECK(src.DeviceMatchesHost());  // the source is not written
}

const KvGeometry kOdd = {.num_layers = 3,  // head vectors of 10 bytes
                         .num_blocks = 7,
                         .block_tokens = 3,
                         .kv_heads = 2,
                         .head_dim = 5,
                         .dtype_bytes = 2};
const KvGeometry kWide = {.num_layers = 4,  // head vectors of 128 bytes
                          .num_blocks = 12,
                          .block_tokens = 16,
                          .kv_heads = 4,
                          .head_dim = 64,
                          .dtype_bytes = 2};

TEST_CASE("ConvertBlocksAsync matches the CPU reference for all layout pairs",
          "[cuda]") {
  FLOWKV_SKIP_WITHOUT_GPU();
  std::mt19937 rng(42);
  StreamHolder stream;
  for (const KvGeometry& geometry : {kOdd, kWide}) {
    KvGeometry dst_geometry = geometry;
    dst_geometry.num_blocks = geometry.num_blocks + 2;
    for (const KvLayout& src_layout : AllLayouts(geometry)) {
      for (const KvLayout& dst_layout : AllLayouts(dst_geometry)) {
        const uint32_t count = geometry.num_blocks - 2;
        CompareConvert(
            src_layout, RandomBlocks(geometry.num_blocks, count, rng),
            dst_layout, RandomBlocks(dst_geometry.num_blocks, count, rng), 0,
            stream.get(), rng);
      }
    }
  }
}

TEST_CASE("ConvertBlocksAsync matches the CPU reference for strided layouts",
          "[cuda]") {
  FLOWKV_SKIP_WITHOUT_GPU();
  std::mt19937 rng(77);
  std::mt19937_64 layout_rng(78);
  StreamHolder stream;
  // Random strided layouts (padding, any order, K/V packed per head, one
  // region per tensor) against every preset, and one-part (MLA) pools.
  for (int iter = 0; iter < 40; ++iter) {
    KvGeometry g = iter % 2 ? kWide : kOdd;
    g.num_parts = iter % 4 < 2 ? 2 : 1;
    if (g.num_parts == 1) g.kv_heads = 1;
    const KvLayout src = testing::RandomStridedLayout(g, layout_rng);
    const std::vector<KvLayout> presets = AllLayouts(g);
    const KvLayout dst = presets[iter % presets.size()];
    const uint32_t count = g.num_blocks - 2;
    CompareConvert(src, RandomBlocks(g.num_blocks, count, rng), dst,
                   RandomBlocks(g.num_blocks, count, rng), 0, stream.get(),
                   rng);
    CompareConvert(dst, RandomBlocks(g.num_blocks, count, rng), src,
                   RandomBlocks(g.num_blocks, count, rng), 0, stream.get(),
                   rng);
  }
}

TEST_CASE("ConvertBlocksAsync handles unaligned region bases", "[cuda]") {
  FLOWKV_SKIP_WITHOUT_GPU();
  std::mt19937 rng(3);
  StreamHolder stream;
  const KvLayout vllm = MakeLayout(kWide, PoolOrder::kLayerMajor,
                                   BlockOrder::kNHD, RegionSplit::kOnePerLayer);
  const KvLayout flowkv_hnd =
      MakeLayout(kWide, PoolOrder::kBlockMajor, BlockOrder::kHND,
                 RegionSplit::kOnePerPool);
  const KvLayout packed =
      testing::Must(KvLayout::Vllm(kWide, VllmKvLayout::kLBHNC));
  for (uint64_t offset : {1u, 2u, 4u, 8u, 16u}) {
    CompareConvert(packed, RandomBlocks(12, 9, rng), flowkv_hnd,
                   RandomBlocks(12, 9, rng), offset, stream.get(), rng);
    CompareConvert(vllm, RandomBlocks(12, 9, rng), flowkv_hnd,
                   RandomBlocks(12, 9, rng), offset, stream.get(), rng);
    CompareConvert(flowkv_hnd, RandomBlocks(12, 9, rng), vllm,
                   RandomBlocks(12, 9, rng), offset, stream.get(), rng);
  }
}

TEST_CASE("ConvertBlocksAsync splits long block lists over launches",
          "[cuda]") {
  FLOWKV_SKIP_WITHOUT_GPU();
  std::mt19937 rng(5);
  const KvGeometry g = {.num_layers = 2,
                        .num_blocks = 5000,
                        .block_tokens = 2,
                        .kv_heads = 2,
                        .head_dim = 2,
                        .dtype_bytes = 2};
  const KvLayout src = MakeLayout(g, PoolOrder::kLayerMajor, BlockOrder::kNHD,
                                  RegionSplit::kOnePerPool);
  const KvLayout dst = MakeLayout(g, PoolOrder::kBlockMajor, BlockOrder::kHND,
                                  RegionSplit::kOnePerPool);
  // More than two launches' worth, on the legacy default stream.
  CompareConvert(src, RandomBlocks(5000, 4999, rng), dst,
                 RandomBlocks(5000, 4999, rng), 0, nullptr, rng);
}

TEST_CASE("PackBlocksAsync and UnpackBlocksAsync match the CPU reference",
          "[cuda]") {
  FLOWKV_SKIP_WITHOUT_GPU();
  std::mt19937 rng(9);
  StreamHolder stream;
  for (const KvLayout& layout : AllLayouts(kWide)) {
    INFO(layout.ToString());
    const BlockList blocks = RandomBlocks(12, 7, rng);
    const uint64_t staging_bytes = PackedBytes(layout, blocks);
    Pools pool(layout, 0, rng);
    DeviceRegion staging(staging_bytes, 0);
    REQUIRE(cuda::PackBlocksAsync(layout, pool.DeviceConst(), blocks,
                                  staging.data(), staging_bytes, stream.get())
                .ok());
    CUDA_REQUIRE(cudaStreamSynchronize(stream.get()));
    std::vector<std::byte> host_staging(staging_bytes);
    REQUIRE(PackBlocks(layout, pool.HostConst(), blocks, host_staging.data(),
                       staging_bytes)
                .ok());
    CHECK(staging.Download() == host_staging);

    // Unpack into a fresh pool at other blocks.
    Pools dst(layout, 0, rng);
    const BlockList dst_blocks = RandomBlocks(12, 7, rng);
    REQUIRE(cuda::UnpackBlocksAsync(staging.data(), staging_bytes, layout,
                                    dst.Device(), dst_blocks, stream.get())
                .ok());
    CUDA_REQUIRE(cudaStreamSynchronize(stream.get()));
    REQUIRE(UnpackBlocks(host_staging.data(), staging_bytes, layout, dst.Host(),
                         dst_blocks)
                .ok());
    CHECK(dst.DeviceMatchesHost());
  }
}

// Host-side validation: runs with or without a GPU, since nothing is
// launched (the pointers are never dereferenced).
TEST_CASE("ConvertBlocksAsync validates like the CPU reference", "[cuda]") {
  const KvLayout a = MakeLayout(kOdd, PoolOrder::kBlockMajor, BlockOrder::kNHD,
                                RegionSplit::kOnePerPool);
  KvGeometry other = kOdd;
  other.head_dim = 6;
  const KvLayout b = MakeLayout(other, PoolOrder::kBlockMajor, BlockOrder::kNHD,
                                RegionSplit::kOnePerPool);
  std::byte fake[1];
  const void* src_base = fake;
  void* dst_base = fake + 1;
  absl::Status st =
      cuda::ConvertBlocksAsync(a, {&src_base, 1}, Runs({{0, 1}}), b,
                               {&dst_base, 1}, Runs({{0, 1}}), nullptr);
  CHECK(st.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(st.message()), Catch::Contains("head_dim"));

  st = cuda::ConvertBlocksAsync(a, {&src_base, 1}, Runs({{6, 2}}), a,
                                {&dst_base, 1}, Runs({{0, 2}}), nullptr);
  CHECK(st.code() == absl::StatusCode::kOutOfRange);

  // Empty lists: OK, nothing launched.
  CHECK(cuda::ConvertBlocksAsync(a, {&src_base, 1}, BlockList(), a,
                                 {&dst_base, 1}, BlockList(), nullptr)
            .ok());

  // More tensors than a launch can carry.
  KvGeometry deep = kOdd;
  deep.num_layers = cuda::kMaxTensors / 2 + 1;
  const KvLayout per_layer =
      MakeLayout(deep, PoolOrder::kLayerMajor, BlockOrder::kNHD,
                 RegionSplit::kOnePerLayer);
  const KvLayout block_major = MakeLayout(
      deep, PoolOrder::kBlockMajor, BlockOrder::kNHD, RegionSplit::kOnePerPool);
  const std::vector<const void*> many(per_layer.num_regions(), src_base);
  st = cuda::ConvertBlocksAsync(per_layer, many, Runs({{0, 1}}), block_major,
                                {&dst_base, 1}, Runs({{0, 1}}), nullptr);
  CHECK(st.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(st.message()), Catch::Contains("tensors"));

  st = cuda::PackBlocksAsync(a, {&src_base, 1}, Runs({{0, 2}}), dst_base,
                             a.block_bytes(), nullptr);
  CHECK(st.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(st.message()), Catch::Contains("staging_bytes"));
}

TEST_CASE("ConvertBlocksAsync without a GPU fails with FailedPrecondition",
          "[cuda]") {
  int count = 0;
  if (cudaGetDeviceCount(&count) == cudaSuccess && count > 0) {
    SUCCEED("a GPU is present: nothing to test");
    return;
  }
  const KvLayout a = MakeLayout(kOdd, PoolOrder::kBlockMajor, BlockOrder::kNHD,
                                RegionSplit::kOnePerPool);
  std::byte fake[2];
  const void* src_base = fake;
  void* dst_base = fake + 1;
  const absl::Status st =
      cuda::ConvertBlocksAsync(a, {&src_base, 1}, Runs({{0, 1}}), a,
                               {&dst_base, 1}, Runs({{1, 1}}), nullptr);
  INFO(st.ToString());
  CHECK(st.code() == absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace flowkv
