// SPDX-License-Identifier: Apache-2.0
// The C API's error paths (include/flowkv/flowkv_c.h, "Errors"): every null
// or bad argument gives the documented code and a message naming it, output
// arguments stay untouched, and the object the call was made on is unchanged.
// Also: the last error is cleared by a successful call, output buffers that
// are too small report the length needed, and notifications that do not fit
// the caller's buffers stay queued.
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/flowkv_c.h"
#include "flowkv/version.h"

namespace {

constexpr int64_t kSoonUs = 20'000'000;

// The status of the last call and its message.
struct Outcome {
  flowkv_status_t status;
  std::string message;
};

Outcome Last(flowkv_status_t status) {
  return {status, flowkv_last_error_message()};
}

// Checks the call failed with `code` and a message containing `part`.
#define REQUIRE_FAILS(call, code, part)                                \
  do {                                                                 \
    const Outcome outcome = Last(call);                                \
    INFO(#call << " -> " << flowkv_status_name(outcome.status) << ": " \
               << outcome.message);                                    \
    REQUIRE(outcome.status == (code));                                 \
    REQUIRE(outcome.message.find(part) != std::string::npos);          \
  } while (0)

#define REQUIRE_OK(call)                                               \
  do {                                                                 \
    const Outcome outcome = Last(call);                                \
    INFO(#call << " -> " << flowkv_status_name(outcome.status) << ": " \
               << outcome.message);                                    \
    REQUIRE(outcome.status == FLOWKV_OK);                              \
    REQUIRE(outcome.message.empty());                                  \
  } while (0)

constexpr flowkv_geometry_t kGeometry = {.num_layers = 2,
                                         .num_blocks = 16,
                                         .block_tokens = 4,
                                         .kv_heads = 2,
                                         .head_dim = 8,
                                         .dtype_bytes = 2,
                                         .num_parts = 2};

flowkv_layout_t* MakeLayout() {
  flowkv_layout_t* layout = nullptr;
  REQUIRE_OK(flowkv_layout_create_preset(FLOWKV_LAYOUT_FLOWKV_BLOCK_MAJOR,
                                         &kGeometry, FLOWKV_BLOCK_ORDER_NHD,
                                         &layout));
  return layout;
}

flowkv_engine_t* MakeEngine(const char* name, bool listen) {
  setenv("UCX_NET_DEVICES", "lo", 1);
  flowkv_engine_options_t options;
  flowkv_engine_options_init(&options);
  options.name = name;
  options.name_len = std::strlen(name);
  if (listen) {
    options.listen_ip = "127.0.0.1";
    options.listen_ip_len = 9;
  }
  flowkv_engine_t* engine = nullptr;
  REQUIRE_OK(flowkv_engine_create(&options, &engine));
  return engine;
}

// Two engines on loopback, b connected to a.
struct EnginePair {
  flowkv_engine_t* a = MakeEngine("c-errors-a", true);
  flowkv_engine_t* b = MakeEngine("c-errors-b", false);
  uint64_t peer_of_b = 0;  // a, as b knows it

  EnginePair() {
    char address[64];
    size_t len = 0;
    REQUIRE_OK(flowkv_engine_listen_address(a, address, sizeof(address), &len));
    REQUIRE_OK(flowkv_engine_connect(b, address, len, &peer_of_b));
  }
  ~EnginePair() {
    flowkv_engine_destroy(b);
    flowkv_engine_destroy(a);
  }
};

void SendAndWait(flowkv_engine_t* engine, uint64_t peer,
                 const std::string& bytes) {
  flowkv_handle_t* handle = nullptr;
  REQUIRE_OK(flowkv_engine_send(engine, peer, bytes.data(), bytes.size(),
                                nullptr, &handle));
  bool done = false;
  REQUIRE_OK(flowkv_handle_wait(handle, kSoonUs, &done));
  REQUIRE(done);
  flowkv_status_t result = FLOWKV_UNKNOWN;
  REQUIRE_OK(flowkv_handle_result(handle, &result, nullptr, 0, nullptr));
  REQUIRE(result == FLOWKV_OK);
  flowkv_handle_free(handle);
}

}  // namespace

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

