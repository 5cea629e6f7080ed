// SPDX-License-Identifier: Apache-2.0
// Disaggregated inference, end to end, with a toy model: a prefill process
// computes prompts' KV caches, libflowkv moves them into a decode process
// with a different pool layout, and the decode process generates tokens
// from them. The same prompts are then run colocated (prefill and decode in
// one pool) and the two outputs must agree token for token.
//
//   build/bin/disagg_demo            (forks the decode process itself)
//   build/bin/disagg_demo --decode_layout=layer_major_hnd --layerwise
//
// The prefill process does not know the decode pool's layout: it announces
// its own pool (KvTransfer::AnnouncePool) and waits for the decode
// process's answer (WaitForPeerPool), which its Poll loop sends.
//
// --decode_layout picks the decode pool's layout (the prefill pool is
// block-major): block_major (one op per request), layer_major (vLLM's
// cache: 2 x L ops per run) or layer_major_hnd (heads outermost: one op per
// token and head). --layerwise sends each layer as its own transfer, as a
// prefill that streams layer by layer does.
//
// The toy model: the KV of a token is a hash of (token, position, layer,
// K|V, head, dim); the next token is a hash of every KV byte of the context,
// read through the pool's layout. Any byte lost, misplaced or stale in the
// transfer changes the output.
#include <cstring>
#include <fmt/core.h>
#include <optional>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "flowkv/block_allocator.h"
#include "flowkv/kv_layout.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/transfer_engine.h"

ABSL_FLAG(std::string, decode_layout, "block_major",
          "decode pool layout: block_major, layer_major or layer_major_hnd");
ABSL_FLAG(bool, layerwise, false, "send each layer as its own transfer");

namespace {

using flowkv::BlockList;
using flowkv::KvLayout;
using flowkv::KvPart;

constexpr uint32_t kVocab = 32000;
constexpr uint32_t kNewTokens = 24;
constexpr flowkv::KvGeometry kGeometry = {.num_layers = 8,
                                          .num_blocks = 512,
                                          .block_tokens = 16,
                                          .kv_heads = 4,
                                          .head_dim = 64,
                                          .dtype_bytes = 2};
// Prefill: FlowKV's block-major pool. Decode: from --decode_layout.
const flowkv::KvLayoutSpec kPrefillSpec = {.geometry = kGeometry};

absl::StatusOr<flowkv::KvLayoutSpec> DecodeSpec() {
  const std::string name = absl::GetFlag(FLAGS_decode_layout);
  flowkv::KvLayoutSpec spec = {.geometry = kGeometry};
  if (name == "layer_major" || name == "layer_major_hnd") {
    spec.pool_order = flowkv::PoolOrder::kLayerMajor;
  } else if (name != "block_major") {
    return absl::InvalidArgumentError("unknown --decode_layout " + name);
  }
  if (name == "layer_major_hnd") spec.block_order = flowkv::BlockOrder::kHND;
  return spec;
}

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  return x ^ (x >> 33);
}

// A pool in memory with its layout and allocator: what a model runner owns.
struct Pool {
  KvLayout layout;
  uint8_t* data;
  std::unique_ptr<flowkv::BlockAllocator> allocator;
};

// Writes the KV of `token` at position `pos` of the request with `blocks`.
void WriteTokenKv(Pool& pool, const BlockList& blocks, uint32_t token,
                  uint64_t pos) {
  const KvLayout& layout = pool.layout;
  const uint32_t t = pos % kGeometry.block_tokens;
  const flowkv::BlockId block = blocks.BlockAt(pos / kGeometry.block_tokens);
  for (uint32_t l = 0; l < kGeometry.num_layers; ++l)
    for (KvPart part : {KvPart::kKey, KvPart::kValue})
      for (uint32_t h = 0; h < kGeometry.kv_heads; ++h) {
        uint8_t* v =
            pool.data + layout.ElementAddress(l, part, block, t, h).offset;
        for (uint32_t d = 0; d < kGeometry.head_dim; ++d) {
          const uint16_t x = static_cast<uint16_t>(
              Mix(token * 1000003ULL + pos * 8191 + l * 131 +
                  static_cast<int>(part) * 17 + h * 7 + d));
          std::memcpy(v + 2 * d, &x, 2);
        }
      }
}

