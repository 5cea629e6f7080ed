// SPDX-License-Identifier: Apache-2.0
// Private helpers shared by the built-in scheduling policies.

#ifndef FLOWKV_LIB_SCHEDULER_POLICY_UTIL_H_
#define FLOWKV_LIB_SCHEDULER_POLICY_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "flowkv/scheduler.h"

namespace flowkv::internal {

// Reads a policy's SchedulerOptions::params: each Get names one knob; Finish
// reports out-of-range values and names nobody asked for.
// Thread safety: externally synchronized.
class ParamReader {
 public:
  ParamReader(std::string_view policy, const SchedulerOptions& options);

  // params[name] when set, else `default_value`. A value outside
  // [min_value, max_value] (or NaN) is recorded as an error.
  double Get(std::string_view name, double default_value, double min_value,
             double max_value);
  // As Get, and the value must be a whole number.
  uint32_t GetUint(std::string_view name, uint32_t default_value,
                   uint32_t min_value, uint32_t max_value);

  // InvalidArgument for the first bad value, or for a name in params that no
  // Get asked for (the message lists the known names).
  absl::Status Finish() const;

 private:
  std::string policy_;
  const SchedulerOptions& options_;
  std::vector<std::string> known_;
  absl::Status status_;
};

// Whether a node is usable at one instant: ClusterView::IsUsable with the
// staleness cutoff computed once per call instead of once per node.
class UsableAt {
 public:
  UsableAt(const ClusterView& cluster, absl::Time now)
      : cutoff_(now - cluster.options().stale_after) {}
  bool Fresh(const NodeInfo& node) const {
    return node.last_report == absl::InfinitePast() ||
           node.last_report >= cutoff_;
  }