TEST_CASE("c_api: engine errors", "[c_api]") {
  setenv("UCX_NET_DEVICES", "lo", 1);
  flowkv_engine_options_t options;
  flowkv_engine_options_init(&options);
  REQUIRE(options.default_timeout_us == 30'000'000);
  REQUIRE(options.ucx_peer_error_handling);
  flowkv_engine_t* engine = nullptr;
  REQUIRE_FAILS(flowkv_engine_create(nullptr, &engine), FLOWKV_INVALID_ARGUMENT,
                "options is null");
  REQUIRE_FAILS(flowkv_engine_create(&options, nullptr),
                FLOWKV_INVALID_ARGUMENT, "engine is null");
  options.name_len = 3;  // name is still null
  REQUIRE_FAILS(flowkv_engine_create(&options, &engine),
                FLOWKV_INVALID_ARGUMENT, "options->name is null");
  options.name_len = 0;
  const flowkv_config_entry_t bad_entry = {nullptr, 3, "x", 1};
  options.ucx_config = &bad_entry;
  options.ucx_config_count = 1;
  REQUIRE_FAILS(flowkv_engine_create(&options, &engine),
                FLOWKV_INVALID_ARGUMENT, "options->ucx_config[0].name");
  options.ucx_config = nullptr;
  options.ucx_config_count = 0;
  options.peer_failure_timeout_us = 0;
  REQUIRE_FAILS(flowkv_engine_create(&options, &engine),
                FLOWKV_INVALID_ARGUMENT, "");
  options.peer_failure_timeout_us = 2'000'000;
  options.listen_ip = "not-an-ip";
  options.listen_ip_len = 9;
  REQUIRE_FAILS(flowkv_engine_create(&options, &engine),
                FLOWKV_INVALID_ARGUMENT, "");
  REQUIRE(engine == nullptr);

  engine = MakeEngine("c-errors", false);
  char address[64];
  size_t length = 0;
  REQUIRE_FAILS(
      flowkv_engine_listen_address(engine, address, sizeof(address), &length),
      FLOWKV_FAILED_PRECONDITION, "does not listen");
  REQUIRE_FAILS(flowkv_engine_listen(engine, "bad", 3), FLOWKV_INVALID_ARGUMENT,
                "");
  REQUIRE_FAILS(flowkv_engine_listen(engine, nullptr, 3),
                FLOWKV_INVALID_ARGUMENT, "address is null");
  REQUIRE_FAILS(flowkv_engine_listen(nullptr, "127.0.0.1:0", 11),
                FLOWKV_INVALID_ARGUMENT, "engine is null");
  REQUIRE_FAILS(flowkv_engine_listen_address(engine, address, 0, nullptr),
                FLOWKV_INVALID_ARGUMENT, "length pointer of address");
  REQUIRE_OK(flowkv_engine_listen(engine, "127.0.0.1:0", 11));
  REQUIRE_FAILS(flowkv_engine_listen(engine, "127.0.0.1:0", 11),
                FLOWKV_FAILED_PRECONDITION, "");
  char small[4] = {'x', 'x', 'x', 'x'};
  REQUIRE_FAILS(
      flowkv_engine_listen_address(engine, small, sizeof(small), &length),
      FLOWKV_RESOURCE_EXHAUSTED, "needs");
  REQUIRE(small[0] == 'x');
  const size_t needed = length;
  REQUIRE_OK(
      flowkv_engine_listen_address(engine, address, sizeof(address), &length));
  REQUIRE(length == needed);
  REQUIRE(std::string(address).rfind("127.0.0.1:", 0) == 0);

  uint32_t region = 77;
  void* data = reinterpret_cast<void*>(0x1);
  REQUIRE_FAILS(flowkv_engine_register_memory(engine, nullptr, 64,
                                              FLOWKV_MEMORY_HOST, &region),
                FLOWKV_INVALID_ARGUMENT, "");
  REQUIRE_FAILS(flowkv_engine_register_memory(
                    engine, address, sizeof(address),
                    static_cast<flowkv_memory_kind_t>(3), &region),
                FLOWKV_INVALID_ARGUMENT, "kind 3");
  REQUIRE_FAILS(flowkv_engine_allocate_memory(engine, 64, FLOWKV_MEMORY_HOST,
                                              &region, nullptr),
                FLOWKV_INVALID_ARGUMENT, "data is null");
  REQUIRE_FAILS(flowkv_engine_allocate_memory(engine, 0, FLOWKV_MEMORY_HOST,
                                              &region, &data),
                FLOWKV_INVALID_ARGUMENT, "");
  REQUIRE(region == 77);
  REQUIRE(data == reinterpret_cast<void*>(0x1));
  REQUIRE_FAILS(flowkv_engine_deregister_memory(engine, 5), FLOWKV_NOT_FOUND,
                "");
  flowkv_engine_stats_t stats;
  REQUIRE_OK(flowkv_engine_stats(engine, &stats));
  REQUIRE(stats.registered_bytes == 0);

  uint64_t peer = 42;
  REQUIRE_FAILS(flowkv_engine_connect(engine, "nonsense", 8, &peer),
                FLOWKV_INVALID_ARGUMENT, "");
  REQUIRE_FAILS(flowkv_engine_connect(engine, "127.0.0.1:1", 11, nullptr),
                FLOWKV_INVALID_ARGUMENT, "peer is null");
  REQUIRE_FAILS(flowkv_engine_add_peer(engine, "junk", 4, &peer),
                FLOWKV_INVALID_ARGUMENT, "");
  REQUIRE_FAILS(flowkv_engine_add_peer(engine, nullptr, 4, &peer),
                FLOWKV_INVALID_ARGUMENT, "metadata is null");
  REQUIRE(peer == 42);
  REQUIRE_FAILS(flowkv_engine_disconnect(engine, 1234), FLOWKV_NOT_FOUND, "");
  bool connected = true;
  REQUIRE_FAILS(flowkv_engine_peer_connected(engine, 1234, &connected),
                FLOWKV_NOT_FOUND, "");
  REQUIRE(connected);

  // Local metadata: the size first, then the blob.
  REQUIRE_FAILS(flowkv_engine_local_metadata(engine, nullptr, 0, &length),
                FLOWKV_RESOURCE_EXHAUSTED, "needs");
  std::vector<uint8_t> metadata(length);
  REQUIRE_OK(flowkv_engine_local_metadata(engine, metadata.data(),
                                          metadata.size(), &length));

  // Transfers refused before they start: no handle.
  flowkv_handle_t* handle = reinterpret_cast<flowkv_handle_t*>(0x1);
  const flowkv_transfer_op_t op = {0, 0, 0, 0, 64};
  REQUIRE_FAILS(flowkv_engine_write(engine, 1234, &op, 1, nullptr, &handle),
                FLOWKV_NOT_FOUND, "");
  REQUIRE_FAILS(flowkv_engine_write(engine, 1234, nullptr, 1, nullptr, &handle),
                FLOWKV_INVALID_ARGUMENT, "ops is null");
  REQUIRE_FAILS(flowkv_engine_read(engine, 1234, &op, 1, nullptr, nullptr),
                FLOWKV_INVALID_ARGUMENT, "handle is null");
  const flowkv_transfer_options_t bad_options = {nullptr, 5, 0, false};
  REQUIRE_FAILS(
      flowkv_engine_write(engine, 1234, &op, 1, &bad_options, &handle),
      FLOWKV_INVALID_ARGUMENT, "options->notification is null");
  REQUIRE_FAILS(flowkv_engine_send(engine, 1234, nullptr, 5, nullptr, &handle),
                FLOWKV_INVALID_ARGUMENT, "bytes is null");
  REQUIRE_FAILS(flowkv_engine_send(engine, 1234, "x", 1, nullptr, &handle),
                FLOWKV_NOT_FOUND, "");
  REQUIRE(handle == reinterpret_cast<flowkv_handle_t*>(0x1));

  flowkv_notification_t notes[2];
  uint8_t buffer[16];
  size_t count = 5;
  REQUIRE_FAILS(flowkv_engine_take_notifications(engine, -1, notes, 2, buffer,
                                                 sizeof(buffer), &count),
                FLOWKV_INVALID_ARGUMENT, "wait_us -1");
  REQUIRE_FAILS(flowkv_engine_take_notifications(engine, 0, nullptr, 2, buffer,
                                                 sizeof(buffer), &count),
                FLOWKV_INVALID_ARGUMENT, "out is null");
  REQUIRE_FAILS(
      flowkv_engine_take_notifications(engine, 0, notes, 2, nullptr, 4, &count),
      FLOWKV_INVALID_ARGUMENT, "buffer is null");
  REQUIRE(count == 5);
  REQUIRE_OK(flowkv_engine_take_notifications(engine, 0, notes, 2, buffer,
                                              sizeof(buffer), &count));
  REQUIRE(count == 0);
  flowkv_engine_destroy(engine);
}

