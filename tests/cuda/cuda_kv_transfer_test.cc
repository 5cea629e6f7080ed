// SPDX-License-Identifier: Apache-2.0
// KvTransfer between two processes whose pools are GPU memory
// (flowkv::cuda::CudaPoolMemory over cudaMalloc, each pool 4 KiB into its
// allocation as a caching allocator hands it out): the IPC path and the
// staging path, byte-exact for FlowKV block-major -> block-major and vLLM
// layer-major (FlashAttention) -> block-major; KvPiece::ready_event
// (the receiver sees the bytes the sender's stream wrote, never stale ones);
// a sender killed mid-transfer (layer by layer, so that the receiver knows
// the request it fails). The peer process is this binary (a hidden
// test case started with testing::ChildProcess). Without a GPU every case
// prints SKIP_NO_GPU (CTest reports it skipped; scripts/gpu-check.sh fails).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cuda_runtime_api.h>
#include <memory>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "flowkv/cuda/cuda_pool_memory.h"
#include "flowkv/kv_transfer.h"
#include "tests/support/cuda_test_util.h"
#include "tests/support/kv_staging_util.h"

namespace flowkv {
namespace {

using kv_fixture::kGeometry;
using staging_test::kSeed;
using staging_test::kSmallRing;
using staging_test::Pair;
using staging_test::RingFree;
using staging_test::WholeRequest;
using testing::PollUntil;
using testing::Seen;
constexpr absl::Duration kSoon = kv_fixture::kSoon;
// How long the receiver may take to notice a killed sender.
const absl::Duration kNoticeDeath = 3 * kv_fixture::kPeerFailureTimeout + kSoon;
// Where each pool starts in its cudaMalloc allocation.
constexpr uint64_t kPoolOffset = 4096;

// The ready_event case: round i writes RoundValue(i) into the whole source
// pool on the sender's stream, then sends blocks [i * kRoundBlocks, +
// kRoundBlocks) as request "round-<i>".
constexpr uint32_t kRounds = 4;
constexpr uint32_t kRoundBlocks = kGeometry.num_blocks / kRounds;
uint8_t RoundValue(uint32_t round) {
  return static_cast<uint8_t>(0x40 + round);
}
BlockList RoundBlocks(uint32_t round) {
  return BlockList({{round * kRoundBlocks, kRoundBlocks}});
}
KvPiece RoundRequest(uint32_t round) {
  return {.src_blocks = RoundBlocks(round),
          .dst_blocks = RoundBlocks(round),
          .num_tokens = uint64_t{kRoundBlocks} * kGeometry.block_tokens};
}

// The killed-sender case: a block-major pool of kBigBlocks blocks, sent
// layer by layer, so that one layer piece is kBigBlocks / 8 chunks of the
// small ring (the receiver knows a request from its first piece on; the
// kill lands thousands of chunks before the second piece ends).
constexpr int kBigPair = 9;
constexpr uint32_t kBigBlocks = 4096;

// Layout pair `index`: staging_test::Pair, or kBigPair.
staging_test::LayoutPair AnyPair(int index) {
  if (index != kBigPair) return Pair(index);
  KvLayoutSpec big = {.geometry = kGeometry};
  big.geometry.num_blocks = kBigBlocks;
  return {big, big};
}

// One layer of a request moving every block of kBigPair to the same block.
KvPiece BigLayerRequest(uint32_t layer) {
  return {.src_blocks = BlockList({{0, kBigBlocks}}),
          .dst_blocks = BlockList({{0, kBigBlocks}}),
          .num_tokens = uint64_t{kBigBlocks} * kGeometry.block_tokens,
          .layer_begin = layer,
          .layer_end = layer + 1};
}

// IPC: kAuto (both pools share, so IPC is chosen); staging: forced. Either
// way a ring small enough for hundreds of chunks.
KvTransferOptions Options(bool ipc) {
  if (ipc) return {.staging = kSmallRing};
  return staging_test::ForcedStaging();
}

// One side: an engine and a KvTransfer over a CudaPoolMemory on device 0.
// No Catch2 here (the peer process uses it too).
struct CudaSide {
  std::unique_ptr<TransferEngine> engine;
  std::optional<KvLayout> layout;
  void* allocation = nullptr;
  uint8_t* base = nullptr;  // device memory: the pool's one region
  uint64_t bytes = 0;
  std::shared_ptr<KvPoolMemory> memory;
  std::unique_ptr<KvTransfer> kv;

