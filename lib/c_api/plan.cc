// SPDX-License-Identifier: Apache-2.0
// The C API of the transfer planner (flowkv_plan_transfer in
// include/flowkv/flowkv_c.h): the ops that copy a request between two pools.
#include <vector>

#include "absl/strings/str_cat.h"
#include "flowkv/transfer_plan.h"
#include "lib/c_api/c_api_internal.h"

using flowkv::c_api::Guard;
using flowkv::c_api::NotNull;

extern "C" {

flowkv_status_t flowkv_plan_transfer(const flowkv_plan_request_t* request,
                                     flowkv_transfer_op_t* ops, size_t capacity,
                                     size_t* count) {
  static constexpr char kFn[] = "flowkv_plan_transfer";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, request, "request"); !s.ok()) return s;
    if (absl::Status s =
            NotNull(kFn, request->src_layout, "request->src_layout");
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            NotNull(kFn, request->dst_layout, "request->dst_layout");
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            flowkv::c_api::OutBuffer(kFn, ops, capacity, count, "ops");
        !s.ok()) {
      return s;
    }
    auto src = flowkv::c_api::BlocksFromC(kFn, request->src_blocks,
                                          "request->src_blocks");
    if (!src.ok()) return src.status();
    auto dst = flowkv::c_api::BlocksFromC(kFn, request->dst_blocks,
                                          "request->dst_blocks");
    if (!dst.ok()) return dst.status();
    flowkv::TransferPlanRequest plan_request;
    plan_request.src_layout = &request->src_layout->layout;
    plan_request.src_blocks = *std::move(src);
    plan_request.dst_layout = &request->dst_layout->layout;
    plan_request.dst_blocks = *std::move(dst);
    plan_request.num_tokens = request->num_tokens;
    plan_request.layer_begin = request->layer_begin;
    plan_request.layer_end = request->layer_end;
    plan_request.src_head_begin = request->src_head_begin;
    plan_request.dst_head_begin = request->dst_head_begin;
    plan_request.num_heads = request->num_heads;
    absl::StatusOr<std::vector<flowkv::TransferOp>> plan =
        flowkv::PlanTransfer(plan_request);
    if (!plan.ok()) return plan.status();
    *count = plan->size();
    if (capacity < plan->size()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          kFn, ": the plan has ", plan->size(), " ops, ops holds ", capacity));
    }
    for (size_t i = 0; i < plan->size(); ++i) {
      const flowkv::TransferOp& op = (*plan)[i];
      ops[i] = {.src_region = op.src_region,
                .src_offset = op.src_offset,
                .dst_region = op.dst_region,
                .dst_offset = op.dst_offset,
                .length = op.length};
    }
    return absl::OkStatus();
  });
}

}  // extern "C"
