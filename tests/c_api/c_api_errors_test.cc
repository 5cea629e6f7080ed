// SPDX-License-Identifier: Apache-2.0
// The C API's error paths (include/flowkv/flowkv_c.h, "Errors") for the
// objects that need no connection: status names and the last error, block
// lists, the allocator and layouts. Every null or bad argument gives the
// documented code and a message naming it, output arguments stay untouched,
// and the object the call was made on is unchanged; output buffers that are
// too small report the length needed. c_api_engine_errors_test.cc covers
// engines, handles and KV transfers (the same test binary).
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/flowkv_c.h"
#include "flowkv/version.h"
#include "tests/support/c_api_test_util.h"

using flowkv::c_api_testing::kGeometry;
using flowkv::c_api_testing::MakeLayout;

TEST_CASE("c_api: status names, version and the last error", "[c_api]") {
  REQUIRE(std::string(flowkv_version()) == FLOWKV_VERSION_STRING);
  REQUIRE(std::string(flowkv_status_name(FLOWKV_OK)) == "OK");
  REQUIRE(std::string(flowkv_status_name(FLOWKV_INVALID_ARGUMENT)) ==
          "INVALID_ARGUMENT");
  REQUIRE(std::string(flowkv_status_name(FLOWKV_UNAUTHENTICATED)) ==
          "UNAUTHENTICATED");
  REQUIRE(std::string(flowkv_status_name(99)) == "UNKNOWN_CODE");

  REQUIRE_FAILS(flowkv_block_list_create(nullptr), FLOWKV_INVALID_ARGUMENT,
                "flowkv_block_list_create: list is null");
  flowkv_block_list_t* list = nullptr;
  REQUIRE_OK(flowkv_block_list_create(&list));  // clears the message
  REQUIRE(std::string(flowkv_last_error_message()).empty());
  flowkv_block_list_destroy(list);
  // Release functions and initializers accept NULL.
  flowkv_block_list_destroy(nullptr);
  flowkv_allocator_destroy(nullptr);
  flowkv_layout_free(nullptr);
  flowkv_engine_destroy(nullptr);
  flowkv_handle_free(nullptr);
  flowkv_kv_destroy(nullptr);
  flowkv_kv_results_free(nullptr);
  flowkv_engine_options_init(nullptr);
  flowkv_kv_options_init(nullptr);
  flowkv_kv_request_init(nullptr);
  flowkv_allocator_options_init(nullptr);
}