 private:
  absl::Time cutoff_;
};

// Why nodes were passed over while choosing a node for one phase; turned
// into the error message when no node is left.
struct SkipCounts {
  uint32_t wrong_role = 0;
  uint32_t unavailable = 0;
  uint32_t stale = 0;
  uint32_t no_capacity = 0;
  // The usable node with the most free KV blocks among those without
  // capacity (for the ResourceExhausted message).
  NodeId most_free_node = 0;
  double most_free_blocks = -1;
  uint32_t most_free_block_tokens = 0;
};

// Classifies `node` for a phase: true when usable and serving the phase;
// otherwise counts why not.
inline bool Candidate(const NodeInfo& node, bool prefill, const UsableAt& at,
                      SkipCounts* skips) {
  if (!(prefill ? ServesPrefill(node.current_role)
                : ServesDecode(node.current_role))) {
    ++skips->wrong_role;
    return false;
  }
  if (!node.available) {
    ++skips->unavailable;
    return false;
  }
  if (!at.Fresh(node)) {
    ++skips->stale;
    return false;
  }
  return true;
}

// KV tokens a request needs on its decode node: input + expected output
// (`default_output_tokens` when the request gives none).
inline double KvTokens(const RequestInfo& request,
                       double default_output_tokens) {
  const double out = request.expected_output_tokens > 0
                         ? request.expected_output_tokens
                         : default_output_tokens;
  return static_cast<double>(request.input_tokens) + out;
}

// Free KV blocks on a node; +inf when its capacity is unknown (total 0).
inline double FreeBlocks(const NodeInfo& node) {
  if (node.load.kv_blocks_total <= 0) {
    return std::numeric_limits<double>::infinity();
  }
  return node.load.kv_blocks_total - node.load.kv_blocks_used;
}

// Whether `node` has room for `kv_tokens` tokens of KV; counts it otherwise.
inline bool HasCapacity(const NodeInfo& node, double kv_tokens,
                        SkipCounts* skips) {
  const double need = std::ceil(kv_tokens / node.block_tokens);
  const double free = FreeBlocks(node);
  if (free >= need) return true;
  ++skips->no_capacity;
  if (free > skips->most_free_blocks) {
    skips->most_free_blocks = free;
    skips->most_free_node = node.id;
    skips->most_free_block_tokens = node.block_tokens;
  }
  return false;
}

// The error for "no node for this phase": ResourceExhausted when usable
// decode nodes were passed over only for KV capacity, Unavailable otherwise.
absl::Status NoNodeError(std::string_view policy, bool prefill,
                         const RequestInfo& request, double kv_tokens,
                         size_t num_nodes, const SkipCounts& skips);

// Calls fn(node) for every node, starting at index `start % n` and wrapping
// around (rotates which of several equal nodes an argmin keeps).
template <typename Fn>
void ForEachFrom(const std::vector<NodeInfo>& nodes, size_t start, Fn&& fn) {
  const size_t n = nodes.size();
  if (n == 0) return;
  start %= n;
  for (size_t i = start; i < n; ++i) fn(nodes[i]);
  for (size_t i = 0; i < start; ++i) fn(nodes[i]);
}

// The decode node for a request whose prefill runs on `prefill`: among the
// candidates with room for `kv_tokens`, the one with the lowest
// transfer_ms(node) + decode_weight x output x its predicted decode step.
// transfer_ms prices the KV that crosses to the node (0 for `prefill`
// itself); load_aware moves the whole prompt, kv_aware only what the node
// lacks. `node` is null when none qualifies (`skips` says why).
struct DecodeChoice {
  const NodeInfo* node = nullptr;
  double transfer_ms = 0;
};
template <typename TransferFn>
DecodeChoice ChooseDecodeNode(const std::vector<NodeInfo>& nodes, size_t start,
                              const UsableAt& at, double kv_tokens,
                              double input, double output, double decode_weight,
                              TransferFn&& transfer_ms, SkipCounts* skips) {
  DecodeChoice best;
  double best_cost = 0;
  ForEachFrom(nodes, start, [&](const NodeInfo& node) {
    if (!Candidate(node, /*prefill=*/false, at, skips)) return;
    if (!HasCapacity(node, kv_tokens, skips)) return;
    const NodeLoad& l = node.load;
    const double transfer = transfer_ms(node);
    const double step =
        node.cost.DecodeStepMs(l.running_decode + l.waiting_decode + 1,
                               l.decode_context_tokens + input + output / 2);
    const double cost = transfer + decode_weight * output * step;
    if (best.node == nullptr || cost < best_cost) {
      best = {&node, transfer};
      best_cost = cost;
    }
  });
  return best;
}

// Time to prefill `tokens` in batches of at most `chunk` tokens (ms).
inline double ChunkedPrefillMs(const NodeCostModel& cost, double tokens,
                               double chunk) {
  if (tokens <= 0) return 0;
  const double full = std::floor(tokens / chunk);
  const double rest = tokens - full * chunk;
  double ms = full * cost.PrefillMs(chunk);
  if (rest > 0) ms += cost.PrefillMs(rest);
  return ms;
}

// Time to prefill `fresh` prompt tokens after `cached` tokens of the same
// prompt were found in the prefix cache, in chunks of at most `chunk`
// tokens (ms): each chunk costs a + b*n + c*((done+n)^2 - done^2), its
// attention covering the prompt so far (the simulator's chunked formula).
inline double PrefillAfterCacheMs(const NodeCostModel& cost, double cached,
                                  double fresh, double chunk) {
  double ms = 0;
  double done = cached;
  while (fresh > 0) {
    const double n = std::min(fresh, chunk);
    ms +=
        cost.a + cost.b * n + cost.c * ((done + n) * (done + n) - done * done);
    done += n;
    fresh -= n;
  }
  return ms;
}

// Sets `*blocks` to the cached prefix, in blocks, of `request` on each node
// of `cluster` (same order as cluster.nodes(); 0 for nodes the index does
// not list). `matches` is scratch space.
inline void CachedBlocksPerNode(const ClusterView& cluster,
                                const RequestInfo& request,
                                std::vector<PrefixMatch>* matches,
                                std::vector<uint32_t>* blocks) {
  const std::vector<NodeInfo>& nodes = cluster.nodes();
  blocks->assign(nodes.size(), 0);
  if (request.block_hashes.empty()) return;
  cluster.prefix_index().Match(request.block_hashes, matches);
  for (const PrefixMatch& m : *matches) {
    if (const NodeInfo* node = cluster.Find(m.node)) {
      (*blocks)[static_cast<size_t>(node - nodes.data())] = m.blocks;
    }
  }
}

// Cached prompt tokens a node can reuse: its cached blocks, at most the
// prompt less one token (the last token is always computed, as engines do).
inline double ReusableTokens(const NodeInfo& node, uint32_t cached_blocks,
                             double input_tokens) {
  if (input_tokens < 1) return 0;
  return std::min(static_cast<double>(cached_blocks) * node.block_tokens,
                  input_tokens - 1);
}

// The options the fixed-role and score-based policies share (see
// docs/scheduler.md): colocate_hybrid, check_kv_capacity and
// default_output_tokens.
struct PlacementOptions {
  bool colocate_hybrid = true;
  bool check_kv_capacity = false;
  double default_output_tokens = 128;
};

// Reads the shared options; check_kv_capacity's default is the policy's.
inline PlacementOptions ReadPlacementOptions(ParamReader& params,
                                             bool check_kv_capacity_default) {
  PlacementOptions o;
  o.colocate_hybrid = params.GetUint("colocate_hybrid", 1, 0, 1) != 0;
  o.check_kv_capacity =
      params.GetUint("check_kv_capacity", check_kv_capacity_default ? 1 : 0, 0,
                     1) != 0;
  o.default_output_tokens =
      params.Get("default_output_tokens", o.default_output_tokens, 0, 1e9);
  return o;
}

// The placement of the score-based policies (least_loaded, kv_cost): P is
// the usable prefill node with the lowest p_score(node), D the usable decode
// node with KV room (when checked) and the lowest d_score(node), or the P
// node itself when it is hybrid and colocate_hybrid is set. Scans start just
// after the previous choice, so nodes with equal scores take turns.
// Thread safety: externally synchronized (the scan cursors).
class ArgminPlacer {
 public:
  ArgminPlacer(std::string_view policy, const PlacementOptions& options)
      : policy_(policy),
        colocate_hybrid_(options.colocate_hybrid),
        check_kv_capacity_(options.check_kv_capacity),
        default_output_tokens_(options.default_output_tokens) {}