// The next token: a hash of every KV byte of positions [0, tokens).
uint32_t NextToken(const Pool& pool, const BlockList& blocks, uint64_t tokens) {
  uint64_t h = tokens;
  for (uint64_t pos = 0; pos < tokens; ++pos) {
    const flowkv::BlockId block = blocks.BlockAt(pos / kGeometry.block_tokens);
    for (uint32_t l = 0; l < kGeometry.num_layers; ++l)
      for (KvPart part : {KvPart::kKey, KvPart::kValue})
        for (uint32_t head = 0; head < kGeometry.kv_heads; ++head) {
          const uint8_t* v =
              pool.data + pool.layout
                              .ElementAddress(l, part, block,
                                              pos % kGeometry.block_tokens,
                                              head)
                              .offset;
          uint64_t word;
          for (uint32_t i = 0; i < pool.layout.head_bytes(); i += 8) {
            std::memcpy(&word, v + i, 8);
            h = Mix(h ^ word);
          }
        }
  }
  return static_cast<uint32_t>(h % kVocab);
}

// Decodes kNewTokens tokens after a prompt whose KV is in the pool.
std::vector<uint32_t> Generate(Pool& pool, BlockList* blocks, uint64_t tokens) {
  std::vector<uint32_t> out;
  for (uint32_t i = 0; i < kNewTokens; ++i) {
    const uint32_t next = NextToken(pool, *blocks, tokens);
    out.push_back(next);
    if (tokens % kGeometry.block_tokens == 0 &&
        tokens / kGeometry.block_tokens >= blocks->num_blocks()) {
      if (!pool.allocator->Extend(blocks, 1).ok()) return {};
    }
    WriteTokenKv(pool, *blocks, next, tokens++);
  }
  return out;
}

std::vector<uint32_t> Prompt(uint32_t id, uint32_t length) {
  std::vector<uint32_t> tokens;
  for (uint32_t i = 0; i < length; ++i) {
    tokens.push_back(static_cast<uint32_t>(Mix(id * 7919 + i) % kVocab));
  }
  return tokens;
}

absl::StatusOr<Pool> MakePool(flowkv::TransferEngine& engine,
                              const flowkv::KvLayoutSpec& spec,
                              flowkv::RegionId* region) {
  absl::StatusOr<KvLayout> layout = KvLayout::Create(spec);
  if (!layout.ok()) return layout.status();
  auto memory = engine.AllocateMemory(layout->total_bytes());
  if (!memory.ok()) return memory.status();
  *region = memory->id;
  auto allocator =
      flowkv::BlockAllocator::Create({.num_blocks = kGeometry.num_blocks});
  if (!allocator.ok()) return allocator.status();
  return Pool{*layout, static_cast<uint8_t*>(memory->data),
              *std::move(allocator)};
}

absl::StatusOr<std::unique_ptr<flowkv::TransferEngine>> MakeEngine(
    const std::string& name) {
  flowkv::TransferEngineOptions options;
  options.name = name;
  options.cluster_token = "disagg-demo";
  // Both processes share this host: let UCX use shared memory when UCX_TLS
  // allows it (its shared-memory transports cannot do UCX's peer error
  // handling; the engine's heartbeats detect a dead peer instead).
  options.ucx_peer_error_handling = false;
  return flowkv::TransferEngine::Create(options);
}

// Waits for the next message (not a KV notification) from the peer.
std::optional<std::string> NextMessage(flowkv::TransferEngine& engine,
                                       flowkv::KvTransfer* kv,
                                       std::vector<std::string>* finished) {
  for (int i = 0; i < 600; ++i) {
    std::vector<flowkv::Notification> got;
    if (kv != nullptr) {
      flowkv::KvPollResult r = kv->Poll(absl::Milliseconds(50));
      for (const flowkv::KvFinished& f : r.finished) {
        finished->push_back(f.request_id);
      }
      got = std::move(r.other);
    } else {
      got = engine.TakeNotifications(absl::Milliseconds(50));
    }
    for (auto& n : got) {
      if (n.kind == flowkv::Notification::Kind::kMessage) return n.bytes;
    }
  }
  return std::nullopt;
}