TEST_CASE("c_api: block lists refuse bad arguments and stay unchanged",
          "[c_api]") {
  flowkv_block_list_t* list = nullptr;
  const flowkv_block_run_t runs[] = {{10, 4}, {2, 1}};
  REQUIRE_OK(flowkv_block_list_from_runs(runs, 2, &list));
  REQUIRE(flowkv_block_list_num_runs(list) == 2);
  REQUIRE(flowkv_block_list_num_blocks(list) == 5);

  flowkv_block_list_t* untouched = list;
  REQUIRE_FAILS(flowkv_block_list_from_runs(nullptr, 3, &untouched),
                FLOWKV_INVALID_ARGUMENT, "runs is null but its length is 3");
  REQUIRE_FAILS(flowkv_block_list_from_ids(nullptr, 1, &untouched),
                FLOWKV_INVALID_ARGUMENT, "ids is null");
  const flowkv_block_run_t past_end[] = {{0xFFFFFFF0u, 0x20}};
  REQUIRE_FAILS(flowkv_block_list_from_runs(past_end, 1, &untouched),
                FLOWKV_INVALID_ARGUMENT, "runs[0]");
  REQUIRE(untouched == list);
  // Every constructor takes block ids up to UINT32_MAX - 1, none beyond.
  const uint32_t last_ids[] = {0xFFFFFFFEu};
  const flowkv_block_run_t last_run[] = {{0xFFFFFFFEu, 1}};
  const uint32_t past_ids[] = {3, 0xFFFFFFFFu};
  const flowkv_block_run_t past_run[] = {{0xFFFFFFFFu, 1}};
  flowkv_block_list_t* edge = nullptr;
  REQUIRE_OK(flowkv_block_list_from_ids(last_ids, 1, &edge));
  flowkv_block_list_destroy(edge);
  edge = nullptr;
  REQUIRE_OK(flowkv_block_list_from_runs(last_run, 1, &edge));
  REQUIRE_OK(flowkv_block_list_append(edge, 0xFFFFFFFEu, 1));
  flowkv_block_list_destroy(edge);
  REQUIRE_FAILS(flowkv_block_list_from_ids(past_ids, 2, &untouched),
                FLOWKV_INVALID_ARGUMENT,
                "ids[1] {first 4294967295, count 1} passes the last block id");
  REQUIRE_FAILS(flowkv_block_list_from_runs(past_run, 1, &untouched),
                FLOWKV_INVALID_ARGUMENT, "passes the last block id");
  REQUIRE(untouched == list);

  REQUIRE_FAILS(flowkv_block_list_append(nullptr, 1, 1),
                FLOWKV_INVALID_ARGUMENT, "list is null");
  REQUIRE_FAILS(flowkv_block_list_append(list, 0xFFFFFFFFu, 1),
                FLOWKV_INVALID_ARGUMENT, "passes the last block id");
  REQUIRE(flowkv_block_list_num_blocks(list) == 5);

  flowkv_block_run_t out[2] = {{7, 7}, {7, 7}};
  size_t count = 99;
  REQUIRE_FAILS(flowkv_block_list_runs(list, out, 1, &count),
                FLOWKV_RESOURCE_EXHAUSTED, "2 runs");
  REQUIRE(count == 2);  // the length needed
  REQUIRE(out[0].first == 7);
  REQUIRE_FAILS(flowkv_block_list_runs(list, nullptr, 2, &count),
                FLOWKV_INVALID_ARGUMENT, "out is null");
  REQUIRE_FAILS(flowkv_block_list_runs(list, out, 2, nullptr),
                FLOWKV_INVALID_ARGUMENT, "length pointer");
  REQUIRE_FAILS(flowkv_block_list_runs(nullptr, out, 2, &count),
                FLOWKV_INVALID_ARGUMENT, "list is null");
  REQUIRE_OK(flowkv_block_list_runs(list, out, 2, &count));
  REQUIRE(out[0].first == 10);
  REQUIRE(out[1].count == 1);

  uint32_t ids[5] = {0};
  REQUIRE_FAILS(flowkv_block_list_ids(list, ids, 4, &count),
                FLOWKV_RESOURCE_EXHAUSTED, "5 blocks");
  REQUIRE(ids[0] == 0);
  REQUIRE_OK(flowkv_block_list_ids(list, ids, 5, &count));
  REQUIRE(std::vector<uint32_t>(ids, ids + 5) ==
          std::vector<uint32_t>{10, 11, 12, 13, 2});

  REQUIRE(flowkv_block_list_num_runs(nullptr) == 0);
  REQUIRE(flowkv_block_list_num_blocks(nullptr) == 0);
  flowkv_block_list_destroy(list);
}

