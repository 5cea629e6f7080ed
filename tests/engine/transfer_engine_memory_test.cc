// SPDX-License-Identifier: Apache-2.0
// TransferEngine memory: registering and allocating regions, their errors,
// and device memory without a CUDA-aware UCX.
// The transports come from UCX_TLS (ctest runs this binary with tcp and with
// shared memory); UCX_NET_DEVICES is pinned to lo.

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdlib.h>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/transfer_engine.h"
#include "tests/support/engine_pair.h"

namespace flowkv {
namespace {

using flowkv::testing::MakeEngine;

// Debian's UCX has no CUDA transport module (libuct_cuda*): then the engine
// must say it cannot register device memory and point to KvPoolMemory.
TEST_CASE("Without a CUDA-aware UCX, device memory is Unimplemented",
          "[transfer_engine]") {
  const char* env_dir = std::getenv("UCX_MODULE_DIR");
  const std::filesystem::path module_dir =
      env_dir != nullptr ? env_dir : "/usr/lib/x86_64-linux-gnu/ucx";
  bool ucx_has_cuda = false;
  std::error_code error;
  for (const auto& entry :
       std::filesystem::directory_iterator(module_dir, error)) {
    if (entry.path().filename().string().rfind("libuct_cuda", 0) == 0) {
      ucx_has_cuda = true;
    }
  }
  auto engine = MakeEngine("e");
  if (!error && !ucx_has_cuda) CHECK_FALSE(engine->SupportsCudaMemory());
  if (engine->SupportsCudaMemory()) {
    WARN("this UCX supports CUDA memory: nothing to check");
    return;
  }
  std::vector<uint8_t> buffer(4096);
  auto registered = engine->RegisterMemory(buffer.data(), buffer.size(),
                                           MemoryKind::kCudaDevice);
  CHECK(registered.status().code() == absl::StatusCode::kUnimplemented);
  const std::string message(registered.status().message());
  CHECK(message.find("RegisterMemory") != std::string::npos);
  CHECK(message.find("CudaPoolMemory") != std::string::npos);
  CHECK(message.find("flowkv/kv_pool_memory.h") != std::string::npos);
  CHECK(message.find("docs/gpu.md") != std::string::npos);
  auto allocated = engine->AllocateMemory(4096, MemoryKind::kCudaDevice);
  CHECK(allocated.status().code() == absl::StatusCode::kUnimplemented);
  CHECK(allocated.status().message().find("docs/gpu.md") != std::string::npos);
  CHECK(engine->Regions().empty());  // nothing was registered
}

TEST_CASE("Memory registration, regions and errors", "[transfer_engine]") {
  auto engine = MakeEngine("e");
  std::vector<uint8_t> buffer(1 << 16);
  auto user = engine->RegisterMemory(buffer.data(), buffer.size());
  REQUIRE(user.ok());
  CHECK(*user == 0);
  auto pool = engine->AllocateMemory(1 << 20);
  REQUIRE(pool.ok());
  CHECK(pool->id == 1);
  CHECK(pool->data != nullptr);
  std::memset(pool->data, 1, pool->length);  // writable
  std::vector<RegionInfo> regions = engine->Regions();
  REQUIRE(regions.size() == 2);
  CHECK(regions[0].base == reinterpret_cast<uint64_t>(buffer.data()));
  CHECK(regions[1].length == uint64_t{1} << 20);

  CHECK(engine->RegisterMemory(nullptr, 10).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(engine->RegisterMemory(buffer.data(), 0).status().code() ==
        absl::StatusCode::kInvalidArgument);
  if (!engine->SupportsCudaMemory()) {
    auto cuda =
        engine->RegisterMemory(buffer.data(), 4096, MemoryKind::kCudaDevice);
    CHECK(cuda.status().code() == absl::StatusCode::kUnimplemented);
    CHECK(
        engine->AllocateMemory(4096, MemoryKind::kCudaDevice).status().code() ==
        absl::StatusCode::kUnimplemented);
  }
  CHECK(engine->DeregisterMemory(1).ok());
  CHECK(engine->DeregisterMemory(1).code() == absl::StatusCode::kNotFound);
  auto next = engine->AllocateMemory(4096);
  REQUIRE(next.ok());
  CHECK(next->id == 2);  // ids are not reused

  // Addresses and connection errors.
  CHECK(engine->Listen("nonsense").status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(engine->Listen("127.0.0.1:99999").status().code() ==
        absl::StatusCode::kInvalidArgument);
  auto bound = engine->Listen("127.0.0.1:0");
  REQUIRE(bound.ok());
  CHECK(bound->rfind("127.0.0.1:", 0) == 0);
  CHECK(engine->Listen("127.0.0.1:0").status().code() ==
        absl::StatusCode::kFailedPrecondition);
  auto other = MakeEngine("other");
  auto unreachable = other->Connect("127.0.0.1:1");
  CHECK(!unreachable.ok());
  CHECK(other->Peers().empty());

  TransferEngineOptions bad;
  bad.name = std::string(300, 'x');
  CHECK(TransferEngine::Create(bad).status().code() ==
        absl::StatusCode::kInvalidArgument);
  TransferEngineOptions bad_ucx;
  bad_ucx.ucx_config = {{"KEEPALIVE_INTERVAL", "not-a-duration"}};
  CHECK(TransferEngine::Create(bad_ucx).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace flowkv