// The decode process: serves "alloc" requests until "bye". Its Poll calls
// also answer the prefill's pool announcement.
int RunDecode(const flowkv::KvLayoutSpec& spec, int port_pipe) {
  auto engine = MakeEngine("decode");
  flowkv::RegionId region;
  auto pool = engine.ok() ? MakePool(**engine, spec, &region)
                          : absl::StatusOr<Pool>(engine.status());
  if (!pool.ok()) {
    fmt::print(stderr, "decode: {}\n", pool.status().ToString());
    return 1;
  }
  auto kv = flowkv::KvTransfer::Create(engine->get(), pool->layout, {region});
  auto address = (*engine)->Listen("127.0.0.1:0");
  if (!kv.ok() || !address.ok()) return 1;
  const std::string& a = *address;
  if (write(port_pipe, a.data(), a.size()) != static_cast<ssize_t>(a.size())) {
    return 1;
  }
  close(port_pipe);

  std::vector<std::string> finished;
  while (true) {
    std::optional<std::string> msg =
        NextMessage(**engine, kv->get(), &finished);
    if (!msg || *msg == "bye") return msg ? 0 : 1;
    // "alloc <id> <prompt tokens>"
    std::vector<std::string> f = absl::StrSplit(*msg, ' ');
    uint64_t id, tokens;
    if (f.size() != 3 || !absl::SimpleAtoi(f[1], &id) ||
        !absl::SimpleAtoi(f[2], &tokens)) {
      return 1;
    }
    const flowkv::PeerId peer = (*engine)->Peers().at(0).id;
    absl::StatusOr<BlockList> blocks = pool->allocator->Allocate(
        (tokens + kGeometry.block_tokens - 1) / kGeometry.block_tokens);
    if (!blocks.ok()) return 1;
    std::string reply = fmt::format("blocks {}", id);
    for (const flowkv::BlockRun& r : blocks->runs()) {
      reply += fmt::format(" {}+{}", r.first, r.count);
    }
    if (!(*engine)->Send(peer, reply).Wait().ok()) return 1;
    // Wait for the request's KV, then decode from it.
    const std::string request_id = absl::StrCat(id);
    for (int i = 0; i < 600 && std::find(finished.begin(), finished.end(),
                                         request_id) == finished.end();
         ++i) {
      flowkv::KvPollResult r = (*kv)->Poll(absl::Milliseconds(50));
      for (const flowkv::KvFinished& f : r.finished) {
        finished.push_back(f.request_id);
      }
      if (!r.failed.empty()) {
        fmt::print(stderr, "decode: {}\n", r.failed[0].status.ToString());
        return 1;
      }
    }
    std::vector<uint32_t> out = Generate(*pool, &*blocks, tokens);
    if (!pool->allocator->Free(*blocks).ok()) return 1;
    if (!(*engine)
             ->Send(peer,
                    fmt::format("tokens {} {}", id, absl::StrJoin(out, ",")))
             .Wait()
             .ok()) {
      return 1;
    }
  }
}

BlockList ParseBlocks(const std::vector<std::string>& fields) {
  BlockList list;
  for (size_t i = 2; i < fields.size(); ++i) {
    std::vector<std::string> p = absl::StrSplit(fields[i], '+');
    uint32_t first = 0, count = 0;
    if (p.size() == 2 && absl::SimpleAtoi(p[0], &first) &&
        absl::SimpleAtoi(p[1], &count)) {
      list.Append(first, count);
    }
  }
  return list;
}

