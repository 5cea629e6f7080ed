// TransferPlan: the minimal list of copy ops that moves a request's KV cache
// from a source pool to a destination pool.
//
// (Interface placeholder: the planner is being written; see issue 3.)

#ifndef FLOWKV_TRANSFER_PLAN_H_
#define FLOWKV_TRANSFER_PLAN_H_

#include <cstdint>

namespace flowkv {

// One contiguous copy: `length` bytes from (src_region, src_offset) of the
// source pool to (dst_region, dst_offset) of the destination pool. Region
// indices are those of the pools' KvLayouts.
struct TransferOp {
  uint32_t src_region = 0;
  uint64_t src_offset = 0;
  uint32_t dst_region = 0;
  uint64_t dst_offset = 0;
  uint64_t length = 0;

  friend bool operator==(const TransferOp&, const TransferOp&) = default;
};

}  // namespace flowkv

#endif  // FLOWKV_TRANSFER_PLAN_H_
