// SPDX-License-Identifier: Apache-2.0
// Helpers of the C API error tests (c_api_errors_test.cc,
// c_api_engine_errors_test.cc): checks of a call's code and message, and
// engines, engine pairs and layouts made through the C API.
#ifndef FLOWKV_TESTS_SUPPORT_C_API_TEST_UTIL_H_
#define FLOWKV_TESTS_SUPPORT_C_API_TEST_UTIL_H_

#include <cstdlib>
#include <cstring>
#include <string>

#include <catch2/catch.hpp>

#include "flowkv/flowkv_c.h"

namespace flowkv::c_api_testing {

inline constexpr int64_t kSoonUs = 20'000'000;

// The status of the last call and its message.
struct Outcome {
  flowkv_status_t status;
  std::string message;
};

inline Outcome Last(flowkv_status_t status) {
  return {status, flowkv_last_error_message()};
}

// Checks the call failed with `code` and a message containing `part`.
#define REQUIRE_FAILS(call, code, part)                                \
  do {                                                                 \
    const ::flowkv::c_api_testing::Outcome outcome =                   \
        ::flowkv::c_api_testing::Last(call);                           \
    INFO(#call << " -> " << flowkv_status_name(outcome.status) << ": " \
               << outcome.message);                                    \
    REQUIRE(outcome.status == (code));                                 \
    REQUIRE(outcome.message.find(part) != std::string::npos);          \
  } while (0)

#define REQUIRE_OK(call)                                               \
  do {                                                                 \
    const ::flowkv::c_api_testing::Outcome outcome =                   \
        ::flowkv::c_api_testing::Last(call);                           \
    INFO(#call << " -> " << flowkv_status_name(outcome.status) << ": " \
               << outcome.message);                                    \
    REQUIRE(outcome.status == FLOWKV_OK);                              \
    REQUIRE(outcome.message.empty());                                  \
  } while (0)

inline constexpr flowkv_geometry_t kGeometry = {.num_layers = 2,
                                                .num_blocks = 16,
                                                .block_tokens = 4,
                                                .kv_heads = 2,
                                                .head_dim = 8,
                                                .dtype_bytes = 2,
                                                .num_parts = 2};

inline flowkv_layout_t* MakeLayout() {
  flowkv_layout_t* layout = nullptr;
  REQUIRE_OK(flowkv_layout_create_preset(FLOWKV_LAYOUT_FLOWKV_BLOCK_MAJOR,
                                         &kGeometry, FLOWKV_BLOCK_ORDER_NHD,
                                         &layout));
  return layout;
}

inline flowkv_engine_t* MakeEngine(const char* name, bool listen) {
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

inline void SendAndWait(flowkv_engine_t* engine, uint64_t peer,
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

}  // namespace flowkv::c_api_testing

#endif  // FLOWKV_TESTS_SUPPORT_C_API_TEST_UTIL_H_
