// SPDX-License-Identifier: Apache-2.0
// The router (see router.h). It owns membership, the ClusterView and the
// Scheduler, and every request's state; it reaches the node processes only
// through control messages over its NodeLinks (node_links.h). A request
// moves kPending -> (disaggregated) kAwaitBlocks -> kPrefilling -> kDecoding
// -> kDone, or (colocated) kPending -> kPrefilling -> kDecoding -> kDone.
// Messages name (request, attempt): a message of an attempt that was retried is
// stale and ignored.

#include "tools/cluster/router.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <deque>
#include <fmt/core.h>
#include <map>
#include <sys/wait.h>

#include "absl/strings/str_cat.h"
#include "tools/cluster/control.h"
#include "tools/cluster/membership.h"
#include "tools/cluster/membership_source.h"
#include "tools/cluster/node_links.h"
#include "tools/cluster/process.h"

namespace flowkv::cluster {
namespace {

enum class Phase {
  kFuture,
  kPending,
  kAwaitBlocks,
  kPrefilling,
  kDecoding,
  kDone
};

struct RequestState {
  const ClusterRequest* request = nullptr;
  RequestRecord record;
  Phase phase = Phase::kFuture;
  uint32_t attempt = 0;
  bool kv_delivered = false;
  bool colocated = false;
};

// What the router knows of a node beyond its ClusterView entry.
struct NodeConn {
  uint32_t id = 0;
  bool alive = false;
  // The role the node was last told to work as.
  NodeRole role = NodeRole::kHybrid;
};

class Router {
 public:
  Router(const RouterOptions& options,
         const std::vector<ClusterRequest>& requests)
      : options_(options) {
    for (const ClusterRequest& r : requests) {
      RequestState s;
      s.request = &r;
      s.record.id = r.id;
      s.record.prompt_tokens = static_cast<uint32_t>(r.prompt.size());
      s.record.output_tokens = r.max_new;
      s.record.arrival_ms = r.arrival_ms;
      requests_.push_back(std::move(s));
    }
  }

  absl::Status Start();
  absl::Status Run();
  void Stop();
  RunReport Report();

 private:
  double Now() const {
    return std::chrono::duration<double, std::milli>(
               std::chrono::steady_clock::now() - start_)
        .count();
  }
  absl::Time AbsNow() const { return absl::Now(); }
  void SendTo(uint32_t node, ControlMessage m);
  void Handle(NodeConn& node, const ControlMessage& m);
  void NodeDown(NodeConn& node, const std::string& why);
  void Retry(RequestState& r, const std::string& why);
  void PlacePending();
  void AccountPlacement(const RequestState& r, const Placement& where);
  void Rebalance();
  RequestState* Find(uint64_t request, uint32_t attempt);
  void MaybeKill();
  absl::Status ConnectAll(std::chrono::steady_clock::time_point deadline);
  // --etcd: takes down the nodes whose etcd entries are gone.
  void CheckEtcd();
  // --etcd: waits (bounded by the lease) until the killed nodes' entries
  // have expired, so the run reports them gone.
  void AwaitKilledExpired();
  // Waits up to timeout_ms for control messages and handles them; a node
  // whose socket closed or sent garbage is down. Unavailable when no node
  // is left.
  absl::Status PollNodes(int timeout_ms);

