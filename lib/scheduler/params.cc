// SPDX-License-Identifier: Apache-2.0
#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "lib/scheduler/policy_util.h"

namespace flowkv::internal {

ParamReader::ParamReader(std::string_view policy,
                         const SchedulerOptions& options)
    : policy_(policy), options_(options) {}

double ParamReader::Get(std::string_view name, double default_value,
                        double min_value, double max_value) {
  known_.emplace_back(name);
  auto it = options_.params.find(std::string(name));
  if (it == options_.params.end()) return default_value;
  const double v = it->second;
  if (!(v >= min_value && v <= max_value) && status_.ok()) {
    status_ = absl::InvalidArgumentError(
        absl::StrFormat("%s: param %s = %g is outside [%g, %g]", policy_, name,
                        v, min_value, max_value));
  }
  return v;
}

uint32_t ParamReader::GetUint(std::string_view name, uint32_t default_value,
                              uint32_t min_value, uint32_t max_value) {
  const double v = Get(name, default_value, min_value, max_value);
  if (std::floor(v) != v && status_.ok()) {
    status_ = absl::InvalidArgumentError(absl::StrFormat(
        "%s: param %s = %g must be a whole number", policy_, name, v));
  }
  if (!(v >= min_value && v <= max_value)) return default_value;
  return static_cast<uint32_t>(v);
}

absl::Status ParamReader::Finish() const {
  if (!status_.ok()) return status_;
  for (const auto& [name, value] : options_.params) {
    if (std::find(known_.begin(), known_.end(), name) == known_.end()) {
      std::vector<std::string> sorted = known_;
      std::sort(sorted.begin(), sorted.end());
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: unknown param '%s'; known: %s", policy_, name,
                          sorted.empty() ? std::string("(none)")
                                         : absl::StrJoin(sorted, ", ")));
    }
  }
  return absl::OkStatus();
}

absl::Status NoNodeError(std::string_view policy, bool prefill,
                         const RequestInfo& request, double kv_tokens,
                         size_t num_nodes, const SkipCounts& skips) {
  const char* phase = prefill ? "prefill" : "decode";
  if (skips.no_capacity > 0) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: no %s node has KV capacity for request %d: it needs %g tokens "
        "(input + expected output); %u usable %s nodes, the most free is node "
        "%u with %g blocks of %u tokens",
        policy, phase, request.id, kv_tokens, skips.no_capacity, phase,
        skips.most_free_node, skips.most_free_blocks,
        skips.most_free_block_tokens));
  }
  return absl::UnavailableError(absl::StrFormat(
      "%s: no usable %s node for request %d (%d nodes: %u not serving %s, %u "
      "unavailable, %u stale)",
      policy, phase, request.id, num_nodes, skips.wrong_role, phase,
      skips.unavailable, skips.stale));
}

}  // namespace flowkv::internal
