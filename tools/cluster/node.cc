// SPDX-License-Identifier: Apache-2.0
// The node process (see node.h). It owns its pool, allocator, engine and
// KvTransfer, and reaches the router only through the control channel
// (control.h / wire.h). KV moves by push: the prefill node writes layer l of
// a request into the decode node's blocks as soon as layer l is computed
// (KvTransfer::Send with a layer range) and frees its own blocks when every
// piece is acknowledged; the last layer's piece carries the first token as
// its payload, so the decode node starts from it.

#include "tools/cluster/node.h"

#include <arpa/inet.h>
#include <chrono>
#include <deque>
#include <fcntl.h>
#include <fmt/core.h>
#include <map>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <optional>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "flowkv/block_allocator.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/transfer_engine.h"
#include "tools/cluster/control.h"
#include "tools/cluster/wire.h"
#if FLOWKV_CLUSTER_ETCD
#include "tools/cluster/etcd/etcd_membership.h"
#endif

namespace flowkv::cluster {
namespace {

double NowMs() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct PrefillJob {
  uint64_t request = 0;
  uint32_t attempt = 0;
  std::vector<uint32_t> prompt;
  uint32_t max_new = 0;
  uint32_t decode_node = 0;
  std::string decode_address;  // "" when colocated
  BlockList dst_blocks;
};

struct DecodeJob {
  uint64_t request = 0;
  uint32_t attempt = 0;
  uint32_t prompt_len = 0;
  uint32_t max_new = 0;
  BlockList blocks;
  std::vector<uint32_t> tokens;
  uint32_t pos = 0;
};

struct SendJob {
  uint64_t request = 0;
  uint32_t attempt = 0;
  BlockList src_blocks;
  std::vector<TransferHandle> handles;
  absl::Time prefill_end = absl::InfinitePast();
};

class Node {
 public:
  explicit Node(const NodeOptions& options) : options_(options) {}

  absl::Status Start();
  int Loop();

 private:
  absl::Status Send(ControlMessage m) {
    m.node = options_.id;
    return WriteFrame(fd_, EncodeMessage(m));
  }
  absl::Status HandleControl(const ControlMessage& m);
  void HandleKvResults(const KvPollResult& r);
  void ReapSends();
  bool RunOnePrefill();
  void RunDecodeStep();
  void Finish(DecodeJob& job);
  void MaybeReport(bool force);
  void MaybeReportDrained();
  void Cancel(uint64_t request, uint32_t attempt);
  absl::StatusOr<PeerId> PeerFor(uint32_t node, const std::string& address);
  uint32_t BlocksFor(uint32_t tokens) const {
    return (tokens + options_.model.block_tokens - 1) /
           options_.model.block_tokens;
  }