  RouterOptions options_;
  std::chrono::steady_clock::time_point start_;
  NodeLinks links_;
  std::vector<NodeConn> nodes_;
  // In the router, or in etcd (--etcd).
  std::unique_ptr<MembershipSource> members_;
  ClusterView view_;
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<RequestState> requests_;
  std::deque<size_t> pending_;
  size_t next_arrival_ = 0;
  size_t done_ = 0;
  uint64_t finished_ = 0;
  size_t connected_ = 0;
  bool started_ = false;
  double last_progress_ms_ = 0;
  RunInfo info_;
  std::vector<NodeSample> samples_;
};

absl::Status Router::Start() {
  auto scheduler = CreateScheduler(options_.policy, options_.scheduler);
  if (!scheduler.ok()) return scheduler.status();
  scheduler_ = *std::move(scheduler);
  auto model = ModelRunner::Create(options_.model);
  if (!model.ok()) return model.status();
  const double kv_bytes_per_token =
      static_cast<double>((*model)->kv_bytes_per_token());

  auto members = MembershipSource::Create(
      options_.etcd_endpoint, options_.cluster_name, options_.etcd_ttl_ms);
  if (!members.ok()) return members.status();
  members_ = *std::move(members);
  info_.etcd = members_->etcd();
  const uint32_t total = options_.prefill_nodes + options_.decode_nodes;
  nodes_.resize(total);
  std::vector<std::vector<std::string>> node_args;
  for (uint32_t i = 0; i < total; ++i) {
    NodeConn& n = nodes_[i];
    n.id = i;
    n.role = options_.colocated           ? NodeRole::kHybrid
             : i < options_.prefill_nodes ? NodeRole::kPrefill
                                          : NodeRole::kDecode;
    const ModelSpec& m = options_.model;
    const std::string& preset =
        n.role == NodeRole::kDecode && !options_.decode_kv_preset.empty()
            ? options_.decode_kv_preset
        : n.role != NodeRole::kDecode && !options_.prefill_kv_preset.empty()
            ? options_.prefill_kv_preset
            : m.kv_preset;
    node_args.push_back(
        {"--node", absl::StrCat("--node_id=", i),
         absl::StrCat("--node_role=", NodeRoleName(n.role)),
         absl::StrCat("--layers=", m.layers),
         absl::StrCat("--d_model=", m.d_model),
         absl::StrCat("--heads=", m.heads),
         absl::StrCat("--kv_heads=", m.kv_heads),
         absl::StrCat("--ffn_dim=", m.ffn_dim),
         absl::StrCat("--max_context=", m.max_context),
         absl::StrCat("--block_tokens=", m.block_tokens),
         absl::StrCat("--model_seed=", m.seed),
         absl::StrCat("--kv_preset=", preset),
         absl::StrCat("--blocks_per_node=", options_.blocks_per_node),
         absl::StrCat("--report_ms=", options_.report_ms),
         absl::StrCat("--pin_core=", options_.pin_cores ? PinCore(i) : -1)});
    if (!options_.etcd_endpoint.empty()) {
      node_args.back().push_back("--etcd=" + options_.etcd_endpoint);
      node_args.back().push_back("--cluster_name=" + options_.cluster_name);
      node_args.back().push_back(
          absl::StrCat("--etcd_ttl_ms=", options_.etcd_ttl_ms));
    }
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::vector<std::string> addresses;
  if (absl::Status s = links_.Start(node_args, absl::Seconds(60), &addresses);
      !s.ok()) {
    return s;
  }
  for (NodeConn& n : nodes_) {
    n.alive = true;
    if (absl::Status j = members_->membership().Join(n.id, addresses[n.id]);
        !j.ok()) {
      return j;
    }
    NodeInfo info;
    info.id = n.id;
    info.role = n.role;
    info.current_role = n.role;
    info.kv_bytes_per_token = kv_bytes_per_token;
    info.block_tokens = options_.model.block_tokens;
    if (options_.node_cost) info.cost = *options_.node_cost;
    if (absl::Status a = view_.AddNode(info); !a.ok()) return a;
  }
  info_.etcd_members = static_cast<uint32_t>(members_->membership().size());
  return ConnectAll(deadline);
}

absl::Status Router::ConnectAll(
    std::chrono::steady_clock::time_point deadline) {
  // Every node connects to every other and exchanges pools before the run
  // starts (any node may come to send KV to any other after a role switch),
  // so no request pays for a connection.
  const size_t total = nodes_.size();
  size_t expected = 0;
  for (NodeConn& n : nodes_) {
    for (NodeConn& other : nodes_) {
      if (other.id == n.id) continue;
      SendTo(n.id, {.type = MessageType::kConnect,
                    .peer = other.id,
                    .text = *members_->membership().Address(other.id)});
      ++expected;
    }
  }
  while (connected_ < expected) {
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("router: ", connected_, " of ", expected,
                       " node-to-node connections were made within 60 s"));
    }
    if (absl::Status s = PollNodes(100); !s.ok()) return s;
    for (const NodeConn& n : nodes_) {
      if (!n.alive) {
        return absl::UnavailableError(
            absl::StrCat("router: node ", n.id, " died while starting"));
      }
    }
  }
  (void)total;
  if (options_.verbose) {
    std::string pids;
    for (const NodeConn& n : nodes_) {
      absl::StrAppend(&pids, pids.empty() ? "" : " ", links_.pid(n.id));
    }
    fmt::print(stderr, "router: nodes up: {}\n", pids);
  }
  start_ = std::chrono::steady_clock::now();
  started_ = true;
  return absl::OkStatus();
}

absl::Status Router::PollNodes(int timeout_ms) {
  return links_.Poll(
      timeout_ms,
      [&](uint32_t node, const ControlMessage& m) { Handle(nodes_[node], m); },
      [&](uint32_t node, const std::string& why) {
        NodeDown(nodes_[node], why);
      });
}

void Router::SendTo(uint32_t node, ControlMessage m) {
  if (!nodes_[node].alive) return;
  if (!links_.Send(node, std::move(m))) {
    NodeDown(nodes_[node], "control socket write failed");
  }
}

RequestState* Router::Find(uint64_t request, uint32_t attempt) {
  if (request >= requests_.size()) return nullptr;
  RequestState& r = requests_[request];
  if (r.attempt != attempt || r.phase == Phase::kDone ||
      r.phase == Phase::kPending || r.phase == Phase::kFuture) {
    return nullptr;
  }
  return &r;
}

void Router::Retry(RequestState& r, const std::string& why) {
  const uint64_t id = r.record.id;
  // The surviving node forgets the old attempt and frees its blocks.
  for (uint32_t node : {r.record.prefill_node, r.record.decode_node}) {
    SendTo(node,
           {.type = MessageType::kCancel, .request = id, .attempt = r.attempt});
  }
  ++r.attempt;
  ++r.record.retries;
  r.kv_delivered = false;
  r.record.kv_bytes = 0;
  r.record.transfer_ms = 0;
  r.record.first_token_ms = -1;
  if (options_.verbose) {
    fmt::print(stderr, "router: retrying request {} (attempt {}): {}\n", id,
               r.attempt, why);
  }
  if (r.attempt >= options_.max_attempts) {
    r.phase = Phase::kDone;
    r.record.failed = true;
    ++done_;
    return;
  }
  r.phase = Phase::kPending;
  pending_.push_front(id);
}

void Router::NodeDown(NodeConn& node, const std::string& why) {
  if (!node.alive) return;
  node.alive = false;
  links_.Close(node.id);
  members_->membership().Leave(node.id);
  (void)view_.RemoveNode(node.id);
  if (options_.verbose) {
    fmt::print(stderr, "router: node {} is gone ({})\n", node.id, why);
  }
  for (RequestState& r : requests_) {
    if (r.phase == Phase::kDone || r.phase == Phase::kPending ||
        r.phase == Phase::kFuture) {
      continue;
    }
    const bool lost_decode = r.record.decode_node == node.id;
    // A dead prefill node matters only until its KV reached the decode
    // node (or, colocated, always: it is also the decode node).
    const bool lost_prefill =
        r.record.prefill_node == node.id && (!r.kv_delivered || r.colocated);
    if (lost_decode || lost_prefill) {
      Retry(r, absl::StrCat("node ", node.id, " died"));
    }
  }
}

void Router::Handle(NodeConn& node, const ControlMessage& m) {
  switch (m.type) {
    case MessageType::kLoad: {
      (void)view_.ReportLoad(node.id, m.load, AbsNow());
      NodeInfo* info = view_.FindMutable(node.id);
      if (info != nullptr && !options_.node_cost) {
        // No calibration: the node's measured speed replaces the default
        // cost model, as a line (prefill) and a constant step (decode).
        if (m.prefill_ms_per_token > 0) {
          info->cost.a = 0;
          info->cost.b = m.prefill_ms_per_token;
          info->cost.c = 0;
        }
        if (m.decode_step_ms > 0) {
          info->cost.t0 = m.decode_step_ms;
          info->cost.k = 0;
          info->cost.e = 0;
        }
      }
      if (!started_) return;  // start-up: the run's clock has not begun
      samples_.push_back({Now(), node.id, node.role,
                          m.load.queued_prefill_tokens, m.load.running_decode,
                          m.load.kv_blocks_used});
      return;
    }
    case MessageType::kConnected:
      if (!m.ok) {
        fmt::print(stderr, "router: node {} cannot reach node {}: {}\n",
                   node.id, m.peer, m.text);
        NodeDown(node, "cannot reach its peers");
        return;
      }
      ++connected_;
      return;
    case MessageType::kRoleChanged:
      if (options_.verbose) {
        fmt::print(stderr, "router: node {} drained, now {}\n", node.id,
                   NodeRoleName(m.role));
      }
      return;
    default:
      break;
  }
  if (m.type == MessageType::kKvSent && m.ok && m.request < requests_.size()) {
    // The decode node may finish (kFinished) before the prefill node hears
    // that its last piece was acknowledged: record the transfer anyway.
    RequestState& done = requests_[m.request];
    if (done.attempt == m.attempt && done.phase == Phase::kDone &&
        done.record.finished) {
      done.record.kv_bytes = m.bytes;
      done.record.transfer_ms = m.ms;
      return;
    }
  }
  RequestState* r = Find(m.request, m.attempt);
  if (r == nullptr) return;  // stale: an attempt that was retried
  switch (m.type) {
    case MessageType::kBlocks: {
      if (r->phase != Phase::kAwaitBlocks) return;
      if (!m.ok) {
        r->phase = Phase::kPending;  // the decode node is full: place again
        pending_.push_back(r->record.id);
        return;
      }
      std::optional<std::string> address =
          members_->membership().Address(r->record.decode_node);
      if (!address) return;  // NodeDown retried it already
      r->phase = Phase::kPrefilling;
      SendTo(r->record.prefill_node, {.type = MessageType::kAssignPrefill,
                                      .request = m.request,
                                      .attempt = m.attempt,
                                      .peer = r->record.decode_node,
                                      .max_new = r->request->max_new,
                                      .text = *address,
                                      .tokens = r->request->prompt,
                                      .runs = m.runs});
      return;
    }
    case MessageType::kPrefillDone:
      r->record.first_token_ms = Now();
      r->record.prefill_ms = m.ms;
      if (r->colocated) r->phase = Phase::kDecoding;
      return;
    case MessageType::kKvSent:
      if (!m.ok) {
        Retry(*r, absl::StrCat("KV transfer failed: ", m.text));
        return;
      }
      r->kv_delivered = true;
      r->record.kv_bytes = m.bytes;
      r->record.transfer_ms = m.ms;
      if (r->phase == Phase::kPrefilling) r->phase = Phase::kDecoding;
      return;
    case MessageType::kFinished:
      r->record.finish_ms = Now();
      if (r->record.first_token_ms < 0) r->record.first_token_ms = Now();
      r->record.tokens = m.tokens;
      r->record.finished = true;
      r->phase = Phase::kDone;
      ++done_;
      ++finished_;
      return;
    case MessageType::kFailed:
      Retry(*r, absl::StrCat("node ", node.id, ": ", m.text));
      return;
    default:
      return;
  }
}

void Router::MaybeKill() {
  if (options_.kill_node < 0 || finished_ < options_.kill_after ||
      !info_.killed_nodes.empty()) {
    return;
  }
  NodeConn& n = nodes_.at(static_cast<size_t>(options_.kill_node));
  if (!n.alive) return;
  // Kill it mid-work: once a request is in flight on it.
  bool busy = false;
  for (const RequestState& r : requests_) {
    if (r.phase > Phase::kPending && r.phase < Phase::kDone &&
        (r.record.decode_node == n.id ||
         (r.record.prefill_node == n.id && !r.kv_delivered))) {
      busy = true;
    }
  }
  if (!busy) return;
  kill(links_.pid(n.id), SIGKILL);
  int status;
  waitpid(links_.pid(n.id), &status,
          0);  // dead and reaped: SIGKILL cannot be caught
  info_.killed_nodes.push_back(n.id);
  if (options_.verbose) {
    fmt::print(stderr, "router: SIGKILLed node {} after {} requests\n", n.id,
               finished_);
  }
  // The node died at this instant: what it wrote before dying and the
  // router has not read yet is dropped with it (a real router learns of a
  // death later, and such late news is what retries make harmless), so
  // the requests in flight on it are retried — the test's evidence.
  if (!options_.kill_found_by_eof) NodeDown(n, "SIGKILLed by --kill_node");
}

void Router::AccountPlacement(const RequestState& r, const Placement& where) {
  // A node reports its load between compute steps, so a report can be a
  // prefill old: without this, every request placed meanwhile would see
  // the same "idle" node and go there. The work just placed counts at once;
  // the node's next report (which includes it) replaces the estimate.
  if (NodeInfo* p = view_.FindMutable(where.prefill_node); p != nullptr) {
    p->load.queued_prefill_tokens += r.record.prompt_tokens;
  }
  if (NodeInfo* d = view_.FindMutable(where.decode_node); d != nullptr) {
    d->load.waiting_decode += 1;
    const double blocks = std::ceil(
        static_cast<double>(r.record.prompt_tokens + r.record.output_tokens) /
        options_.model.block_tokens);
    d->load.kv_blocks_used =
        d->load.kv_blocks_total > 0
            ? std::min(d->load.kv_blocks_total, d->load.kv_blocks_used + blocks)
            : d->load.kv_blocks_used + blocks;
  }
}

void Router::PlacePending() {
  while (!pending_.empty()) {
    RequestState& r = requests_[pending_.front()];
    absl::StatusOr<Placement> where =
        scheduler_->Place({.id = r.record.id,
                           .input_tokens = r.record.prompt_tokens,
                           .expected_output_tokens = r.record.output_tokens},
                          view_, AbsNow());
    if (!where.ok()) return;  // nothing usable now: try again next turn
    pending_.pop_front();
    last_progress_ms_ = Now();
    if (options_.colocated) where->decode_node = where->prefill_node;
    r.record.prefill_node = where->prefill_node;
    r.record.decode_node = where->decode_node;
    r.colocated = where->colocated();
    AccountPlacement(r, *where);
    if (r.colocated) {
      r.phase = Phase::kPrefilling;
      SendTo(where->prefill_node, {.type = MessageType::kAssignPrefill,
                                   .request = r.record.id,
                                   .attempt = r.attempt,
                                   .peer = where->prefill_node,
                                   .max_new = r.request->max_new,
                                   .tokens = r.request->prompt});
    } else {
      r.phase = Phase::kAwaitBlocks;
      SendTo(where->decode_node, {.type = MessageType::kAssignDecode,
                                  .request = r.record.id,
                                  .attempt = r.attempt,
                                  .peer = where->prefill_node,
                                  .prompt_len = r.record.prompt_tokens,
                                  .max_new = r.request->max_new});
    }
  }
}

void Router::Rebalance() {
  ++info_.rebalances;
  std::vector<NodeRole> before;
  for (const NodeConn& n : nodes_) before.push_back(n.role);
  view_.TickRoleCycles();
  RebalancePlan plan = scheduler_->Rebalance(view_, AbsNow());
  for (const RoleDirective& d : plan.directives) {
    (void)view_.SetRole(d.node, d.role, d.cycles);
  }
  for (NodeConn& n : nodes_) {
    const NodeInfo* info = view_.Find(n.id);
    if (info == nullptr || !n.alive || info->current_role == n.role) continue;
    n.role = info->current_role;
    ++info_.role_switches;
    if (options_.verbose) {
      fmt::print(stderr, "router: node {} switches to {} ({})\n", n.id,
                 NodeRoleName(n.role), plan.reason);
    }
    SendTo(n.id, {.type = MessageType::kSetRole, .role = n.role});
  }
}

absl::Status Router::Run() {
  double next_rebalance = options_.rebalance_ms;
  while (done_ < requests_.size()) {
    const double now = Now();
    while (next_arrival_ < requests_.size() &&
           requests_[next_arrival_].record.arrival_ms <= now) {
      requests_[next_arrival_].phase = Phase::kPending;
      pending_.push_back(next_arrival_++);
    }
    PlacePending();
    if (options_.rebalance_ms > 0 && !options_.colocated &&
        now >= next_rebalance) {
      Rebalance();
      next_rebalance = now + options_.rebalance_ms;
    }
    // Nothing can be placed for 30 s while nothing runs: the cluster has no
    // node left for a phase; the pending requests fail.
    if (!pending_.empty() && now - last_progress_ms_ > 30000) {
      bool running = false;
      for (const RequestState& r : requests_) {
        if (r.phase > Phase::kPending && r.phase < Phase::kDone) running = true;
      }
      if (!running) {
        for (size_t i : pending_) {
          requests_[i].phase = Phase::kDone;
          requests_[i].record.failed = true;
          ++done_;
        }
        pending_.clear();
      }
    }
    MaybeKill();
    CheckEtcd();
    double wait = 20;
    if (next_arrival_ < requests_.size()) {
      wait = std::min(wait, requests_[next_arrival_].record.arrival_ms - now);
    }
    if (!pending_.empty()) wait = std::min(wait, 2.0);
    if (absl::Status s = PollNodes(static_cast<int>(wait)); !s.ok()) return s;
  }
  info_.duration_ms = Now();
  AwaitKilledExpired();
  return absl::OkStatus();
}

void Router::CheckEtcd() {
  std::string error;
  for (uint32_t id : members_->PollLost(Now(), &error)) {
    info_.etcd_lost_nodes.push_back(id);
    if (id < nodes_.size()) NodeDown(nodes_[id], "its etcd entry is gone");
  }
  if (!error.empty() && options_.verbose) {
    fmt::print(stderr, "router: etcd: {}\n", error);
  }
}

void Router::AwaitKilledExpired() {
  if (!members_->etcd()) return;
  // etcd grants at least ~2 s and rounds up to whole seconds.
  const double bound_ms =
      Now() + 2 * std::max(options_.etcd_ttl_ms, 2000.0) + 5000;
  auto all_seen = [&] {
    for (uint32_t k : info_.killed_nodes) {
      if (std::find(info_.etcd_lost_nodes.begin(), info_.etcd_lost_nodes.end(),
                    k) == info_.etcd_lost_nodes.end()) {
        return false;
      }
    }
    return true;
  };
  while (!all_seen() && Now() < bound_ms) {
    CheckEtcd();
    // Waits on the live nodes' sockets meanwhile (their reports).
    if (!PollNodes(20).ok()) break;
  }
}

void Router::Stop() { links_.StopAll(absl::Seconds(10)); }

RunReport Router::Report() {
  RunReport report;
  report.info = info_;
  report.info.policy = options_.colocated ? "colocated" : options_.policy;
  report.info.colocated = options_.colocated;
  report.info.prefill_nodes = options_.prefill_nodes;
  report.info.decode_nodes = options_.decode_nodes;
  for (RequestState& r : requests_) report.requests.push_back(r.record);
  report.samples = std::move(samples_);
  return report;
}

}  // namespace

absl::StatusOr<RunReport> RunCluster(
    const RouterOptions& options, const std::vector<ClusterRequest>& requests) {
  Router router(options, requests);
  absl::Status s = router.Start();
  if (s.ok()) s = router.Run();
  router.Stop();
  if (!s.ok()) return s;
  RunReport report = router.Report();
  // Exactness: each finished request against a colocated run of the same
  // model in this process.
  auto model = ModelRunner::Create(options.model);
  if (!model.ok()) return model.status();
  for (size_t i = 0; i < report.requests.size(); ++i) {
    RequestRecord& r = report.requests[i];
    if (!r.finished) continue;
    absl::StatusOr<std::vector<uint32_t>> reference =
        (*model)->Generate(requests[i].prompt, requests[i].max_new);
    r.exact = reference.ok() && *reference == r.tokens;
  }
  return report;
}

}  // namespace flowkv::cluster
