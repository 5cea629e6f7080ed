// SPDX-License-Identifier: Apache-2.0
// ApplyPlanLocally: executes a TransferPlan with memcpy between host regions
// of this process, after checking every op against the regions' bounds.
#include <cstring>

#include "absl/strings/str_format.h"
#include "flowkv/transfer_plan.h"

namespace flowkv {

absl::Status ApplyPlanLocally(
    absl::Span<const TransferOp> ops,
    absl::Span<const absl::Span<const uint8_t>> src_regions,
    absl::Span<const absl::Span<uint8_t>> dst_regions) {
  for (size_t i = 0; i < ops.size(); ++i) {
    const TransferOp& op = ops[i];
    if (op.src_region >= src_regions.size() ||
        op.dst_region >= dst_regions.size()) {
      return absl::OutOfRangeError(absl::StrFormat(
          "ApplyPlanLocally: op %u names region src %u / dst %u, have %u / %u",
          i, op.src_region, op.dst_region, src_regions.size(),
          dst_regions.size()));
    }
    const uint64_t src_size = src_regions[op.src_region].size();
    const uint64_t dst_size = dst_regions[op.dst_region].size();
    if (op.src_offset > src_size || op.length > src_size - op.src_offset ||
        op.dst_offset > dst_size || op.length > dst_size - op.dst_offset) {
      return absl::OutOfRangeError(absl::StrFormat(
          "ApplyPlanLocally: op %u (src %u:%u, dst %u:%u, length %u) leaves "
          "its regions (%u and %u bytes)",
          i, op.src_region, op.src_offset, op.dst_region, op.dst_offset,
          op.length, src_size, dst_size));
    }
  }
  for (const TransferOp& op : ops) {
    std::memcpy(dst_regions[op.dst_region].data() + op.dst_offset,
                src_regions[op.src_region].data() + op.src_offset, op.length);
  }
  return absl::OkStatus();
}

}  // namespace flowkv