TEST_CASE("c_api: allocator errors change nothing", "[c_api]") {
  flowkv_allocator_options_t options;
  flowkv_allocator_options_init(&options);
  REQUIRE(options.growth_slack_blocks == 32);
  flowkv_allocator_t* allocator = nullptr;
  REQUIRE_FAILS(flowkv_allocator_create(&options, &allocator),
                FLOWKV_INVALID_ARGUMENT, "num_blocks");
  REQUIRE(allocator == nullptr);
  REQUIRE_FAILS(flowkv_allocator_create(nullptr, &allocator),
                FLOWKV_INVALID_ARGUMENT, "options is null");
  options.num_blocks = 8;
  REQUIRE_FAILS(flowkv_allocator_create(&options, nullptr),
                FLOWKV_INVALID_ARGUMENT, "allocator is null");
  REQUIRE_OK(flowkv_allocator_create(&options, &allocator));

  flowkv_block_list_t* list = nullptr;
  REQUIRE_OK(flowkv_allocator_allocate(allocator, 6, &list));
  flowkv_allocator_stats_t before;
  REQUIRE_OK(flowkv_allocator_stats(allocator, &before));
  REQUIRE(before.free_blocks == 2);

  flowkv_block_list_t* other = nullptr;
  REQUIRE_FAILS(flowkv_allocator_allocate(allocator, 3, &other),
                FLOWKV_RESOURCE_EXHAUSTED, "");
  REQUIRE(other == nullptr);
  REQUIRE_FAILS(flowkv_allocator_allocate(allocator, 0, &other),
                FLOWKV_INVALID_ARGUMENT, "");
  REQUIRE_FAILS(flowkv_allocator_allocate(nullptr, 1, &other),
                FLOWKV_INVALID_ARGUMENT, "allocator is null");
  REQUIRE_FAILS(flowkv_allocator_allocate(allocator, 1, nullptr),
                FLOWKV_INVALID_ARGUMENT, "list is null");
  REQUIRE_FAILS(
      flowkv_allocator_allocate_after(allocator, 1, {0xFFFFFFFFu, 2}, &other),
      FLOWKV_INVALID_ARGUMENT, "after");
  REQUIRE_FAILS(flowkv_allocator_extend(allocator, list, 3),
                FLOWKV_RESOURCE_EXHAUSTED, "");
  REQUIRE(flowkv_block_list_num_blocks(list) == 6);
  REQUIRE_FAILS(flowkv_allocator_extend(allocator, nullptr, 1),
                FLOWKV_INVALID_ARGUMENT, "list is null");

  // A list of blocks that are not allocated: nothing freed or shared.
  flowkv_block_list_t* foreign = nullptr;
  const uint32_t foreign_ids[] = {7};
  REQUIRE_OK(flowkv_block_list_from_ids(foreign_ids, 1, &foreign));
  REQUIRE_FAILS(flowkv_allocator_free_blocks(allocator, foreign),
                FLOWKV_INVALID_ARGUMENT, "");
  REQUIRE_FAILS(flowkv_allocator_share_blocks(allocator, foreign),
                FLOWKV_INVALID_ARGUMENT, "");
  REQUIRE_FAILS(flowkv_allocator_free_blocks(allocator, nullptr),
                FLOWKV_INVALID_ARGUMENT, "list is null");
  REQUIRE_FAILS(flowkv_allocator_share_blocks(nullptr, list),
                FLOWKV_INVALID_ARGUMENT, "allocator is null");
  uint32_t refs = 99;
  REQUIRE_FAILS(flowkv_allocator_ref_count(allocator, 0, nullptr),
                FLOWKV_INVALID_ARGUMENT, "count is null");
  REQUIRE_FAILS(flowkv_allocator_stats(allocator, nullptr),
                FLOWKV_INVALID_ARGUMENT, "stats is null");

  flowkv_allocator_stats_t after;
  REQUIRE_OK(flowkv_allocator_stats(allocator, &after));
  REQUIRE(after.free_blocks == before.free_blocks);
  REQUIRE(after.live_lists == before.live_lists);

  // Share + ref count + two frees give every block back.
  REQUIRE_OK(flowkv_allocator_share_blocks(allocator, list));
  flowkv_block_run_t first;
  size_t count = 0;
  REQUIRE_OK(flowkv_block_list_runs(list, &first, 1, &count));
  REQUIRE_OK(flowkv_allocator_ref_count(allocator, first.first, &refs));
  REQUIRE(refs == 2);
  REQUIRE_OK(flowkv_allocator_free_blocks(allocator, list));
  REQUIRE_OK(flowkv_allocator_free_blocks(allocator, list));
  REQUIRE_OK(flowkv_allocator_stats(allocator, &after));
  REQUIRE(after.free_blocks == 8);
  REQUIRE(after.live_lists == 0);
  flowkv_block_list_destroy(foreign);
  flowkv_block_list_destroy(list);
  flowkv_allocator_destroy(allocator);
}

