// SPDX-License-Identifier: Apache-2.0
// Tests of flowkv::cuda::CudaPoolMemory (include/flowkv/cuda/
// cuda_pool_memory.h): Gather / Scatter between device pools and host
// memory byte for byte, ordering after a caller's event, bad input, and CUDA
// IPC between this process and tests/cuda/cuda_pool_peer (two processes;
// regions that start their allocations or lie inside one; a killed exporter).
// Without a GPU the device cases print "SKIP_NO_GPU" (CTest reports them as
// skipped); argument checks and the share descriptor's wire form are tested
// either way.

#include "flowkv/cuda/cuda_pool_memory.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <cuda_runtime_api.h>
#include <future>
#include <memory>
#include <random>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/status/status.h"
#include "cuda/ipc_descriptor.h"
#include "tests/support/cuda_peer_process.h"
#include "tests/support/cuda_pool_pattern.h"
#include "tests/support/cuda_test_util.h"

namespace flowkv {
namespace {

using cuda::CudaPoolMemory;
using cuda::CudaPoolOptions;
using testing::CudaPeerProcess;
using testing::HashBytes;
using testing::Pattern;

// Collects a batch's outcome; Wait() returns it (called once).
class DoneWaiter {
 public:
  PoolCopyDone Callback() {
    return
        [this](absl::Status status) { promise_.set_value(std::move(status)); };
  }
  absl::Status Wait() { return promise_.get_future().get(); }