  // The pool's memory outlives the KvTransfer and the CudaPoolMemory; the
  // engine (whose memory holds the staging ring) outlives both.
  ~CudaSide() {
    kv.reset();
    memory.reset();
    if (allocation != nullptr) cudaFree(allocation);
  }

  absl::Status Open(const std::string& name, const KvLayoutSpec& spec,
                    KvTransferOptions options) {
    setenv("UCX_NET_DEVICES", "lo", 1);
    auto created_engine =
        TransferEngine::Create(testing::KvEngineOptions(name));
    if (!created_engine.ok()) return created_engine.status();
    engine = *std::move(created_engine);
    auto created_layout = KvLayout::Create(spec);
    if (!created_layout.ok()) return created_layout.status();
    layout.emplace(*std::move(created_layout));
    bytes = layout->total_bytes();
    if (cudaMalloc(&allocation, bytes + kPoolOffset) != cudaSuccess ||
        cudaMemset(allocation, 0, bytes + kPoolOffset) != cudaSuccess) {
      return absl::InternalError("cudaMalloc / cudaMemset of the pool");
    }
    base = static_cast<uint8_t*>(allocation) + kPoolOffset;
    auto pool = cuda::CudaPoolMemory::Create(0, {base}, {bytes});
    if (!pool.ok()) return pool.status();
    memory = std::shared_ptr<KvPoolMemory>(*std::move(pool));
    auto created =
        KvTransfer::Create(engine.get(), *layout, memory, std::move(options));
    if (!created.ok()) return created.status();
    kv = *std::move(created);
    return absl::OkStatus();
  }

  absl::Status Upload(const std::vector<uint8_t>& host) {
    if (cudaMemcpy(base, host.data(), bytes, cudaMemcpyHostToDevice) !=
        cudaSuccess) {
      return absl::InternalError("cudaMemcpy to the pool");
    }
    return absl::OkStatus();
  }

  // The pool's bytes (empty when the copy fails).
  std::vector<uint8_t> Download() const {
    std::vector<uint8_t> host(bytes);
    if (cudaMemcpy(host.data(), base, bytes, cudaMemcpyDeviceToHost) !=
        cudaSuccess) {
      return {};
    }
    return host;
  }
};

// The peer process (the sender), configured by FLOWKV_CUDA_KV_CHILD =
// "<ipc|staging> <pair> <address> <count> <plain|events|layers>": connects to
// <address>, announces its pool, writes "path <KvPath>", then
//   plain   fills its pool with FillRandom(kSeed) and sends "req-<i>" for
//           i < count (count 0: forever), each awaited;
//   events  per round (see RoundRequest) keeps its stream busy, writes
//           RoundValue(round) into the pool on it, records an event and
//           sends with that event as ready_event;
//   layers  (pair kBigPair) sends "req-<i>" for i < count (0: forever) one
//           layer piece at a time (BigLayerRequest), each awaited;
// writing "sent <i> <code>" per send and at the end "ipc_copies <n>".
void RunChild(const char* config) {
  auto fail = [](const std::string& what) {
    std::fprintf(stderr, "cuda kv child: %s\n", what.c_str());
    _exit(1);
  };
  std::vector<std::string> words = absl::StrSplit(config, ' ');
  int pair_index = 0;
  uint64_t count = 0;
  if (words.size() != 5 || !absl::SimpleAtoi(words[1], &pair_index) ||
      !absl::SimpleAtoi(words[3], &count)) {
    fail(absl::StrCat("bad config '", config, "'"));
  }
  const bool ipc = words[0] == "ipc";
  const bool events = words[4] == "events";
  const bool layers = words[4] == "layers";
  CudaSide side;
  if (absl::Status s =
          side.Open("sender", AnyPair(pair_index).src, Options(ipc));
      !s.ok()) {
    fail(s.ToString());
  }
  std::vector<uint8_t> fill(side.bytes, 0xee);
  if (!events) testing::FillRandom(fill.data(), fill.size(), kSeed);
  if (absl::Status s = side.Upload(fill); !s.ok()) fail(s.ToString());
  auto peer = side.engine->Connect(words[2]);
  if (!peer.ok()) fail(peer.status().ToString());
  if (absl::Status s = side.kv->AnnouncePool(*peer); !s.ok()) {
    fail(s.ToString());
  }
  if (absl::Status s = side.kv->WaitForPeerPool(*peer, kSoon); !s.ok()) {
    fail(s.ToString());
  }
  absl::StatusOr<KvPath> path = side.kv->PeerPath(*peer);
  if (!path.ok()) fail(path.status().ToString());
  testing::WriteParentLine(absl::StrCat("path ", static_cast<int>(*path)));

  if (events) {
    cudaStream_t stream = nullptr;
    cudaEvent_t written = nullptr;
    void* busy = nullptr;
    const uint64_t busy_bytes = uint64_t{1} << 30;
    if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) !=
            cudaSuccess ||
        cudaEventCreateWithFlags(&written, cudaEventDisableTiming) !=
            cudaSuccess ||
        cudaMalloc(&busy, busy_bytes) != cudaSuccess) {
      fail("stream, event or busy memory");
    }
    for (uint32_t round = 0; round < kRounds; ++round) {
      // The GPU is busy for a while before the source bytes change: a copy
      // that did not wait for `written` would read the previous round's.
      for (int i = 0; i < 8; ++i) {
        if (cudaMemsetAsync(busy, i, busy_bytes, stream) != cudaSuccess) {
          fail("busy memset");
        }
      }
      if (cudaMemsetAsync(side.base, RoundValue(round), side.bytes, stream) !=
              cudaSuccess ||
          cudaEventRecord(written, stream) != cudaSuccess) {
        fail("memset or event record");
      }
      KvPiece request = RoundRequest(round);
      request.ready_event = written;
      const absl::Status s =
          side.kv->Send(absl::StrCat("round-", round), *peer, request).Wait();
      testing::WriteParentLine(
          absl::StrCat("sent ", round, " ", static_cast<int>(s.code())));
    }
    cudaStreamSynchronize(stream);
  } else if (layers) {
    for (uint64_t i = 0; count == 0 || i < count; ++i) {
      absl::Status s;
      for (uint32_t layer = 0; s.ok() && layer < kGeometry.num_layers;
           ++layer) {
        s = side.kv
                ->Send(absl::StrCat("req-", i), *peer, BigLayerRequest(layer))
                .Wait();
      }
      testing::WriteParentLine(
          absl::StrCat("sent ", i, " ", static_cast<int>(s.code())));
    }
  } else {
    const staging_test::LayoutPair pair = Pair(pair_index);
    for (uint64_t i = 0; count == 0 || i < count; ++i) {
      const absl::Status s =
          side.kv->Send(absl::StrCat("req-", i), *peer, WholeRequest(pair))
              .Wait();
      testing::WriteParentLine(
          absl::StrCat("sent ", i, " ", static_cast<int>(s.code())));
    }
  }
  testing::WriteParentLine(
      absl::StrCat("ipc_copies ", side.kv->Stats().ipc_copies));
  testing::WaitForParentThenExit();
}