  NodeOptions options_;
  NodeRole role_ = NodeRole::kHybrid;
  bool drain_reported_ = true;
  int fd_ = -1;
  std::unique_ptr<FrameReader> reader_;
  std::unique_ptr<ModelRunner> model_;
  std::unique_ptr<TransferEngine> engine_;
  std::unique_ptr<KvTransfer> kv_;
  std::unique_ptr<BlockAllocator> allocator_;
#if FLOWKV_CLUSTER_ETCD
  std::unique_ptr<EtcdNodeEntry> etcd_entry_;  // --etcd: revoked at exit
#endif
  std::optional<KvPool> pool_;
  std::map<uint32_t, PeerId> peers_;
  std::deque<PrefillJob> prefills_;
  std::map<std::string, DecodeJob> awaiting_;
  std::vector<DecodeJob> running_;
  std::vector<SendJob> sending_;
  bool shutdown_ = false;
  double last_report_ms_ = 0;
  double busy_ms_ = 0;
  double prefill_ms_per_token_ = 0;
  double decode_step_ms_ = 0;
};

absl::Status Node::Start() {
  role_ = options_.role;
  if (options_.pin_core >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(options_.pin_core, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "node ", options_.id, ": cannot pin to core ", options_.pin_core));
    }
  }
  auto model = ModelRunner::Create(options_.model);
  if (!model.ok()) return model.status();
  model_ = *std::move(model);
  absl::StatusOr<KvLayout> layout = model_->MakeLayout(options_.num_blocks);
  if (!layout.ok()) return layout.status();
  TransferEngineOptions eo;
  eo.name = absl::StrCat("node-", options_.id);
  eo.cluster_token = "flowkv-cluster";
  auto engine = TransferEngine::Create(eo);
  if (!engine.ok()) return engine.status();
  engine_ = *std::move(engine);
  // One engine region per region of the layout, registered once.
  std::vector<RegionId> regions;
  std::vector<void*> bases;
  for (uint32_t r = 0; r < layout->num_regions(); ++r) {
    auto memory = engine_->AllocateMemory(layout->region_bytes(r));
    if (!memory.ok()) return memory.status();
    regions.push_back(memory->id);
    bases.push_back(memory->data);
  }
  pool_.emplace(KvPool{*layout, bases});
  auto kv = KvTransfer::Create(engine_.get(), *layout, regions);
  if (!kv.ok()) return kv.status();
  kv_ = *std::move(kv);
  auto allocator = BlockAllocator::Create({.num_blocks = options_.num_blocks});
  if (!allocator.ok()) return allocator.status();
  allocator_ = *std::move(allocator);
  absl::StatusOr<std::string> address = engine_->Listen("127.0.0.1:0");
  if (!address.ok()) return address.status();
  if (!options_.etcd_endpoint.empty()) {
#if FLOWKV_CLUSTER_ETCD
    // Registered before the hello: the router checks the entry at the hello.
    auto entry = EtcdNodeEntry::Create(
        options_.etcd_endpoint, options_.cluster_name, options_.id,
        {.role = NodeRoleName(role_), .address = *address},
        absl::Milliseconds(options_.etcd_ttl_ms));
    if (!entry.ok()) return entry.status();
    etcd_entry_ = *std::move(entry);
#else
    return absl::UnimplementedError("--etcd needs a build with libcurl");
#endif
  }

  fd_ = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(options_.router_port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd_ < 0 ||
      connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::UnavailableError(
        absl::StrCat("node ", options_.id, ": cannot reach the router on port ",
                     options_.router_port));
  }
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
  reader_ = std::make_unique<FrameReader>(fd_);
  return Send({.type = MessageType::kHello, .role = role_, .text = *address});
}

absl::StatusOr<PeerId> Node::PeerFor(uint32_t node,
                                     const std::string& address) {
  auto it = peers_.find(node);
  if (it != peers_.end()) {
    absl::StatusOr<PeerInfo> info = engine_->GetPeer(it->second);
    if (info.ok() && info->failure.ok()) return it->second;
    peers_.erase(it);
  }
  absl::StatusOr<PeerId> peer = engine_->Connect(address);
  if (!peer.ok()) return peer.status();
  if (absl::Status s = kv_->AnnouncePool(*peer); !s.ok()) return s;
  if (absl::Status s = kv_->WaitForPeerPool(*peer, absl::Seconds(10));
      !s.ok()) {
    return s;
  }
  peers_[node] = *peer;
  return *peer;
}

absl::Status Node::HandleControl(const ControlMessage& m) {
  switch (m.type) {
    case MessageType::kAssignPrefill: {
      prefills_.push_back({m.request, m.attempt, m.tokens, m.max_new, m.peer,
                           m.text, BlocksOf(m.runs)});
      return absl::OkStatus();
    }
    case MessageType::kAssignDecode: {
      absl::StatusOr<BlockList> blocks =
          allocator_->Allocate(BlocksFor(m.prompt_len + m.max_new));
      ControlMessage reply{.type = MessageType::kBlocks,
                           .request = m.request,
                           .attempt = m.attempt,
                           .ok = blocks.ok()};
      if (blocks.ok()) {
        const std::string id = KvRequestId(m.request, m.attempt);
        (void)kv_->Expect(id, absl::Now() + absl::Seconds(120));
        reply.runs = RunsOf(*blocks);
        awaiting_[id] = DecodeJob{m.request, m.attempt, m.prompt_len, m.max_new,
                                  *blocks,   {},        m.prompt_len};
      } else {
        reply.text = blocks.status().ToString();
      }
      return Send(std::move(reply));
    }
    case MessageType::kSetRole:
      if (m.role != role_) {
        role_ = m.role;
        drain_reported_ = false;
      }
      return absl::OkStatus();
    case MessageType::kConnect: {
      absl::StatusOr<PeerId> peer = PeerFor(m.peer, m.text);
      return Send({.type = MessageType::kConnected,
                   .peer = m.peer,
                   .ok = peer.ok(),
                   .text = peer.ok() ? "" : peer.status().ToString()});
    }
    case MessageType::kCancel:
      Cancel(m.request, m.attempt);
      return absl::OkStatus();
    case MessageType::kShutdown:
      shutdown_ = true;
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "node ", options_.id, ": unexpected ", MessageTypeName(m.type)));
  }
}