// The prefill process: runs every prompt disaggregated and colocated.
int RunPrefill(const flowkv::KvLayoutSpec& decode_spec,
               const std::string& decode_address) {
  auto engine = MakeEngine("prefill");
  flowkv::RegionId region;
  auto pool = engine.ok() ? MakePool(**engine, kPrefillSpec, &region)
                          : absl::StatusOr<Pool>(engine.status());
  if (!pool.ok()) {
    fmt::print(stderr, "prefill: {}\n", pool.status().ToString());
    return 1;
  }
  auto kv = flowkv::KvTransfer::Create(engine->get(), pool->layout, {region});
  auto peer = (*engine)->Connect(decode_address);
  if (!kv.ok() || !peer.ok()) {
    fmt::print(stderr, "prefill: connect: {}\n", peer.status().ToString());
    return 1;
  }
  // Learn the decode pool from the decode process itself: announce ours,
  // and its KvTransfer (in its Poll) answers with its layout and regions.
  if (absl::Status s = (*kv)->AnnouncePool(*peer); !s.ok()) {
    fmt::print(stderr, "prefill: {}\n", s.ToString());
    return 1;
  }
  if (absl::Status s = (*kv)->WaitForPeerPool(*peer, absl::Seconds(30));
      !s.ok()) {
    fmt::print(stderr, "prefill: {}\n", s.ToString());
    return 1;
  }
  fmt::print("decode pool: {}\n", (*kv)->PeerPool(*peer)->ToString());
  // A colocated engine (the reference): one pool, the decode layout, serves
  // both phases.
  flowkv::RegionId unused;
  auto colocated = MakePool(**engine, decode_spec, &unused);
  if (!colocated.ok()) return 1;

  int mismatches = 0;
  const uint32_t prompts[][2] = {{1, 1000}, {2, 37}, {3, 2500}, {4, 16}};
  for (const auto& [id, length] : prompts) {
    const std::vector<uint32_t> prompt = Prompt(id, length);
    // Disaggregated: decode allocates, prefill computes and sends layer by
    // layer, decode generates.
    if (!(*engine)
             ->Send(*peer, fmt::format("alloc {} {}", id, length))
             .Wait()
             .ok()) {
      return 1;
    }
    std::optional<std::string> reply = NextMessage(**engine, nullptr, nullptr);
    if (!reply) return 1;
    const BlockList dst = ParseBlocks(absl::StrSplit(*reply, ' '));
    absl::StatusOr<BlockList> src =
        pool->allocator->Allocate(static_cast<uint32_t>(dst.num_blocks()));
    if (!src.ok()) return 1;
    for (uint64_t pos = 0; pos < prompt.size(); ++pos) {
      WriteTokenKv(*pool, *src, prompt[pos], pos);
    }
    uint64_t ops = 0;
    const uint32_t step =
        absl::GetFlag(FLAGS_layerwise) ? 1 : kGeometry.num_layers;
    for (uint32_t l = 0; l < kGeometry.num_layers; l += step) {
      flowkv::TransferHandle h = (*kv)->Send(absl::StrCat(id), *peer,
                                             {.src_blocks = *src,
                                              .dst_blocks = dst,
                                              .num_tokens = length,
                                              .layer_begin = l,
                                              .layer_end = l + step});
      if (absl::Status s = h.Wait(); !s.ok()) {
        fmt::print(stderr, "send: {}\n", s.ToString());
        return 1;
      }
      ops += h.stats().ops;
    }
    if (!pool->allocator->Free(*src).ok()) return 1;
    reply = NextMessage(**engine, nullptr, nullptr);
    if (!reply) return 1;
    std::vector<std::string> f =
        absl::StrSplit(*reply, absl::MaxSplits(' ', 2));
    std::vector<uint32_t> disaggregated;
    for (absl::string_view t : absl::StrSplit(f.at(2), ',')) {
      uint32_t v = 0;
      if (absl::SimpleAtoi(t, &v)) disaggregated.push_back(v);
    }

    // Colocated: the same prompt, one pool, no transfer.
    absl::StatusOr<BlockList> blocks =
        colocated->allocator->Allocate(static_cast<uint32_t>(dst.num_blocks()));
    if (!blocks.ok()) return 1;
    for (uint64_t pos = 0; pos < prompt.size(); ++pos) {
      WriteTokenKv(*colocated, *blocks, prompt[pos], pos);
    }
    std::vector<uint32_t> reference = Generate(*colocated, &*blocks, length);
    if (!colocated->allocator->Free(*blocks).ok()) return 1;

    const bool same = disaggregated == reference;
    mismatches += same ? 0 : 1;
    // What a block-wise transfer (one call per layer, K|V and block) posts.
    const uint64_t blockwise = 2ull * kGeometry.num_layers * dst.num_blocks();
    fmt::print(
        "request {}: {:>4} prompt tokens, {} dst run(s), {} op(s) in {} "
        "send(s) (block-wise: {}) -> {} tokens: {}\n  disaggregated: {}\n",
        id, length, dst.num_runs(), ops, kGeometry.num_layers / step, blockwise,
        disaggregated.size(), same ? "same as colocated" : "MISMATCH",
        absl::StrJoin(
            disaggregated.begin(),
            disaggregated.begin() + std::min<size_t>(8, disaggregated.size()),
            " "));
  }
  (void)(*engine)->Send(*peer, "bye").Wait();
  fmt::print("{}\n", mismatches == 0
                         ? "all requests: disaggregated output == colocated"
                         : "MISMATCH between disaggregated and colocated");
  return mismatches == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const absl::StatusOr<flowkv::KvLayoutSpec> decode_spec = DecodeSpec();
  if (!decode_spec.ok()) {
    fmt::print(stderr, "{}\n", decode_spec.status().ToString());
    return 2;
  }
  setenv("UCX_NET_DEVICES", "lo", 0);  // loopback unless told otherwise
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return 1;
  const pid_t child = fork();
  if (child == 0) {
    close(pipe_fds[0]);
    _exit(RunDecode(*decode_spec, pipe_fds[1]));
  }
  close(pipe_fds[1]);
  char buffer[128] = {};
  const ssize_t n = read(pipe_fds[0], buffer, sizeof(buffer) - 1);
  close(pipe_fds[0]);
  if (n <= 0) {
    fmt::print(stderr, "the decode process did not start\n");
    return 1;
  }
  const int rc = RunPrefill(*decode_spec, std::string(buffer, n));
  int status = 0;
  waitpid(child, &status, 0);
  const bool child_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (!child_ok) fmt::print(stderr, "the decode process failed\n");
  return rc == 0 && child_ok ? 0 : 1;
}