TEST_CASE("cuda kv child", "[.cuda_kv_child]") {
  if (const char* config = std::getenv("FLOWKV_CUDA_KV_CHILD")) {
    RunChild(config);
  }
}

// The receiver: listens, starts the sender process and waits for its pool.
struct Receiver {
  CudaSide side;
  std::unique_ptr<testing::ChildProcess> child;
  PeerId sender = 0;

  Receiver(bool ipc, int pair, uint64_t count, const char* mode) {
    {
      absl::Status s = side.Open("receiver", AnyPair(pair).dst, Options(ipc));
      INFO(s.ToString());
      REQUIRE(s.ok());
    }
    auto address = side.engine->Listen("127.0.0.1:0");
    REQUIRE(address.ok());
    child = std::make_unique<testing::ChildProcess>(
        "cuda kv child", std::vector<std::string>{absl::StrCat(
                             "FLOWKV_CUDA_KV_CHILD=", ipc ? "ipc" : "staging",
                             " ", pair, " ", *address, " ", count, " ", mode)});
    Seen seen;
    REQUIRE(PollUntil(*side.kv, seen, kSoon, [&](const Seen&) {
      for (const PeerInfo& p : side.engine->Peers()) {
        if (side.kv->PeerPool(p.id).ok()) {
          sender = p.id;
          return true;
        }
      }
      return false;
    }));
    const KvPath expected = ipc ? KvPath::kIpc : KvPath::kStaging;
    CHECK(child->ReadLine(kSoon) ==
          absl::StrCat("path ", static_cast<int>(expected)));
    absl::StatusOr<KvPath> path = side.kv->PeerPath(sender);
    REQUIRE(path.ok());
    CHECK(*path == expected);
  }
};

