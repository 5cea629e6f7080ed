/* SPDX-License-Identifier: Apache-2.0 */
/* flowkv/c/layout.h: flowkv_layout_t, where each block's K and V live in a
 * pool's memory (flowkv/kv_layout.h): presets, vLLM and strided layouts,
 * their wire form and queries; and transfer planning
 * (flowkv/transfer_plan.h), which turns a request over two layouts into
 * engine ops. Part of flowkv/flowkv_c.h. */

#ifndef FLOWKV_C_LAYOUT_H_
#define FLOWKV_C_LAYOUT_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flowkv/c/allocator.h"
#include "flowkv/c/engine.h"
#include "flowkv/c/status.h"
#include "flowkv/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Immutable; thread-safe. */
typedef struct flowkv_layout flowkv_layout_t;

/* ---- Layouts ------------------------------------------------------------ */

/* KvGeometry: every field non-zero; num_parts 2 (K, V) or 1 (MLA). */
typedef struct flowkv_geometry {
  uint32_t num_layers;
  uint32_t num_blocks;
  uint32_t block_tokens;
  uint32_t kv_heads;
  uint32_t head_dim;
  uint32_t dtype_bytes;
  uint32_t num_parts;
} flowkv_geometry_t;

/* The named layouts of KvLayout (flowkv/kv_layout.h, docs/layouts.md). */
typedef enum flowkv_layout_preset {
  FLOWKV_LAYOUT_FLOWKV_BLOCK_MAJOR = 0,
  FLOWKV_LAYOUT_VLLM_FLASH_ATTN = 1,
  FLOWKV_LAYOUT_VLLM_FLASH_INFER = 2,
  FLOWKV_LAYOUT_VLLM_CROSS_LAYER = 3,
  FLOWKV_LAYOUT_SGLANG_MHA = 4,
  FLOWKV_LAYOUT_MLA = 5,
  FLOWKV_LAYOUT_TRTLLM_BLOCK_POOL = 6
} flowkv_layout_preset_t;

/* The element order inside a block (presets that take one; the others
 * require NHD). */
typedef enum flowkv_block_order {
  FLOWKV_BLOCK_ORDER_NHD = 0,
  FLOWKV_BLOCK_ORDER_HND = 1
} flowkv_block_order_t;

/* vLLM's standardized layouts (VllmKvLayout). */
typedef enum flowkv_vllm_layout {
  FLOWKV_VLLM_LBNHC = 0,
  FLOWKV_VLLM_LBHNC = 1,
  FLOWKV_VLLM_LHBNC = 2,
  FLOWKV_VLLM_BLNHC = 3,
  FLOWKV_VLLM_BLHNC = 4,
  FLOWKV_VLLM_BHLNC = 5
} flowkv_vllm_layout_t;

/* A preset layout. INVALID_ARGUMENT naming the field for a bad geometry or
 * an order the preset does not take. */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_create_preset(
    flowkv_layout_preset_t preset, const flowkv_geometry_t* geometry,
    flowkv_block_order_t order, flowkv_layout_t** layout);

/* KvLayout::Vllm; one_region_per_layer = RegionSplit::kOnePerLayer. */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_create_vllm(
    const flowkv_geometry_t* geometry, flowkv_vllm_layout_t vllm_layout,
    bool one_region_per_layer, flowkv_layout_t** layout);

/* KvTensor: where one (layer, part) tensor lives. */
typedef struct flowkv_tensor {
  uint32_t region;
  uint64_t offset;
  uint64_t block_stride;
  uint64_t token_stride;
  uint64_t head_stride;
} flowkv_tensor_t;

/* KvLayout::CreateStrided: tensors[layer * num_parts + part]. */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_create_strided(
    const flowkv_geometry_t* geometry, const flowkv_tensor_t* tensors,
    size_t num_tensors, flowkv_layout_t** layout);

/* Reads flowkv_layout_serialize's bytes (may come from the network). */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_parse(const void* bytes, size_t len,
                                                  flowkv_layout_t** layout);
/* The wire form (a blob; see "Output buffers"). */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_serialize(
    const flowkv_layout_t* layout, void* out, size_t capacity, size_t* length);
FLOWKV_EXPORT void flowkv_layout_free(flowkv_layout_t* layout);

FLOWKV_EXPORT flowkv_status_t flowkv_layout_geometry(
    const flowkv_layout_t* layout, flowkv_geometry_t* geometry);
/* e.g. "vllm_flash_infer(HND)" (a string; see "Output buffers"). */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_name(const flowkv_layout_t* layout,
                                                 char* name, size_t capacity,
                                                 size_t* length);
FLOWKV_EXPORT flowkv_status_t
flowkv_layout_num_regions(const flowkv_layout_t* layout, uint32_t* num_regions);
/* OUT_OF_RANGE for region >= num_regions. */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_region_bytes(
    const flowkv_layout_t* layout, uint32_t region, uint64_t* bytes);
FLOWKV_EXPORT flowkv_status_t
flowkv_layout_fingerprint(const flowkv_layout_t* layout, uint64_t* fingerprint);
/* Where the head vector (layer, part, block, token, head) starts; part 0 is
 * K (or the latent), 1 is V. OUT_OF_RANGE naming the index past its limit. */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_element_address(
    const flowkv_layout_t* layout, uint32_t layer, uint32_t part,
    uint32_t block, uint32_t token, uint32_t head, uint32_t* region,
    uint64_t* offset);
/* OK when pools of the two layouts can exchange KV; else INVALID_ARGUMENT
 * naming the field (CheckKvExchange). */
FLOWKV_EXPORT flowkv_status_t flowkv_layout_check_exchange(
    const flowkv_layout_t* a, const flowkv_layout_t* b);

/* ---- Transfer planning -------------------------------------------------- */

/* TransferPlanRequest: which tokens, layers and heads of a request move from
 * blocks of one pool to blocks of another (flowkv/transfer_plan.h). */
typedef struct flowkv_plan_request {
  const flowkv_layout_t* src_layout;
  flowkv_blocks_t src_blocks;
  const flowkv_layout_t* dst_layout;
  flowkv_blocks_t dst_blocks;
  uint64_t num_tokens;  /* 0: an empty plan */
  uint32_t layer_begin; /* [layer_begin, layer_end); (0, 0): every layer */
  uint32_t layer_end;
  uint32_t src_head_begin;
  uint32_t dst_head_begin;
  uint32_t num_heads; /* 0: every source head from src_head_begin */
} flowkv_plan_request_t;

/* The ops that copy the request (PlanTransfer), with layout region indices
 * as regions: map them to engine region ids before flowkv_engine_write.
 * Written to ops[0 .. *count); RESOURCE_EXHAUSTED with *count set when
 * capacity is too small. INVALID_ARGUMENT / OUT_OF_RANGE as PlanTransfer. */
FLOWKV_EXPORT flowkv_status_t
flowkv_plan_transfer(const flowkv_plan_request_t* request,
                     flowkv_transfer_op_t* ops, size_t capacity, size_t* count);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWKV_C_LAYOUT_H_ */
