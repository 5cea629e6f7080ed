// SPDX-License-Identifier: Apache-2.0
// A raw UCX client for tests that speak the engine's wire protocol by hand
// (no flowkv engine): its own UCP context and worker, endpoints to a
// listener on 127.0.0.1, active messages sent with a 16-byte AmHeader, and
// the handshake replies (challenge, welcome, reject) it receives, recorded
// in order. Driven by the test's main thread only (Progress()).
#ifndef FLOWKV_TESTS_SUPPORT_RAW_UCX_CLIENT_H_
#define FLOWKV_TESTS_SUPPORT_RAW_UCX_CLIENT_H_

#include <arpa/inet.h>
#include <cstdint>
#include <netinet/in.h>
#include <string>
#include <ucp/api/ucp.h>
#include <vector>

#include <catch2/catch.hpp>

namespace flowkv::testing {

class RawUcxClient {
 public:
  // A message received: which handshake message it is (the last letter of
  // its magic: 'C' challenge, 'W' welcome, 'R' reject), the AmHeader's
  // connection id, the bytes.
  struct Received {
    char kind = 0;
    uint64_t conn_id = 0;
    std::string bytes;
  };

  // `am_ids`: the ids to record; `peer_error_handling`: as the engine's
  // ucx_peer_error_handling (the server refuses a mismatched mode).
  RawUcxClient(std::vector<unsigned> am_ids, bool peer_error_handling)
      : am_ids_(std::move(am_ids)),
        err_mode_(peer_error_handling ? UCP_ERR_HANDLING_MODE_PEER
                                      : UCP_ERR_HANDLING_MODE_NONE) {
    ucp_config_t* config = nullptr;
    REQUIRE(ucp_config_read(nullptr, nullptr, &config) == UCS_OK);
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_AM | UCP_FEATURE_RMA;
    REQUIRE(ucp_init(&params, config, &context_) == UCS_OK);
    ucp_config_release(config);
    ucp_worker_params_t worker_params{};
    REQUIRE(ucp_worker_create(context_, &worker_params, &worker_) == UCS_OK);
    for (unsigned id : am_ids_) {
      ucp_am_handler_param_t handler{};
      handler.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID |
                           UCP_AM_HANDLER_PARAM_FIELD_CB |
                           UCP_AM_HANDLER_PARAM_FIELD_ARG;
      handler.id = id;
      handler.cb = &RawUcxClient::OnAm;
      handler.arg = this;
      REQUIRE(ucp_worker_set_am_recv_handler(worker_, &handler) == UCS_OK);
    }
  }
  ~RawUcxClient() {
    for (ucp_ep_h ep : eps_) Close(ep);
    ucp_worker_destroy(worker_);
    ucp_cleanup(context_);
  }
  RawUcxClient(const RawUcxClient&) = delete;
  RawUcxClient& operator=(const RawUcxClient&) = delete;

  // An endpoint to 127.0.0.1:`port` (closed by the destructor).
  ucp_ep_h Connect(uint16_t port) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ucp_ep_params_t params{};
    params.field_mask =
        UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
        UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    params.err_mode = err_mode_;
    // A refused or dropped endpoint is expected here: nothing to do.
    params.err_handler.cb = [](void*, ucp_ep_h, ucs_status_t) {};
    params.err_handler.arg = nullptr;
    params.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    params.sockaddr.addr = reinterpret_cast<const sockaddr*>(&sin);
    params.sockaddr.addrlen = sizeof(sin);
    ucp_ep_h ep = nullptr;
    REQUIRE(ucp_ep_create(worker_, &params, &ep) == UCS_OK);
    eps_.push_back(ep);
    return ep;
  }

  // Sends `bytes` as active message `am_id` with an AmHeader naming
  // `conn_id`, eagerly, asking for replies on `ep` (as the engine's hello
  // does); progresses until UCX completed it.
  void Send(ucp_ep_h ep, unsigned am_id, uint64_t conn_id,
            const std::string& bytes) {
    std::string header(16, '\0');
    for (int i = 0; i < 8; ++i)
      header[i] = static_cast<char>(conn_id >> (8 * i));
    SendWithHeader(ep, am_id, header, bytes);
  }
  // As Send, with the header's bytes as given.
  void SendWithHeader(ucp_ep_h ep, unsigned am_id, const std::string& header,
                      const std::string& bytes) {
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_AM_SEND_FLAG_EAGER | UCP_AM_SEND_FLAG_REPLY;
    ucs_status_ptr_t request =
        ucp_am_send_nbx(ep, am_id, header.data(), header.size(), bytes.data(),
                        bytes.size(), &param);
    Wait(request);
  }

  // The worker address (for an EngineInfo).
  std::string Address() {
    ucp_address_t* address = nullptr;
    size_t length = 0;
    REQUIRE(ucp_worker_get_address(worker_, &address, &length) == UCS_OK);
    std::string out(reinterpret_cast<const char*>(address), length);
    ucp_worker_release_address(worker_, address);
    return out;
  }

  void Progress() { ucp_worker_progress(worker_); }
  std::vector<Received>& received() { return received_; }

 private:
  static ucs_status_t OnAm(void* arg, const void* header, size_t header_length,
                           void* data, size_t length,
                           const ucp_am_recv_param_t* param) {
    auto* self = static_cast<RawUcxClient*>(arg);
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0 ||
        header_length != 16) {
      return UCS_OK;
    }
    Received r;
    const auto* h = static_cast<const uint8_t*>(header);
    for (int i = 0; i < 8; ++i) r.conn_id |= uint64_t{h[i]} << (8 * i);
    r.bytes.assign(static_cast<const char*>(data), length);
    if (r.bytes.size() >= 4) r.kind = r.bytes[3];
    self->received_.push_back(std::move(r));
    return UCS_OK;
  }

  void Wait(ucs_status_ptr_t request) {
    if (!UCS_PTR_IS_PTR(request)) return;
    while (ucp_request_check_status(request) == UCS_INPROGRESS) {
      ucp_worker_progress(worker_);
    }
    ucp_request_free(request);
  }

  void Close(ucp_ep_h ep) {
    ucp_request_param_t close{};
    close.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    close.flags = UCP_EP_CLOSE_FLAG_FORCE;
    Wait(ucp_ep_close_nbx(ep, &close));
  }

  std::vector<unsigned> am_ids_;
  ucp_err_handling_mode_t err_mode_;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  std::vector<ucp_ep_h> eps_;
  std::vector<Received> received_;
};

}  // namespace flowkv::testing

#endif  // FLOWKV_TESTS_SUPPORT_RAW_UCX_CLIENT_H_
