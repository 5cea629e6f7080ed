// SPDX-License-Identifier: Apache-2.0
// The C API's error paths for engines, transfer handles and KV transfers
// (part of the c_api_errors_test binary, with c_api_errors_test.cc): every
// null or bad argument gives the documented code and a message naming it,
// refused transfers make no handle, and notifications that do not fit the
// caller's buffers stay queued.
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/flowkv_c.h"
#include "tests/support/c_api_test_util.h"

using flowkv::c_api_testing::EnginePair;
using flowkv::c_api_testing::kSoonUs;
using flowkv::c_api_testing::MakeEngine;
using flowkv::c_api_testing::MakeLayout;
using flowkv::c_api_testing::SendAndWait;

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