 private:
  std::promise<absl::Status> promise_;
};

absl::Status GatherSync(KvPoolMemory& pool, std::vector<PoolHostCopy> copies,
                        void* after = nullptr) {
  DoneWaiter waiter;
  pool.Gather(std::move(copies), after, waiter.Callback());
  return waiter.Wait();
}

absl::Status ScatterSync(KvPoolMemory& pool, std::vector<PoolHostCopy> copies) {
  DoneWaiter waiter;
  pool.Scatter(std::move(copies), waiter.Callback());
  return waiter.Wait();
}

std::vector<std::byte> Download(const KvPoolMemory& pool, uint32_t region) {
  std::vector<std::byte> bytes(pool.region_bytes(region));
  CUDA_REQUIRE(cudaMemcpy(bytes.data(), pool.region_base(region), bytes.size(),
                          cudaMemcpyDeviceToHost));
  return bytes;
}

void Upload(KvPoolMemory& pool, uint32_t region,
            const std::vector<std::byte>& bytes) {
  REQUIRE(bytes.size() == pool.region_bytes(region));
  CUDA_REQUIRE(cudaMemcpy(pool.region_base(region), bytes.data(), bytes.size(),
                          cudaMemcpyHostToDevice));
}

std::unique_ptr<CudaPoolMemory> MakePool(std::vector<uint64_t> sizes,
                                         CudaPoolOptions options = {}) {
  auto pool = CudaPoolMemory::Allocate(0, std::move(sizes), options);
  INFO(pool.status().ToString());
  REQUIRE(pool.ok());
  return *std::move(pool);
}

// Random runs of the pool, packed back to back into host memory.
std::vector<PoolHostCopy> RandomRuns(const KvPoolMemory& pool, std::byte* host,
                                     uint64_t host_bytes, std::mt19937& rng) {
  std::vector<PoolHostCopy> copies;
  uint64_t used = 0;
  while (true) {
    const uint32_t region = rng() % pool.num_regions();
    const uint64_t length = 1 + rng() % 5000;
    if (used + length > host_bytes) break;
    const uint64_t offset = rng() % (pool.region_bytes(region) - length);
    copies.push_back({region, offset, host + used, length});
    used += length + rng() % 3;
  }
  return copies;
}

TEST_CASE("CudaPoolMemory rejects bad arguments before touching the GPU",
          "[cuda]") {
  int word = 0;
  auto mismatched = CudaPoolMemory::Create(0, {&word, &word}, {4});
  CHECK(mismatched.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(mismatched.status().message().find("2 bases and 1 sizes") !=
        std::string::npos);
  CHECK(CudaPoolMemory::Create(0, {}, {}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  auto zero = CudaPoolMemory::Allocate(0, {16, 0});
  CHECK(zero.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(zero.status().message().find("sizes[1]") != std::string::npos);

  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    // Without a GPU a well-formed call says so.
    auto no_gpu = CudaPoolMemory::Allocate(0, {4096});
    CHECK(no_gpu.status().code() == absl::StatusCode::kFailedPrecondition);
    INFO(no_gpu.status().ToString());
    CHECK(!no_gpu.ok());
  }
}

TEST_CASE("CUDA share descriptor: round trip and malformed input", "[cuda]") {
  cuda::internal::IpcDescriptor descriptor;
  descriptor.boot_id = "0d1e2f30-aaaa-bbbb-cccc-000000000001";
  descriptor.pid = 4242;
  descriptor.device_uuid[3] = 7;
  for (int r = 0; r < 3; ++r) {
    cuda::internal::IpcRegion region;
    region.size = 1000 + r;
    region.address = 0x7f0000000000ull + r;
    region.offset = 512 * r;  // regions 1 and 2 lie inside one allocation
    region.allocation_bytes = 4096;
    region.handle[r == 0 ? 0 : 1] = 'h';
    descriptor.regions.push_back(region);
  }
  const std::string bytes = cuda::internal::EncodeIpcDescriptor(descriptor);
  auto parsed = cuda::internal::ParseIpcDescriptor(bytes);
  REQUIRE(parsed.ok());
  CHECK(parsed->boot_id == descriptor.boot_id);
  CHECK(parsed->pid == 4242);
  CHECK(parsed->device_uuid == descriptor.device_uuid);
  REQUIRE(parsed->regions.size() == 3);
  CHECK(parsed->regions[2].size == 1002);
  CHECK(parsed->regions[2].address == 0x7f0000000002ull);
  CHECK(parsed->regions[2].offset == 1024);
  CHECK(parsed->regions[2].allocation_bytes == 4096);
  CHECK(parsed->regions[2].handle == descriptor.regions[2].handle);
  CHECK(parsed->regions[1].handle == parsed->regions[2].handle);

  // A region that leaves its allocation is refused, naming the region.
  for (const auto& [offset, allocation] :
       std::vector<std::pair<uint64_t, uint64_t>>{
           {4096 - 1000, 4096}, {5000, 4096}, {0, 1000}, {~uint64_t{0}, 0}}) {
    cuda::internal::IpcDescriptor bad = descriptor;
    bad.regions[1].offset = offset;
    bad.regions[1].allocation_bytes = allocation;
    auto refused = cuda::internal::ParseIpcDescriptor(
        cuda::internal::EncodeIpcDescriptor(bad));
    CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(refused.status().message().find("region 1") != std::string::npos);
  }
  // Another version (the byte after the magic; checksum recomputed).
  {
    std::string v1 = bytes.substr(0, bytes.size() - 8);
    v1[7] = 1;
    uint64_t hash = 0xcbf29ce484222325ull;
    for (const char c : v1) {
      hash ^= static_cast<uint8_t>(c);
      hash *= 0x100000001b3ull;
    }
    for (int i = 0; i < 8; ++i)
      v1.push_back(static_cast<char>(hash >> (8 * i)));
    auto old = cuda::internal::ParseIpcDescriptor(v1);
    CHECK(old.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(old.status().message().find("version 1") != std::string::npos);
  }

  // Every truncation and every single corrupted byte is rejected.
  for (size_t n = 0; n < bytes.size(); ++n) {
    CHECK(cuda::internal::ParseIpcDescriptor(bytes.substr(0, n))
              .status()
              .code() == absl::StatusCode::kInvalidArgument);
  }
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string corrupt = bytes;
    corrupt[i] ^= 0x20;
    CHECK(cuda::internal::ParseIpcDescriptor(corrupt).status().code() ==
          absl::StatusCode::kInvalidArgument);
  }
  CHECK(cuda::internal::ParseIpcDescriptor("").status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("CudaPoolMemory Gather and Scatter are byte-exact", "[cuda]") {
  FLOWKV_SKIP_WITHOUT_GPU();
  // batch_min_runs 1: every batch through cudaMemcpyBatchAsync; 0: one
  // cudaMemcpyAsync per run.
  const uint32_t batch_min_runs = GENERATE(0u, 1u, 16u);
  CAPTURE(batch_min_runs);
  CudaPoolOptions options;
  options.batch_min_runs = batch_min_runs;
  auto pool = MakePool({1 << 20, 3 << 18}, options);
  CHECK(pool->kind() == MemoryKind::kCudaDevice);
  CHECK(pool->num_regions() == 2);
  CHECK(pool->region_bytes(1) == 3 << 18);
  for (uint32_t r = 0; r < 2; ++r)
    Upload(*pool, r, Pattern(3, r, pool->region_bytes(r)));

  // Host staging memory the pool has not seen (malloc: pinned lazily) and
  // memory the caller pinned itself.
  const uint64_t host_bytes = 1 << 20;
  std::vector<std::byte> pageable(host_bytes, std::byte{0xee});
  std::byte* pinned = nullptr;
  CUDA_REQUIRE(cudaMallocHost(reinterpret_cast<void**>(&pinned), host_bytes));
  std::memset(pinned, 0xee, host_bytes);
  std::mt19937 rng(batch_min_runs + 1);
  const std::vector<std::vector<std::byte>> expected = {
      Pattern(3, 0, pool->region_bytes(0)),
      Pattern(3, 1, pool->region_bytes(1))};

  for (std::byte* host : {pageable.data(), pinned}) {
    for (int round = 0; round < 2; ++round) {  // the second: pins reused
      std::vector<PoolHostCopy> copies =
          RandomRuns(*pool, host, host_bytes, rng);
      REQUIRE(copies.size() > 16);
      REQUIRE(GatherSync(*pool, copies).ok());
      for (const PoolHostCopy& c : copies) {
        REQUIRE(std::memcmp(c.host, expected[c.region].data() + c.offset,
                            c.length) == 0);
      }
    }
    // Scatter new bytes into random runs; everything else stays.
    std::vector<std::vector<std::byte>> before = {Download(*pool, 0),
                                                  Download(*pool, 1)};
    std::vector<PoolHostCopy> copies;
    uint64_t used = 0;
    for (int i = 0; i < 40; ++i) {  // disjoint runs: one per 24 KiB slice
      const uint32_t region = i % 2;
      const uint64_t length = 1 + rng() % 4000;
      const uint64_t offset = (i / 2) * 24576 + rng() % 4000;
      for (uint64_t b = 0; b < length; ++b)
        host[used + b] = static_cast<std::byte>(rng());
      copies.push_back({region, offset, host + used, length});
      used += length;
    }
    REQUIRE(ScatterSync(*pool, copies).ok());
    for (const PoolHostCopy& c : copies) {
      std::memcpy(before[c.region].data() + c.offset, c.host, c.length);
    }
    CHECK(Download(*pool, 0) == before[0]);
    CHECK(Download(*pool, 1) == before[1]);
  }
  // An empty batch completes OK.
  CHECK(GatherSync(*pool, {}).ok());
  CHECK(ScatterSync(*pool, {}).ok());
  pool.reset();
  cudaFreeHost(pinned);
}

TEST_CASE("CudaPoolMemory Gather runs after the caller's event", "[cuda]") {
  FLOWKV_SKIP_WITHOUT_GPU();
  const uint64_t bytes = 8 << 20;
  std::vector<std::byte> host(bytes);  // outlives the pool, which pins it
  auto pool = MakePool({bytes});
  Upload(*pool, 0, std::vector<std::byte>(bytes, std::byte{1}));
  // The caller's stream first keeps the GPU busy (a large memset), then
  // writes new bytes into the pool and records the event Gather waits for.
  cudaStream_t stream = nullptr;
  CUDA_REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  void* busy = nullptr;
  const uint64_t busy_bytes = uint64_t{1} << 30;
  CUDA_REQUIRE(cudaMalloc(&busy, busy_bytes));
  cudaEvent_t written = nullptr;
  CUDA_REQUIRE(cudaEventCreateWithFlags(&written, cudaEventDisableTiming));
  for (int round = 0; round < 3; ++round) {
    const int value = 10 + round;
    for (int i = 0; i < 4; ++i) {
      CUDA_REQUIRE(cudaMemsetAsync(busy, i, busy_bytes, stream));
    }
    CUDA_REQUIRE(cudaMemsetAsync(pool->region_base(0), value, bytes, stream));
    CUDA_REQUIRE(cudaEventRecord(written, stream));
    REQUIRE(GatherSync(*pool, {{0, 0, host.data(), bytes}}, written).ok());
    CHECK(host == std::vector<std::byte>(bytes, static_cast<std::byte>(value)));
  }
  CUDA_REQUIRE(cudaStreamSynchronize(stream));
  cudaEventDestroy(written);
  cudaFree(busy);
  cudaStreamDestroy(stream);
}

TEST_CASE("CudaPoolMemory rejects bad pools and bad copies", "[cuda]") {
  FLOWKV_SKIP_WITHOUT_GPU();
  std::vector<std::byte> host_memory(4096);
  auto host_base = CudaPoolMemory::Create(0, {host_memory.data()}, {4096});
  CHECK(host_base.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(host_base.status().message().find("not device memory") !=
        std::string::npos);

  void* allocation = nullptr;
  const uint64_t allocation_bytes = 2 << 20;
  CUDA_REQUIRE(cudaMalloc(&allocation, allocation_bytes));
  std::byte* inside = static_cast<std::byte*>(allocation) + 4096;
  // A region inside a larger allocation is shared by the allocation's handle
  // and its offset (two regions of one allocation: one handle).
  {
    auto shared =
        CudaPoolMemory::Create(0, {inside, inside + 8192}, {4096, 4096});
    INFO(shared.status().ToString());
    REQUIRE(shared.ok());
    auto parsed =
        cuda::internal::ParseIpcDescriptor((*shared)->ShareDescriptor());
    REQUIRE(parsed.ok());
    CHECK(parsed->regions[0].offset == 4096);
    CHECK(parsed->regions[1].offset == 12288);
    CHECK(parsed->regions[0].allocation_bytes >= allocation_bytes);
    CHECK(parsed->regions[0].handle == parsed->regions[1].handle);
  }
  // A region may not leave its allocation.
  auto too_long =
      CudaPoolMemory::Create(0, {allocation}, {allocation_bytes + 1});
  CHECK(too_long.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(CudaPoolMemory::Create(7777, {allocation}, {4096}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  // Unshared, a sub-range is fine.
  CudaPoolOptions unshared;
  unshared.share = false;
  auto pool = CudaPoolMemory::Create(0, {inside}, {4096}, unshared);
  REQUIRE(pool.ok());
  CHECK((*pool)->ShareDescriptor().empty());

  std::vector<std::byte> host(8192);
  CHECK(GatherSync(**pool, {{1, 0, host.data(), 16}}).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(GatherSync(**pool, {{0, 4000, host.data(), 97}}).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(ScatterSync(**pool, {{0, 0, nullptr, 16}}).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(GatherSync(**pool, {{0, ~uint64_t{0}, host.data(), 2}}).code() ==
        absl::StatusCode::kInvalidArgument);
  // Device memory where host memory belongs.
  absl::Status device_as_host = GatherSync(**pool, {{0, 0, allocation, 16}});
  CHECK(device_as_host.code() == absl::StatusCode::kInvalidArgument);
  CHECK(device_as_host.message().find("device or managed memory") !=
        std::string::npos);
  pool->reset();
  cudaFree(allocation);
}

TEST_CASE("CudaPoolMemory OpenPeer in one process and bad descriptors",
          "[cuda]") {
  FLOWKV_SKIP_WITHOUT_GPU();
  auto a = MakePool({1 << 20, 1 << 19});
  auto b = MakePool({1 << 19, 1 << 20});
  for (uint32_t r = 0; r < 2; ++r) {
    Upload(*a, r, Pattern(5, r, a->region_bytes(r)));
    Upload(*b, r, Pattern(6, r, b->region_bytes(r)));
  }
  auto peer = a->OpenPeer(b->ShareDescriptor());
  INFO(peer.status().ToString());
  REQUIRE(peer.ok());
  {
    DoneWaiter waiter;
    (*peer)->CopyTo({{0, 100, 1, 2000, 5000}, {1, 0, 0, 0, 1 << 19}}, nullptr,
                    waiter.Callback());
    REQUIRE(waiter.Wait().ok());
  }
  std::vector<std::byte> b1 = Pattern(6, 1, 1 << 20);
  std::vector<std::byte> a0 = Pattern(5, 0, 1 << 20);
  std::memcpy(b1.data() + 2000, a0.data() + 100, 5000);
  CHECK(Download(*b, 1) == b1);
  CHECK(Download(*b, 0) == Pattern(5, 1, 1 << 19));
  {
    DoneWaiter waiter;  // pull: src = b, dst = a
    (*peer)->CopyFrom({{1, 0, 0, 4096, 4096}}, waiter.Callback());
    REQUIRE(waiter.Wait().ok());
  }
  std::memcpy(a0.data() + 4096, b1.data(), 4096);
  CHECK(Download(*a, 0) == a0);
  {
    DoneWaiter waiter;  // outside the peer's region: nothing moves
    (*peer)->CopyTo({{0, 0, 0, (1 << 19) - 10, 11}}, nullptr,
                    waiter.Callback());
    CHECK(waiter.Wait().code() == absl::StatusCode::kInvalidArgument);
  }
  peer->reset();

  CHECK(a->OpenPeer("not a descriptor").status().code() ==
        absl::StatusCode::kInvalidArgument);
  auto parsed = cuda::internal::ParseIpcDescriptor(b->ShareDescriptor());
  REQUIRE(parsed.ok());
  cuda::internal::IpcDescriptor other_host = *parsed;
  other_host.boot_id = "another-host";
  CHECK(a->OpenPeer(cuda::internal::EncodeIpcDescriptor(other_host))
            .status()
            .code() == absl::StatusCode::kUnavailable);
  // A process that is gone: spawn one and reap it, then claim its pid.
  pid_t gone = 0;
  char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
  REQUIRE(posix_spawn(&gone, "/bin/true", nullptr, nullptr, argv, environ) ==
          0);
  REQUIRE(waitpid(gone, nullptr, 0) == gone);
  cuda::internal::IpcDescriptor dead = *parsed;
  dead.pid = static_cast<uint32_t>(gone);
  auto opened_dead = a->OpenPeer(cuda::internal::EncodeIpcDescriptor(dead));
  CHECK(opened_dead.status().code() == absl::StatusCode::kUnavailable);
}

TEST_CASE("CudaPoolMemory copies through CUDA IPC between two processes",
          "[cuda]") {
  FLOWKV_SKIP_WITHOUT_GPU();
  const uint64_t bytes = 4 << 20;
  // 1: the exporter's regions lie inside one allocation, at offsets.
  const int suballocate = GENERATE(0, 1);
  CAPTURE(suballocate);
  auto exporter = CudaPeerProcess::Start(
      {"--region_bytes", std::to_string(bytes), "--regions", "2", "--seed", "9",
       "--suballocate", std::to_string(suballocate)});
  INFO(exporter.status().ToString());
  REQUIRE(exporter.ok());
  auto pool = MakePool({bytes, bytes});
  for (uint32_t r = 0; r < 2; ++r) Upload(*pool, r, Pattern(8, r, bytes));
  auto peer = pool->OpenPeer((*exporter)->descriptor());
  INFO(peer.status().ToString());
  REQUIRE(peer.ok());

  // Pull the exporter's region 1 into our region 0, byte-exact.
  {
    DoneWaiter waiter;
    (*peer)->CopyFrom({{1, 0, 0, 0, bytes}}, waiter.Callback());
    REQUIRE(waiter.Wait().ok());
  }
  CHECK(Download(*pool, 0) == Pattern(9, 1, bytes));
  // Push our region 1 into both of the exporter's regions, in runs.
  std::vector<TransferOp> runs;
  for (uint64_t offset = 0; offset < bytes; offset += 65536) {
    runs.push_back({1, offset, 0, offset, 65536});
    runs.push_back({1, offset, 1, bytes - offset - 65536, 65536});
  }
  {
    DoneWaiter waiter;
    (*peer)->CopyTo(runs, nullptr, waiter.Callback());
    REQUIRE(waiter.Wait().ok());
  }
  std::vector<std::byte> expected0 = Pattern(8, 1, bytes);
  std::vector<std::byte> expected1(bytes);
  for (uint64_t offset = 0; offset < bytes; offset += 65536) {
    std::memcpy(expected1.data() + bytes - offset - 65536,
                expected0.data() + offset, 65536);
  }
  CHECK((*exporter)->Ask("HASH 0").value_or("no reply") ==
        "HASH " + std::to_string(HashBytes(expected0)));
  CHECK((*exporter)->Ask("HASH 1").value_or("no reply") ==
        "HASH " + std::to_string(HashBytes(expected1)));
  peer->reset();
  // EXIT gets no reply: the process is gone.
  CHECK((*exporter)->Ask("EXIT").status().code() ==
        absl::StatusCode::kUnavailable);
}

TEST_CASE("CudaPoolMemory survives a killed exporter", "[cuda]") {
  FLOWKV_SKIP_WITHOUT_GPU();
  const uint64_t bytes = 1 << 20;
  std::vector<std::byte> host(bytes);  // outlives the pool, which pins it
  auto exporter = CudaPeerProcess::Start(
      {"--region_bytes", std::to_string(bytes), "--seed", "4"});
  INFO(exporter.status().ToString());
  REQUIRE(exporter.ok());
  auto pool = MakePool({bytes});
  auto peer = pool->OpenPeer((*exporter)->descriptor());
  REQUIRE(peer.ok());
  const std::string descriptor = (*exporter)->descriptor();
  (*exporter)->Kill();

  // Copies into and out of a dead process's pool report OK or an error;
  // either way `done` runs once and this process carries on.
  for (int i = 0; i < 3; ++i) {
    DoneWaiter push, pull;
    (*peer)->CopyTo({{0, 0, 0, 0, bytes}}, nullptr, push.Callback());
    WARN("copy into a dead exporter's pool: " << push.Wait().ToString());
    (*peer)->CopyFrom({{0, 0, 0, 0, bytes}}, pull.Callback());
    WARN("copy from a dead exporter's pool: " << pull.Wait().ToString());
  }
  peer->reset();
  // Opening the dead process's descriptor fails cleanly.
  auto reopened = pool->OpenPeer(descriptor);
  CHECK(reopened.status().code() == absl::StatusCode::kUnavailable);
  // The pool still works.
  CHECK(GatherSync(*pool, {{0, 0, host.data(), bytes}}).ok());
}

}  // namespace
}  // namespace flowkv