void Node::Cancel(uint64_t request, uint32_t attempt) {
  for (auto it = prefills_.begin(); it != prefills_.end(); ++it) {
    if (it->request == request && it->attempt == attempt) {
      prefills_.erase(it);
      break;
    }
  }
  const std::string id = KvRequestId(request, attempt);
  if (auto it = awaiting_.find(id); it != awaiting_.end()) {
    kv_->Forget(id);
    (void)allocator_->Free(it->second.blocks);
    awaiting_.erase(it);
  }
  for (auto it = running_.begin(); it != running_.end(); ++it) {
    if (it->request == request && it->attempt == attempt) {
      (void)allocator_->Free(it->blocks);
      running_.erase(it);
      break;
    }
  }
}

void Node::HandleKvResults(const KvPollResult& r) {
  for (const KvFinished& f : r.finished) {
    auto it = awaiting_.find(f.request_id);
    if (it == awaiting_.end()) continue;  // cancelled meanwhile
    DecodeJob job = std::move(it->second);
    awaiting_.erase(it);
    uint32_t first = 0;
    if (!absl::SimpleAtoi(f.payload, &first)) {
      (void)allocator_->Free(job.blocks);
      (void)Send({.type = MessageType::kFailed,
                  .request = job.request,
                  .attempt = job.attempt,
                  .text = "KV arrived without its first token"});
      continue;
    }
    job.tokens.push_back(first);
    if (job.tokens.size() >= job.max_new) {
      Finish(job);
    } else {
      running_.push_back(std::move(job));
    }
  }
  for (const KvFailed& f : r.failed) {
    auto it = awaiting_.find(f.request_id);
    if (it == awaiting_.end()) continue;
    // The sender is gone or gave up: its late writes cannot land once the
    // router has retried elsewhere, so the blocks go back to the pool.
    (void)allocator_->Free(it->second.blocks);
    (void)Send({.type = MessageType::kFailed,
                .request = it->second.request,
                .attempt = it->second.attempt,
                .text = f.status.ToString()});
    awaiting_.erase(it);
  }
}

void Node::ReapSends() {
  for (auto it = sending_.begin(); it != sending_.end();) {
    bool done = true;
    for (const TransferHandle& h : it->handles) {
      if (h.state() != TransferState::kDone) done = false;
    }
    if (!done) {
      ++it;
      continue;
    }
    ControlMessage m{.type = MessageType::kKvSent,
                     .request = it->request,
                     .attempt = it->attempt};
    // The exposed transfer time: from the end of the prefill (the last
    // layer's send) until the last piece was acknowledged, as the engine
    // timed it (this loop may notice later, after a prefill).
    absl::Time acked = it->prefill_end;
    for (const TransferHandle& h : it->handles) {
      const TransferStats stats = h.stats();
      m.bytes += stats.bytes;
      if (stats.completion_time != absl::InfiniteDuration()) {
        acked = std::max(acked, stats.submit_time + stats.completion_time);
      }
      if (!h.status().ok() && m.ok) {
        m.ok = false;
        m.text = h.status().ToString();
      }
    }
    m.ms = absl::ToDoubleMilliseconds(acked - it->prefill_end);
    (void)allocator_->Free(it->src_blocks);
    (void)Send(std::move(m));
    it = sending_.erase(it);
  }
}