TEST_CASE("c_api: handle errors", "[c_api]") {
  flowkv_transfer_state_t state = FLOWKV_TRANSFER_PENDING;
  bool done = false;
  flowkv_status_t result = FLOWKV_UNKNOWN;
  flowkv_transfer_stats_t stats;
  REQUIRE_FAILS(flowkv_handle_state(nullptr, &state), FLOWKV_INVALID_ARGUMENT,
                "handle is null");
  REQUIRE_FAILS(flowkv_handle_wait(nullptr, 0, &done), FLOWKV_INVALID_ARGUMENT,
                "handle is null");
  REQUIRE_FAILS(flowkv_handle_result(nullptr, &result, nullptr, 0, nullptr),
                FLOWKV_INVALID_ARGUMENT, "handle is null");
  REQUIRE_FAILS(flowkv_handle_stats(nullptr, &stats), FLOWKV_INVALID_ARGUMENT,
                "handle is null");
  REQUIRE_FAILS(flowkv_handle_cancel(nullptr), FLOWKV_INVALID_ARGUMENT,
                "handle is null");

  EnginePair pair;
  flowkv_handle_t* handle = nullptr;
  REQUIRE_OK(
      flowkv_engine_send(pair.b, pair.peer_of_b, "hi", 2, nullptr, &handle));
  REQUIRE_FAILS(flowkv_handle_state(handle, nullptr), FLOWKV_INVALID_ARGUMENT,
                "state is null");
  REQUIRE_FAILS(flowkv_handle_wait(handle, 0, nullptr), FLOWKV_INVALID_ARGUMENT,
                "done is null");
  REQUIRE_FAILS(flowkv_handle_result(handle, nullptr, nullptr, 0, nullptr),
                FLOWKV_INVALID_ARGUMENT, "result is null");
  char message[8];
  REQUIRE_FAILS(
      flowkv_handle_result(handle, &result, message, sizeof(message), nullptr),
      FLOWKV_INVALID_ARGUMENT, "message_len is null");
  size_t needed = 0;
  REQUIRE_FAILS(flowkv_handle_result(handle, &result, nullptr, 8, &needed),
                FLOWKV_INVALID_ARGUMENT, "message is null");
  REQUIRE(result == FLOWKV_UNKNOWN);
  REQUIRE_OK(flowkv_handle_wait(handle, -1, &done));
  REQUIRE(done);
  REQUIRE_OK(flowkv_handle_state(handle, &state));
  REQUIRE(state == FLOWKV_TRANSFER_DONE);
  size_t message_len = 99;
  REQUIRE_OK(flowkv_handle_result(handle, &result, message, sizeof(message),
                                  &message_len));
  REQUIRE(result == FLOWKV_OK);
  REQUIRE(message_len == 0);
  REQUIRE_OK(flowkv_handle_stats(handle, &stats));
  REQUIRE(stats.bytes == 2);
  REQUIRE(stats.completion_time_us >= 0);
  REQUIRE_OK(flowkv_handle_cancel(handle));  // no effect once done
  REQUIRE_OK(flowkv_handle_result(handle, &result, nullptr, 0, nullptr));
  REQUIRE(result == FLOWKV_OK);
  flowkv_handle_free(handle);
}