TEST_CASE("c_api: layout errors name the field", "[c_api]") {
  flowkv_layout_t* layout = nullptr;
  flowkv_geometry_t geometry = kGeometry;
  geometry.head_dim = 0;
  REQUIRE_FAILS(
      flowkv_layout_create_preset(FLOWKV_LAYOUT_VLLM_FLASH_INFER, &geometry,
                                  FLOWKV_BLOCK_ORDER_NHD, &layout),
      FLOWKV_INVALID_ARGUMENT, "head_dim");
  REQUIRE(layout == nullptr);
  REQUIRE_FAILS(
      flowkv_layout_create_preset(static_cast<flowkv_layout_preset_t>(42),
                                  &kGeometry, FLOWKV_BLOCK_ORDER_NHD, &layout),
      FLOWKV_INVALID_ARGUMENT, "preset 42");
  REQUIRE_FAILS(flowkv_layout_create_preset(
                    FLOWKV_LAYOUT_FLOWKV_BLOCK_MAJOR, &kGeometry,
                    static_cast<flowkv_block_order_t>(5), &layout),
                FLOWKV_INVALID_ARGUMENT, "order 5");
  REQUIRE_FAILS(
      flowkv_layout_create_preset(FLOWKV_LAYOUT_SGLANG_MHA, &kGeometry,
                                  FLOWKV_BLOCK_ORDER_HND, &layout),
      FLOWKV_INVALID_ARGUMENT, "takes no block order");
  REQUIRE_FAILS(
      flowkv_layout_create_preset(FLOWKV_LAYOUT_FLOWKV_BLOCK_MAJOR, nullptr,
                                  FLOWKV_BLOCK_ORDER_NHD, &layout),
      FLOWKV_INVALID_ARGUMENT, "geometry is null");
  REQUIRE_FAILS(
      flowkv_layout_create_vllm(
          &kGeometry, static_cast<flowkv_vllm_layout_t>(9), false, &layout),
      FLOWKV_INVALID_ARGUMENT, "vllm_layout 9");
  REQUIRE_FAILS(flowkv_layout_create_strided(&kGeometry, nullptr, 4, &layout),
                FLOWKV_INVALID_ARGUMENT, "tensors is null");
  const flowkv_tensor_t one_tensor = {0, 0, 1024, 64, 16};
  REQUIRE_FAILS(
      flowkv_layout_create_strided(&kGeometry, &one_tensor, 1, &layout),
      FLOWKV_INVALID_ARGUMENT, "tensors");
  REQUIRE_FAILS(flowkv_layout_parse("garbage", 7, &layout),
                FLOWKV_INVALID_ARGUMENT, "");
  REQUIRE_FAILS(flowkv_layout_parse(nullptr, 7, &layout),
                FLOWKV_INVALID_ARGUMENT, "bytes is null");
  REQUIRE(layout == nullptr);

  layout = MakeLayout();
  // Serialize: ask for the size, then round-trip.
  size_t length = 0;
  REQUIRE_FAILS(flowkv_layout_serialize(layout, nullptr, 0, &length),
                FLOWKV_RESOURCE_EXHAUSTED, "needs");
  REQUIRE(length > 0);
  std::vector<uint8_t> wire(length);
  REQUIRE_OK(
      flowkv_layout_serialize(layout, wire.data(), wire.size(), &length));
  flowkv_layout_t* parsed = nullptr;
  REQUIRE_OK(flowkv_layout_parse(wire.data(), wire.size(), &parsed));
  uint64_t a = 0, b = 1;
  REQUIRE_OK(flowkv_layout_fingerprint(layout, &a));
  REQUIRE_OK(flowkv_layout_fingerprint(parsed, &b));
  REQUIRE(a == b);
  REQUIRE_OK(flowkv_layout_check_exchange(layout, parsed));

  char name[4] = {'x', 'x', 'x', 'x'};
  REQUIRE_FAILS(flowkv_layout_name(layout, name, sizeof(name), &length),
                FLOWKV_RESOURCE_EXHAUSTED, "needs");
  REQUIRE(name[0] == 'x');
  REQUIRE(length > sizeof(name));

  uint64_t bytes = 7;
  REQUIRE_FAILS(flowkv_layout_region_bytes(layout, 1, &bytes),
                FLOWKV_OUT_OF_RANGE, "region 1 is not below num_regions 1");
  REQUIRE(bytes == 7);
  uint32_t region = 9;
  uint64_t offset = 9;
  REQUIRE_FAILS(
      flowkv_layout_element_address(layout, 0, 2, 0, 0, 0, &region, &offset),
      FLOWKV_OUT_OF_RANGE, "part 2 is not below num_parts 2");
  REQUIRE_FAILS(
      flowkv_layout_element_address(layout, 0, 0, 16, 0, 0, &region, &offset),
      FLOWKV_OUT_OF_RANGE, "block 16");
  REQUIRE_FAILS(
      flowkv_layout_element_address(layout, 0, 0, 0, 4, 0, &region, &offset),
      FLOWKV_OUT_OF_RANGE, "token 4");
  REQUIRE_FAILS(
      flowkv_layout_element_address(layout, 0, 0, 0, 0, 2, &region, &offset),
      FLOWKV_OUT_OF_RANGE, "head 2");
  REQUIRE_FAILS(
      flowkv_layout_element_address(layout, 2, 0, 0, 0, 0, &region, &offset),
      FLOWKV_OUT_OF_RANGE, "layer 2");
  REQUIRE(region == 9);
  REQUIRE(offset == 9);
  REQUIRE_FAILS(flowkv_layout_geometry(layout, nullptr),
                FLOWKV_INVALID_ARGUMENT, "geometry is null");
  REQUIRE_FAILS(flowkv_layout_num_regions(nullptr, &region),
                FLOWKV_INVALID_ARGUMENT, "layout is null");

  flowkv_geometry_t other = kGeometry;
  other.head_dim = 16;
  flowkv_layout_t* mismatched = nullptr;
  REQUIRE_OK(flowkv_layout_create_preset(FLOWKV_LAYOUT_FLOWKV_BLOCK_MAJOR,
                                         &other, FLOWKV_BLOCK_ORDER_NHD,
                                         &mismatched));
  REQUIRE_FAILS(flowkv_layout_check_exchange(layout, mismatched),
                FLOWKV_INVALID_ARGUMENT, "head_dim");
  REQUIRE_FAILS(flowkv_layout_check_exchange(layout, nullptr),
                FLOWKV_INVALID_ARGUMENT, "b is null");
  flowkv_layout_free(mismatched);
  flowkv_layout_free(parsed);
  flowkv_layout_free(layout);
}