bool Node::RunOnePrefill() {
  if (prefills_.empty()) return false;
  PrefillJob& job = prefills_.front();
  const uint32_t n = static_cast<uint32_t>(job.prompt.size());
  const bool colocated = job.decode_address.empty();
  absl::StatusOr<BlockList> blocks =
      allocator_->Allocate(BlocksFor(colocated ? n + job.max_new : n));
  if (!blocks.ok()) return false;  // blocks come back as sends complete
  PrefillJob taken = std::move(job);
  prefills_.pop_front();
  PeerId peer = 0;
  if (!colocated) {
    absl::StatusOr<PeerId> p = PeerFor(taken.decode_node, taken.decode_address);
    if (!p.ok()) {
      (void)allocator_->Free(*blocks);
      (void)Send(
          {.type = MessageType::kFailed,
           .request = taken.request,
           .attempt = taken.attempt,
           .text = absl::StrCat("connect to decode node ", taken.decode_node,
                                ": ", p.status().ToString())});
      return true;
    }
    peer = *p;
  }
  const std::string id = KvRequestId(taken.request, taken.attempt);
  const uint32_t layers = options_.model.layers;
  SendJob send{taken.request, taken.attempt, *blocks, {}};
  auto send_layers = [&](uint32_t begin, uint32_t end, std::string payload) {
    send.handles.push_back(kv_->Send(id, peer,
                                     {.src_blocks = *blocks,
                                      .dst_blocks = taken.dst_blocks,
                                      .num_tokens = n,
                                      .layer_begin = begin,
                                      .layer_end = end,
                                      .payload = std::move(payload)}));
  };
  const double start = NowMs();
  absl::StatusOr<uint32_t> first =
      model_->Prefill(taken.prompt, *pool_, *blocks, [&](uint32_t layer) {
        // Stream every layer but the last as soon as it is computed; the
        // last goes with the first token once that is known.
        if (!colocated && layer + 1 < layers) send_layers(layer, layer + 1, "");
      });
  const double ms = NowMs() - start;
  busy_ms_ += ms;
  prefill_ms_per_token_ = prefill_ms_per_token_ == 0
                              ? ms / n
                              : 0.7 * prefill_ms_per_token_ + 0.3 * ms / n;
  if (!first.ok()) {
    // Pieces already posted complete on their own; the decode side sees the
    // request fail by its deadline, and the router retries.
    if (!colocated)
      sending_.push_back(std::move(send));
    else
      (void)allocator_->Free(*blocks);
    (void)Send({.type = MessageType::kFailed,
                .request = taken.request,
                .attempt = taken.attempt,
                .text = first.status().ToString()});
    return true;
  }
  (void)Send({.type = MessageType::kPrefillDone,
              .request = taken.request,
              .attempt = taken.attempt,
              .ms = ms,
              .tokens = {*first}});
  if (colocated) {
    DecodeJob d{taken.request, taken.attempt, n, taken.max_new,
                *blocks,       {*first},      n};
    if (d.tokens.size() >= d.max_new)
      Finish(d);
    else
      running_.push_back(std::move(d));
    return true;
  }
  send.prefill_end = absl::Now();
  send_layers(layers - 1, layers, absl::StrCat(*first));
  sending_.push_back(std::move(send));
  return true;
}

void Node::Finish(DecodeJob& job) {
  (void)allocator_->Free(job.blocks);
  (void)Send({.type = MessageType::kFinished,
              .request = job.request,
              .attempt = job.attempt,
              .tokens = job.tokens});
}