TEST_CASE("c_api: notifications that do not fit stay queued", "[c_api]") {
  EnginePair pair;
  SendAndWait(pair.b, pair.peer_of_b, "first message");
  SendAndWait(pair.b, pair.peer_of_b, "second");
  flowkv_notification_t notes[4];
  uint8_t buffer[64];
  size_t count = 9;
  // Wait for both to be queued at a (each call may take more from the
  // engine; what does not fit stays with the C engine).
  REQUIRE_FAILS(flowkv_engine_take_notifications(pair.a, kSoonUs, notes, 4,
                                                 buffer, 4, &count),
                FLOWKV_RESOURCE_EXHAUSTED, "13 bytes");
  REQUIRE(count == 9);
  std::vector<std::string> seen;
  for (int i = 0; i < 1000 && seen.size() < 2; ++i) {
    REQUIRE_OK(flowkv_engine_take_notifications(
        pair.a, 10'000, notes, 1, buffer, sizeof(buffer), &count));
    REQUIRE(count <= 1);
    if (count == 1) {
      REQUIRE(notes[0].kind == FLOWKV_NOTIFICATION_MESSAGE);
      seen.emplace_back(reinterpret_cast<const char*>(notes[0].bytes),
                        notes[0].bytes_len);
    }
  }
  REQUIRE(seen == std::vector<std::string>{"first message", "second"});
}

TEST_CASE("c_api: kv transfer errors", "[c_api]") {
  EnginePair pair;
  flowkv_layout_t* layout = MakeLayout();
  uint32_t region = 0;
  void* data = nullptr;
  uint64_t bytes = 0;
  REQUIRE_OK(flowkv_layout_region_bytes(layout, 0, &bytes));
  REQUIRE_OK(flowkv_engine_allocate_memory(pair.b, bytes, FLOWKV_MEMORY_HOST,
                                           &region, &data));
  flowkv_kv_transfer_t* kv = nullptr;
  const uint32_t two_regions[] = {region, region};
  REQUIRE_FAILS(flowkv_kv_create(pair.b, layout, two_regions, 2, nullptr, &kv),
                FLOWKV_INVALID_ARGUMENT, "");
  REQUIRE_FAILS(flowkv_kv_create(pair.b, layout, nullptr, 1, nullptr, &kv),
                FLOWKV_INVALID_ARGUMENT, "regions is null");
  REQUIRE_FAILS(flowkv_kv_create(pair.b, nullptr, &region, 1, nullptr, &kv),
                FLOWKV_INVALID_ARGUMENT, "layout is null");
  REQUIRE_FAILS(flowkv_kv_create(nullptr, layout, &region, 1, nullptr, &kv),
                FLOWKV_INVALID_ARGUMENT, "engine is null");
  const uint32_t unknown_region = 99;
  REQUIRE_FAILS(
      flowkv_kv_create(pair.b, layout, &unknown_region, 1, nullptr, &kv),
      FLOWKV_NOT_FOUND, "");
  flowkv_kv_options_t options;
  flowkv_kv_options_init(&options);
  REQUIRE(options.max_tombstones == 65536);
  options.incomplete_request_timeout_us = 0;
  REQUIRE_FAILS(flowkv_kv_create(pair.b, layout, &region, 1, &options, &kv),
                FLOWKV_INVALID_ARGUMENT, "");
  REQUIRE(kv == nullptr);
  flowkv_kv_options_init(&options);
  REQUIRE_OK(flowkv_kv_create(pair.b, layout, &region, 1, &options, &kv));

  flowkv_kv_request_t request;
  flowkv_kv_request_init(&request);
  REQUIRE(request.num_senders == 1);
  REQUIRE(request.final_chunk);
  const uint32_t ids[] = {1, 2};
  const flowkv_block_run_t runs[] = {{1, 2}};
  request.src_blocks = {runs, 1, ids, 2};
  request.dst_blocks = {runs, 1, nullptr, 0};
  request.num_tokens = 8;
  flowkv_handle_t* handle = reinterpret_cast<flowkv_handle_t*>(0x1);
  REQUIRE_FAILS(flowkv_kv_send(kv, "r", 1, pair.peer_of_b, &request, &handle),
                FLOWKV_INVALID_ARGUMENT, "request->src_blocks gives both");
  request.src_blocks = {nullptr, 1, nullptr, 0};
  REQUIRE_FAILS(flowkv_kv_send(kv, "r", 1, pair.peer_of_b, &request, &handle),
                FLOWKV_INVALID_ARGUMENT, "request->src_blocks.runs is null");
  request.src_blocks = {runs, 1, nullptr, 0};
  request.payload_len = 3;
  REQUIRE_FAILS(flowkv_kv_fetch(kv, "r", 1, pair.peer_of_b, &request, &handle),
                FLOWKV_INVALID_ARGUMENT, "request->payload is null");
  request.payload_len = 0;
  REQUIRE_FAILS(
      flowkv_kv_send(kv, nullptr, 1, pair.peer_of_b, &request, &handle),
      FLOWKV_INVALID_ARGUMENT, "request_id is null");
  REQUIRE_FAILS(flowkv_kv_send(kv, "", 0, pair.peer_of_b, &request, &handle),
                FLOWKV_INVALID_ARGUMENT, "");
  REQUIRE_FAILS(flowkv_kv_send(kv, "r", 1, pair.peer_of_b, nullptr, &handle),
                FLOWKV_INVALID_ARGUMENT, "request is null");
  // No pool known for the peer: refused, no handle.
  REQUIRE_FAILS(flowkv_kv_send(kv, "r", 1, pair.peer_of_b, &request, &handle),
                FLOWKV_FAILED_PRECONDITION, "");
  REQUIRE(handle == reinterpret_cast<flowkv_handle_t*>(0x1));

  REQUIRE_FAILS(flowkv_kv_add_peer_pool(kv, 1234, layout, &region, 1),
                FLOWKV_NOT_FOUND, "");
  REQUIRE_FAILS(flowkv_kv_add_peer_pool(kv, pair.peer_of_b, layout, nullptr, 1),
                FLOWKV_INVALID_ARGUMENT, "peer_regions is null");
  REQUIRE_FAILS(flowkv_kv_announce_pool(kv, 1234), FLOWKV_NOT_FOUND, "");
  REQUIRE_FAILS(flowkv_kv_wait_for_peer_pool(kv, pair.peer_of_b, -5),
                FLOWKV_INVALID_ARGUMENT, "timeout_us -5");
  REQUIRE_FAILS(flowkv_kv_expect(kv, "r", 1, 0), FLOWKV_INVALID_ARGUMENT,
                "timeout_us 0 is not positive");
  REQUIRE_FAILS(flowkv_kv_expect(kv, nullptr, 2, kSoonUs),
                FLOWKV_INVALID_ARGUMENT, "request_id is null");
  REQUIRE_FAILS(flowkv_kv_forget(kv, nullptr, 2), FLOWKV_INVALID_ARGUMENT,
                "request_id is null");
  uint32_t layers = 77;
  REQUIRE_FAILS(flowkv_kv_layers_arrived(kv, "r", 1, nullptr),
                FLOWKV_INVALID_ARGUMENT, "layers is null");
  REQUIRE_OK(flowkv_kv_layers_arrived(kv, "r", 1, &layers));
  REQUIRE(layers == 0);
  flowkv_kv_stats_t stats;
  REQUIRE_OK(flowkv_kv_stats(kv, &stats));
  REQUIRE(stats.requests_active == 0);

  flowkv_kv_results_t* results = nullptr;
  REQUIRE_FAILS(flowkv_kv_poll(kv, -1, &results), FLOWKV_INVALID_ARGUMENT,
                "wait_us -1");
  REQUIRE_FAILS(flowkv_kv_poll(kv, 0, nullptr), FLOWKV_INVALID_ARGUMENT,
                "results is null");
  REQUIRE(results == nullptr);
  REQUIRE_OK(flowkv_kv_poll(kv, 0, &results));
  REQUIRE(flowkv_kv_results_num_finished(results) == 0);
  REQUIRE(flowkv_kv_results_num_failed(nullptr) == 0);
  flowkv_kv_finished_t finished = {"x", 1, nullptr, 0};
  REQUIRE_FAILS(flowkv_kv_results_finished(results, 0, &finished),
                FLOWKV_OUT_OF_RANGE, "index 0 is not below the count 0");
  REQUIRE(finished.request_id_len == 1);
  flowkv_kv_failed_t failed;
  REQUIRE_FAILS(flowkv_kv_results_failed(nullptr, 0, &failed),
                FLOWKV_INVALID_ARGUMENT, "results is null");
  REQUIRE_FAILS(flowkv_kv_results_released(results, 0, nullptr),
                FLOWKV_INVALID_ARGUMENT, "entry is null");
  flowkv_notification_t other;
  REQUIRE_FAILS(flowkv_kv_results_other(results, 3, &other),
                FLOWKV_OUT_OF_RANGE, "index 3");
  flowkv_kv_results_free(results);

  // The Expect deadline fails the request, reported once by poll.
  REQUIRE_OK(flowkv_kv_expect(kv, "late", 4, 1));
  bool reported = false;
  for (int i = 0; i < 2000 && !reported; ++i) {
    REQUIRE_OK(flowkv_kv_poll(kv, 10'000, &results));
    if (flowkv_kv_results_num_failed(results) == 1) {
      REQUIRE_OK(flowkv_kv_results_failed(results, 0, &failed));
      REQUIRE(std::string(failed.request_id, failed.request_id_len) == "late");
      REQUIRE(failed.status == FLOWKV_DEADLINE_EXCEEDED);
      REQUIRE(failed.message_len > 0);
      reported = true;
    }
    flowkv_kv_results_free(results);
  }
  REQUIRE(reported);

  flowkv_kv_destroy(kv);
  flowkv_layout_free(layout);
}