  // KV tokens the request needs (prompt + expected output).
  double KvTokensOf(const RequestInfo& request) const {
    return KvTokens(request, default_output_tokens_);
  }

  template <typename PScore, typename DScore>
  absl::StatusOr<Placement> Place(const RequestInfo& request,
                                  const ClusterView& cluster, absl::Time now,
                                  PScore p_score, DScore d_score) {
    const std::vector<NodeInfo>& nodes = cluster.nodes();
    const UsableAt at(cluster, now);
    const double kv_tokens = KvTokensOf(request);

    SkipCounts p_skips;
    const NodeInfo* p = nullptr;
    double p_best = std::numeric_limits<double>::infinity();
    ForEachFrom(nodes, p_start_, [&](const NodeInfo& node) {
      if (!Candidate(node, /*prefill=*/true, at, &p_skips)) return;
      const double score = p_score(node);
      if (p == nullptr || score < p_best) {
        p = &node;
        p_best = score;
      }
    });
    if (p == nullptr) {
      return NoNodeError(policy_, true, request, kv_tokens, nodes.size(),
                         p_skips);
    }

    SkipCounts d_skips;
    const NodeInfo* d = nullptr;
    if (colocate_hybrid_ && p->current_role == NodeRole::kHybrid) {
      SkipCounts ignored;
      if (!check_kv_capacity_ || HasCapacity(*p, kv_tokens, &ignored)) d = p;
    }
    if (d == nullptr) {
      double d_best = std::numeric_limits<double>::infinity();
      ForEachFrom(nodes, d_start_, [&](const NodeInfo& node) {
        if (!Candidate(node, /*prefill=*/false, at, &d_skips)) return;
        if (check_kv_capacity_ && !HasCapacity(node, kv_tokens, &d_skips)) {
          return;
        }
        const double score = d_score(node);
        if (d == nullptr || score < d_best) {
          d = &node;
          d_best = score;
        }
      });
    }
    if (d == nullptr) {
      return NoNodeError(policy_, false, request, kv_tokens, nodes.size(),
                         d_skips);
    }
    p_start_ = static_cast<size_t>(p - nodes.data()) + 1;
    d_start_ = static_cast<size_t>(d - nodes.data()) + 1;
    return Placement{.prefill_node = p->id, .decode_node = d->id};
  }

 private:
  const std::string_view policy_;
  const bool colocate_hybrid_;
  const bool check_kv_capacity_;
  const double default_output_tokens_;
  size_t p_start_ = 0;
  size_t d_start_ = 0;
};

// Factories of the built-in policies (registered by the registry).
absl::StatusOr<std::unique_ptr<Scheduler>> MakeRoundRobin(
    const SchedulerOptions& options);
absl::StatusOr<std::unique_ptr<Scheduler>> MakeLeastLoaded(
    const SchedulerOptions& options);
absl::StatusOr<std::unique_ptr<Scheduler>> MakeKvCost(
    const SchedulerOptions& options);
absl::StatusOr<std::unique_ptr<Scheduler>> MakeLoadAware(
    const SchedulerOptions& options);
absl::StatusOr<std::unique_ptr<Scheduler>> MakeKvAware(
    const SchedulerOptions& options);
absl::StatusOr<std::unique_ptr<Scheduler>> MakePrefixCost(
    const SchedulerOptions& options);

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_SCHEDULER_POLICY_UTIL_H_