void Node::RunDecodeStep() {
  if (running_.empty()) return;
  const double start = NowMs();
  std::vector<ModelRunner::BatchEntry> batch;
  batch.reserve(running_.size());
  for (const DecodeJob& job : running_) {
    batch.push_back({job.tokens.back(), job.pos, &job.blocks});
  }
  absl::StatusOr<std::vector<uint32_t>> batched =
      model_->DecodeBatch(batch, *pool_);
  for (size_t i = 0, j = 0; i < running_.size(); ++j) {
    DecodeJob& job = running_[i];
    // A batch that failed is run one by one, so only a bad request fails.
    absl::StatusOr<uint32_t> next =
        batched.ok() ? absl::StatusOr<uint32_t>((*batched)[j])
                     : model_->DecodeStep(job.tokens.back(), job.pos, *pool_,
                                          job.blocks);
    if (!next.ok()) {
      (void)allocator_->Free(job.blocks);
      (void)Send({.type = MessageType::kFailed,
                  .request = job.request,
                  .attempt = job.attempt,
                  .text = next.status().ToString()});
      running_.erase(running_.begin() + static_cast<ptrdiff_t>(i));
      continue;
    }
    job.tokens.push_back(*next);
    ++job.pos;
    if (job.tokens.size() >= job.max_new) {
      Finish(job);
      running_.erase(running_.begin() + static_cast<ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
  const double ms = NowMs() - start;
  busy_ms_ += ms;
  decode_step_ms_ =
      decode_step_ms_ == 0 ? ms : 0.7 * decode_step_ms_ + 0.3 * ms;
}

void Node::MaybeReport(bool force) {
  const double now = NowMs();
  if (!force && now - last_report_ms_ < options_.report_ms) return;
  ControlMessage m{.type = MessageType::kLoad, .role = role_};
  for (const PrefillJob& p : prefills_) {
    m.load.queued_prefill_tokens += static_cast<double>(p.prompt.size());
  }
  m.load.running_decode = static_cast<double>(running_.size());
  m.load.waiting_decode = static_cast<double>(awaiting_.size());
  for (const DecodeJob& d : running_) m.load.decode_context_tokens += d.pos;
  m.load.kv_blocks_total = options_.num_blocks;
  m.load.kv_blocks_used =
      options_.num_blocks - static_cast<double>(allocator_->free_blocks());
  const double period = now - last_report_ms_;
  m.load.utilization =
      period > 0 && last_report_ms_ > 0 ? std::min(1.0, busy_ms_ / period) : 0;
  m.prefill_ms_per_token = prefill_ms_per_token_;
  m.decode_step_ms = decode_step_ms_;
  busy_ms_ = 0;
  last_report_ms_ = now;
  if (!Send(std::move(m)).ok()) shutdown_ = true;
}

void Node::MaybeReportDrained() {
  if (drain_reported_) return;
  // Drained: no work of the phase this node no longer serves.
  const bool prefill_left = !prefills_.empty() || !sending_.empty();
  const bool decode_left = !awaiting_.empty() || !running_.empty();
  if ((!ServesPrefill(role_) && prefill_left) ||
      (!ServesDecode(role_) && decode_left)) {
    return;
  }
  drain_reported_ = true;
  (void)Send({.type = MessageType::kRoleChanged, .role = role_});
}

int Node::Loop() {
  std::vector<std::string> frames;
  while (!shutdown_) {
    frames.clear();
    absl::Status read = reader_->ReadAvailable(&frames);
    for (const std::string& f : frames) {
      absl::StatusOr<ControlMessage> m = DecodeMessage(f);
      absl::Status s = m.ok() ? HandleControl(*m) : m.status();
      if (!s.ok()) {
        fmt::print(stderr, "node {}: {}\n", options_.id, s.ToString());
        return 1;
      }
    }
    if (!read.ok()) return 0;  // the router is gone
    HandleKvResults(kv_->Poll());
    ReapSends();
    // A node switched from decode to prefill drains first: its running
    // decodes finish before it starts the prefills it is given (else each
    // of their tokens would wait for a whole prefill).
    const bool draining_decode = !ServesDecode(role_) && !running_.empty();
    bool worked = !draining_decode && RunOnePrefill();
    if (!running_.empty()) {
      RunDecodeStep();
      worked = true;
    }
    MaybeReport(false);
    MaybeReportDrained();
    if (worked || shutdown_) continue;
    if (!awaiting_.empty() || !sending_.empty()) {
      // KV on the way: wake on the engine's notification.
      HandleKvResults(kv_->Poll(absl::Milliseconds(1)));
      pollfd p{fd_, POLLIN, 0};
      poll(&p, 1, 0);
    } else {
      pollfd p{fd_, POLLIN, 0};
      poll(&p, 1, 5);
    }
  }
  MaybeReport(true);
  return 0;
}

}  // namespace

int RunNode(const NodeOptions& options) {
  Node node(options);
  if (absl::Status s = node.Start(); !s.ok()) {
    fmt::print(stderr, "node {}: {}\n", options.id, s.ToString());
    return 1;
  }
  return node.Loop();
}

}  // namespace flowkv::cluster
