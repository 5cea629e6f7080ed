// SPDX-License-Identifier: Apache-2.0
// A block manager's view of libflowkv: allocate KV blocks for requests,
// grow them during decode, free them, and look at fragmentation.
//
//   build/bin/allocator_example
#include <fmt/core.h>
#include <vector>

#include "flowkv/block_allocator.h"
#include "flowkv/kv_layout.h"

int main() {
  // Llama-3.1-8B: 32 layers, 8 KV heads of 128 dims, bf16, 16-token blocks.
  absl::StatusOr<flowkv::KvLayout> layout =
      flowkv::KvLayout::Create({.geometry = {.num_layers = 32,
                                             .num_blocks = 8192,
                                             .block_tokens = 16,
                                             .kv_heads = 8,
                                             .head_dim = 128,
                                             .dtype_bytes = 2}});
  if (!layout.ok()) {
    fmt::print(stderr, "layout: {}\n", layout.status().ToString());
    return 1;
  }
  auto allocator = flowkv::BlockAllocator::Create(
      {.num_blocks = layout->geometry().num_blocks});
  if (!allocator.ok()) return 1;

  // Three prompts arrive; each gets its blocks as one run.
  std::vector<flowkv::BlockList> requests;
  for (uint32_t prompt_tokens : {8000u, 1200u, 30000u}) {
    const uint32_t blocks = (prompt_tokens + 15) / 16;
    absl::StatusOr<flowkv::BlockList> list = (*allocator)->Allocate(blocks);
    if (!list.ok()) {
      fmt::print(stderr, "allocate: {}\n", list.status().ToString());
      return 1;
    }
    auto ranges = layout->BlockListRanges(*list);
    fmt::print(
        "prompt {:>6} tokens -> blocks {} -> {} byte range(s), {:.1f} MiB\n",
        prompt_tokens, list->ToString(), ranges->size(),
        list->num_blocks() * layout->block_bytes() / 1048576.0);
    requests.push_back(*std::move(list));
  }

  // The middle request finishes; its hole is reused by best fit.
  if (!(*allocator)->Free(requests[1]).ok()) return 1;
  absl::StatusOr<flowkv::BlockList> small = (*allocator)->Allocate(50);
  fmt::print("after freeing the 1200-token request, 50 blocks -> {}\n",
             small->ToString());

  // Decode growth: one block at a time, in place while the next is free.
  for (int step = 0; step < 3; ++step) {
    if (!(*allocator)->Extend(&*small, 1).ok()) return 1;
  }
  fmt::print("after 3 decode blocks -> {}\n", small->ToString());

  // A request larger than the pool's free space fails and changes nothing.
  absl::StatusOr<flowkv::BlockList> huge = (*allocator)->Allocate(9000);
  fmt::print("9000 blocks -> {}\n", huge.status().ToString());

  const flowkv::BlockAllocatorStats stats = (*allocator)->Stats();
  fmt::print(
      "free {} of {} blocks in {} run(s), largest {}; {} live lists, "
      "{:.2f} runs per list\n",
      stats.free_blocks, stats.num_blocks, stats.free_runs,
      stats.largest_free_run, stats.live_lists, stats.MeanRunsPerList());
  return 0;
}