TEST_CASE("c_api: the transfer planner", "[c_api]") {
  flowkv_layout_t* src = MakeLayout();
  flowkv_layout_t* dst = nullptr;
  REQUIRE_OK(flowkv_layout_create_preset(
      FLOWKV_LAYOUT_VLLM_FLASH_ATTN, &kGeometry, FLOWKV_BLOCK_ORDER_HND, &dst));
  const flowkv_block_run_t src_runs[] = {{2, 2}};
  const uint32_t dst_ids[] = {5, 9};
  flowkv_plan_request_t request = {};
  request.src_layout = src;
  request.src_blocks = {src_runs, 1, nullptr, 0};
  request.dst_layout = dst;
  request.dst_blocks = {nullptr, 0, dst_ids, 2};
  request.num_tokens = 6;

  // The count first, then the ops.
  size_t count = 0;
  REQUIRE_FAILS(flowkv_plan_transfer(&request, nullptr, 0, &count),
                FLOWKV_RESOURCE_EXHAUSTED, "ops, ops holds 0");
  REQUIRE(count > 0);
  std::vector<flowkv_transfer_op_t> ops(count);
  REQUIRE_OK(flowkv_plan_transfer(&request, ops.data(), ops.size(), &count));
  REQUIRE(count == ops.size());
  uint64_t bytes = 0;
  for (const flowkv_transfer_op_t& op : ops) bytes += op.length;
  // Every token, layer, part and head: 6 * 2 * 2 * 2 * 16 bytes.
  REQUIRE(bytes == 6 * 2 * 2 * 2 * 16);

  // Bad arguments: the code, a message, ops untouched.
  flowkv_transfer_op_t untouched = {7, 7, 7, 7, 7};
  request.dst_blocks = {nullptr, 0, nullptr, 0};
  REQUIRE_FAILS(flowkv_plan_transfer(&request, &untouched, 1, &count),
                FLOWKV_INVALID_ARGUMENT, "");
  const uint32_t outside[] = {5, 16};
  request.dst_blocks = {nullptr, 0, outside, 2};
  REQUIRE_FAILS(flowkv_plan_transfer(&request, &untouched, 1, &count),
                FLOWKV_OUT_OF_RANGE, "");
  request.dst_blocks = {src_runs, 1, dst_ids, 2};
  REQUIRE_FAILS(flowkv_plan_transfer(&request, &untouched, 1, &count),
                FLOWKV_INVALID_ARGUMENT, "request->dst_blocks gives both");
  request.dst_layout = nullptr;
  REQUIRE_FAILS(flowkv_plan_transfer(&request, &untouched, 1, &count),
                FLOWKV_INVALID_ARGUMENT, "request->dst_layout is null");
  REQUIRE_FAILS(flowkv_plan_transfer(nullptr, &untouched, 1, &count),
                FLOWKV_INVALID_ARGUMENT, "request is null");
  REQUIRE(untouched.length == 7);
  flowkv_layout_free(dst);
  flowkv_layout_free(src);
}
