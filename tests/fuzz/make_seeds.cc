// SPDX-License-Identifier: Apache-2.0
// Writes the seed corpus of every fuzz target: valid inputs made by the
// codecs' own encoders (wire format, KvTransfer notices, layouts, the
// pools' share descriptors), sample
// trace text, and fixed pseudo-random bytes for the targets that read
// operations or specs from any bytes. Run from the repository root:
//   build/bin/fuzz_make_seeds tests/fuzz/corpus
// Deterministic: the same files every run.

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "cuda/ipc_descriptor.h"
#include "flowkv/block_allocator.h"
#include "flowkv/kv_events.h"
#include "flowkv/kv_layout.h"
#include "lib/engine/wireup/wire_format.h"
#include "lib/kv/kv_notice.h"
#include "lib/pool/host_share_descriptor.h"

namespace flowkv::internal {
namespace {

namespace fs = std::filesystem;

fs::path g_root;

void Write(const std::string& target, const std::string& name,
           const std::string& bytes) {
  const fs::path dir = g_root / target;
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

KvLayout MustLayout(absl::StatusOr<KvLayout> layout) {
  if (!layout.ok()) {
    std::fprintf(stderr, "%s\n", layout.status().ToString().c_str());
    std::exit(1);
  }
  return *layout;
}

EngineInfo SampleInfo(int regions) {
  EngineInfo info{.instance_id = 0x1234,
                  .name = "prefill-0",
                  .ucx_version = 0x010d01,  // UCX 1.13.1
                  .address_format = 0,
                  .worker_address = std::string(24, '\x11'),
                  .regions = {}};
  for (int i = 0; i < regions; ++i) {
    info.regions.push_back(
        {.id = static_cast<uint32_t>(i),
         .kind = static_cast<uint8_t>(i % 2),
         .base = 0x7f0000000000ull + 0x100000ull * i,
         .length = 0x10000,
         .rkey = std::string(16, static_cast<char>('a' + i))});
  }
  return info;
}

void WireFormatSeeds() {
  const std::string key = "fuzz-cluster-token";  // wire_format_fuzz.cc
  const std::string t = "wire_format_fuzz";
  Write(t, "engine_info", '\0' + EncodeEngineInfo(SampleInfo(2), key));
  Write(t, "signed_engine_info", '\1' + EncodeEngineInfo(SampleInfo(3), key));
  Nonce client{};
  Nonce server{};
  for (size_t i = 0; i < client.size(); ++i) {
    client[i] = static_cast<uint8_t>(i);
    server[i] = static_cast<uint8_t>(255 - i);
  }
  Write(t, "hello",
        '\2' + EncodeHello({.via_sockaddr = true,
                            .sender_conn_id = 7,
                            .client_nonce = client,
                            .name = "prefill-0"},
                           key));
  Write(t, "challenge",
        '\3' + EncodeChallenge({.sender_conn_id = 9,
                                .receiver_conn_id = 7,
                                .server_nonce = server}));
  HandshakeProof proof;
  proof.sender_conn_id = 7;
  proof.receiver_conn_id = 9;
  proof.info = SampleInfo(1);
  const HandshakeNonces nonces{.client = client, .server = server};
  Write(t, "proof_client",
        '\4' + EncodeProof(ProofRole::kClient, proof, key, nonces));
  Write(t, "proof_server",
        '\5' + EncodeProof(ProofRole::kServer, proof, key, nonces));
  Write(t, "reject",
        '\6' + EncodeReject({.receiver_conn_id = 7,
                             .code = 7,
                             .reason = "token mismatch"}));
}

void KvNoticeSeeds(const KvLayout& layout) {
  const std::string t = "kv_notice_fuzz";
  KvNotice data;
  data.kind = KvNoticeKind::kData;
  data.request_id = "req-42";
  data.num_senders = 2;
  data.sender_rank = 1;
  data.layer_begin = 0;
  data.layer_end = 4;
  data.token_begin = 0;
  data.token_end = 100;
  data.payload = "first token";
  Write(t, "data", EncodeKvNotice(data));
  KvNotice failed;
  failed.kind = KvNoticeKind::kFailed;
  failed.request_id = "req-43";
  failed.code = absl::StatusCode::kUnavailable;
  failed.message = "peer gone";
  Write(t, "failed", EncodeKvNotice(failed));
  KvNotice released;
  released.kind = KvNoticeKind::kReleased;
  released.request_id = "req-44";
  Write(t, "released", EncodeKvNotice(released));
  KvNotice pool;
  pool.kind = KvNoticeKind::kPool;
  pool.layout = layout.Serialize();
  for (uint32_t r = 0; r < layout.num_regions(); ++r) pool.regions.push_back(r);
  Write(t, "pool", EncodeKvNotice(pool));
  KvNotice chunk = data;
  chunk.kind = KvNoticeKind::kSlot;
  chunk.slot_seq = 3;
  chunk.slot = 1;
  chunk.runs = {{.region = 0, .offset = 4096, .length = 2048},
                {.region = 0, .offset = 65536, .length = 2048}};
  Write(t, "chunk", EncodeKvNotice(chunk));
  KvNotice credit;
  credit.kind = KvNoticeKind::kCredit;
  credit.request_id = "req-42";
  credit.slot = 1;
  Write(t, "credit", EncodeKvNotice(credit));
}

void LayoutSeeds() {
  const KvGeometry g{.num_layers = 4,
                     .num_blocks = 16,
                     .block_tokens = 4,
                     .kv_heads = 2,
                     .head_dim = 8,
                     .dtype_bytes = 2};
  const std::string t = "kv_layout_parse_fuzz";
  Write(t, "flowkv_block_major",
        MustLayout(KvLayout::FlowKvBlockMajor(g)).Serialize());
  Write(t, "vllm_flash_attn_hnd",
        MustLayout(KvLayout::VllmFlashAttn(g, BlockOrder::kHND)).Serialize());
  Write(t, "vllm_lhbnc",
        MustLayout(KvLayout::Vllm(g, VllmKvLayout::kLHBNC)).Serialize());
  KvGeometry mla = g;
  mla.num_parts = 1;
  mla.kv_heads = 1;
  Write(t, "mla", MustLayout(KvLayout::Mla(mla)).Serialize());
  // A strided table with no affine rule (layers in reverse order).
  KvGeometry small = g;
  small.num_layers = 2;
  small.num_parts = 1;
  const uint64_t tile = 4 * 2 * 16;
  KvStridedSpec spec{.geometry = small, .tensors = {}};
  for (uint64_t l = 0; l < 2; ++l) {
    spec.tensors.push_back({.region = 0,
                            .offset = (1 - l) * tile,
                            .block_stride = 2 * tile,
                            .token_stride = 32,
                            .head_stride = 16});
  }
  Write(t, "strided", MustLayout(KvLayout::CreateStrided(spec)).Serialize());
  KvNoticeSeeds(MustLayout(KvLayout::VllmFlashInfer(g)));
}

void TraceSeeds() {
  const std::string t = "trace_fuzz";
  Write(t, "mooncake",
        std::string(1, '\0') +
            "{\"timestamp\": 0, \"input_length\": 6758, \"output_length\": "
            "500, \"hash_ids\": [0, 1, 2]}\n"
            "\n"
            "{\"timestamp\": 27, \"input_length\": 12, \"output_length\": 1, "
            "\"hash_ids\": []}\n");
  Write(t, "azure",
        "\1TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
        "2023-11-16 18:17:03.9799600,4808,10\r\n"
        "2023-11-16 18:17:04.0000000,12,300\r\n");
}

void ShareDescriptorSeeds() {
  const std::string boot_id = "0d1e2f30-aaaa-bbbb-cccc-000000000001";
  HostShareDescriptor host{.boot_id = boot_id, .regions = {}};
  for (int r = 0; r < 3; ++r) {
    host.regions.push_back(
        {.name = "/flowkv-4242-0-1a2b3c4d-r" + std::to_string(r),
         .size = 4096u << r});
  }
  Write("host_share_descriptor_fuzz", "three_regions",
        EncodeHostShareDescriptor(host));
  host.boot_id.clear();
  host.regions.resize(1);
  Write("host_share_descriptor_fuzz", "one_region_no_boot_id",
        EncodeHostShareDescriptor(host));

  // Selector byte 0: parsed as is; 1: checksum fixed up first
  // (cuda_ipc_descriptor_fuzz.cc).
  cuda::internal::IpcDescriptor ipc;
  ipc.boot_id = boot_id;
  ipc.pid = 4242;
  ipc.device_uuid[3] = 7;
  for (int r = 0; r < 3; ++r) {
    cuda::internal::IpcRegion region;
    region.size = 1000 + r;
    region.address = 0x7f0000000000ull + r;
    region.offset = 512 * r;  // regions 1 and 2 lie in one allocation
    region.allocation_bytes = 4096;
    region.handle[r == 0 ? 0 : 1] = 'h';
    ipc.regions.push_back(region);
  }
  const std::string t = "cuda_ipc_descriptor_fuzz";
  Write(t, "three_regions", '\0' + cuda::internal::EncodeIpcDescriptor(ipc));
  Write(t, "three_regions_fixup",
        '\1' + cuda::internal::EncodeIpcDescriptor(ipc));
  ipc.regions.resize(1);
  ipc.boot_id.clear();
  Write(t, "one_region_fixup", '\1' + cuda::internal::EncodeIpcDescriptor(ipc));
}

// KV event batches and snapshots from a real allocator with a prefix cache
// (first byte: 0 batch, 1 snapshot).
void KvEventSeeds() {
  const char* t = "kv_events_fuzz";
  auto allocator = BlockAllocator::Create(
      {.num_blocks = 8, .growth_slack_blocks = 0, .enable_prefix_cache = true});
  BlockAllocator& a = **allocator;
  BlockList x = *a.Allocate(4);
  (void)a.CacheBlocks(x, {11, 12});
  (void)a.Free(x, {11, 12, 13, 14});
  BlockList y = *a.Allocate(8);  // evicts
  (void)a.Free(y, {99});
  (void)a.ClearCache();
  BlockList z = *a.Allocate(3);
  (void)a.CacheBlocks(z, {21, 22, 23});
  Write(t, "batch", '\0' + EncodeKvEventBatch(a.ReadEvents(0, 100)));
  Write(t, "batch_fell_behind",
        '\0' + EncodeKvEventBatch(
                   {.events = {}, .fell_behind = true, .latest_seq = 6}));
  Write(t, "snapshot", '\1' + EncodeKvCacheSnapshot(a.Snapshot()));
}

// The targets that read any bytes as operations or specs.
void RandomSeeds() {
  std::mt19937 rng(20261201);
  for (const char* t : {"kv_layout_create_fuzz", "block_allocator_fuzz",
                        "transfer_plan_fuzz", "prefix_cache_fuzz"}) {
    for (int i = 0; i < 4; ++i) {
      std::string bytes(48 + 32 * i, '\0');
      for (char& c : bytes) c = static_cast<char>(rng());
      Write(t, "random_" + std::to_string(i), bytes);
    }
  }
}

}  // namespace
}  // namespace flowkv::internal

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus directory>\n", argv[0]);
    return 2;
  }
  flowkv::internal::g_root = argv[1];
  flowkv::internal::WireFormatSeeds();
  flowkv::internal::LayoutSeeds();
  flowkv::internal::TraceSeeds();
  flowkv::internal::ShareDescriptorSeeds();
  flowkv::internal::RandomSeeds();
  flowkv::internal::KvEventSeeds();
  return 0;
}