TEST_CASE("GPU pools move byte-exact over IPC and over staging", "[cuda]") {
  FLOWKV_SKIP_WITHOUT_GPU();
  const bool ipc = GENERATE(true, false);
  // 0: FlowKV block-major -> block-major; 1: vLLM layer-major -> block-major.
  const int pair = GENERATE(0, 1);
  CAPTURE(ipc, pair);
  Receiver r(ipc, pair, 1, "plain");
  Seen seen;
  REQUIRE(PollUntil(*r.side.kv, seen, kSoon,
                    [](const Seen& s) { return s.Finished("req-0"); }));
  CHECK(r.child->ReadLine(kSoon) == "sent 0 0");
  const std::string copies = r.child->ReadLine(kSoon);
  const std::vector<uint8_t> got = r.side.Download();
  REQUIRE(got.size() == r.side.bytes);
  CHECK(staging_test::Arrived(Pair(pair), got.data()));
  const KvTransferStats stats = r.side.kv->Stats();
  if (ipc) {
    CHECK(copies != "ipc_copies 0");
    CHECK(stats.staged_slots_received == 0);
  } else {
    CHECK(copies == "ipc_copies 0");
    CHECK(stats.staged_bytes_received == r.side.bytes);
    CHECK(stats.staged_slots_received >= r.side.bytes / kSmallRing.slot_bytes);
    CHECK(RingFree(*r.side.kv, kSoon));
  }
}

TEST_CASE("The receiver sees the bytes the sender's ready_event covers",
          "[cuda]") {
  FLOWKV_SKIP_WITHOUT_GPU();
  const bool ipc = GENERATE(true, false);
  CAPTURE(ipc);
  Receiver r(ipc, 0, 0, "events");
  Seen seen;
  REQUIRE(PollUntil(*r.side.kv, seen, kSoon, [](const Seen& s) {
    for (uint32_t round = 0; round < kRounds; ++round) {
      if (!s.Finished(absl::StrCat("round-", round))) return false;
    }
    return true;
  }));
  for (uint32_t round = 0; round < kRounds; ++round) {
    CHECK(r.child->ReadLine(kSoon) == absl::StrCat("sent ", round, " 0"));
  }
  const std::vector<uint8_t> got = r.side.Download();
  REQUIRE(got.size() == r.side.bytes);
  const KvLayout& layout = *r.side.layout;
  for (uint32_t round = 0; round < kRounds; ++round) {
    INFO("round " << round);
    const std::vector<uint8_t> expected(layout.total_bytes(),
                                        RoundValue(round));
    CHECK(kv_fixture::SameKvBytes(
        layout, expected.data(), RoundBlocks(round), layout, got.data(),
        RoundBlocks(round), uint64_t{kRoundBlocks} * kGeometry.block_tokens, 0,
        kGeometry.num_layers, 0, 0, kGeometry.kv_heads));
  }
}

TEST_CASE("A staging sender killed mid-transfer fails its request cleanly",
          "[cuda]") {
  FLOWKV_SKIP_WITHOUT_GPU();
  Receiver r(/*ipc=*/false, kBigPair, 0, "layers");  // sends forever
  KvTransfer& kv = *r.side.kv;
  Seen seen;
  // req-0's first layer arrived (the request is known here), and chunks of
  // its second layer are arriving.
  REQUIRE(PollUntil(kv, seen, kSoon, [&](const Seen&) {
    return kv.LayersArrived("req-0") >= 1;
  }));
  const uint64_t before = kv.Stats().staged_slots_received;
  REQUIRE(PollUntil(kv, seen, kSoon, [&](const Seen&) {
    return kv.Stats().staged_slots_received > before + 8;
  }));
  REQUIRE(kv.LayersArrived("req-0") < kGeometry.num_layers);
  r.child->Kill();
  const absl::Time killed = absl::Now();
  REQUIRE(PollUntil(kv, seen, kNoticeDeath, [](const Seen& s) {
    return s.Failed("req-0") != nullptr;
  }));
  CHECK(absl::Now() - killed < kNoticeDeath);
  INFO(seen.Failed("req-0")->status.ToString());
  CHECK(seen.Failed("req-0")->status.code() == absl::StatusCode::kUnavailable);
  CHECK(seen.Finished("req-0") == 0);
  const std::vector<uint8_t> snapshot = r.side.Download();
  REQUIRE(snapshot.size() == r.side.bytes);
  REQUIRE(PollUntil(kv, seen, kSoon, [&](const Seen&) {
    return kv.Stats().requests_active == 0;
  }));
  CHECK(RingFree(kv, kSoon));
  // No scatter landed after the failure was reported.
  CHECK(r.side.Download() == snapshot);
}

}  // namespace
}  // namespace flowkv
