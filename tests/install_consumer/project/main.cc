// SPDX-License-Identifier: Apache-2.0
// A program outside the project, built against the installed libflowkv.
#include <cstdio>

#include "flowkv/block_allocator.h"

int main() {
  auto allocator = flowkv::BlockAllocator::Create({.num_blocks = 1024});
  if (!allocator.ok()) return 1;
  absl::StatusOr<flowkv::BlockList> blocks = (*allocator)->Allocate(100);
  if (!blocks.ok()) return 2;
  std::printf("runs=%zu\n", blocks->num_runs());
  return (*allocator)->Free(*blocks).ok() ? 0 : 3;
}
