// SPDX-License-Identifier: Apache-2.0
/* A C program outside the project, built against the installed libflowkv
 * through its C API only (flowkv/flowkv_c.h). */
#include <stdio.h>

#include "flowkv/flowkv_c.h"

int main(void) {
  flowkv_allocator_options_t options;
  flowkv_allocator_options_init(&options);
  options.num_blocks = 1024;
  flowkv_allocator_t* allocator = NULL;
  if (flowkv_allocator_create(&options, &allocator) != FLOWKV_OK) return 1;
  flowkv_block_list_t* blocks = NULL;
  if (flowkv_allocator_allocate(allocator, 100, &blocks) != FLOWKV_OK) {
    return 2;
  }
  printf("c version=%s runs=%zu\n", flowkv_version(),
         flowkv_block_list_num_runs(blocks));
  const int freed = flowkv_allocator_free_blocks(allocator, blocks);
  flowkv_block_list_destroy(blocks);
  flowkv_allocator_destroy(allocator);
  return freed == FLOWKV_OK ? 0 : 3;
}
