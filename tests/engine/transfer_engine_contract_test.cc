// SPDX-License-Identifier: Apache-2.0
// TransferEngine contracts between two engines in one process: closed peers
// leave the peer table, blocking calls from callbacks are refused, the log
// hook, peer-disconnect notifications, acknowledged writes, large ops cut
// into pieces that leave the heartbeats alive, and bad sizes, addresses and
// configurations refused before UCX sees them.

#include <arpa/inet.h>
#include <atomic>
#include <cstring>
#include <mutex>
#include <netinet/in.h>
#include <string>
#include <sys/mman.h>
#include <thread>
#include <ucp/api/ucp.h>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "flowkv/transfer_engine.h"
#include "lib/engine/engine_internal.h"
#include "tests/support/engine_pair.h"
#include "tests/support/log_sink.h"
#include "tests/support/transfer_test_util.h"
#include "tests/support/wait_until.h"

namespace flowkv {
namespace {

using flowkv::testing::ConnectPair;
using flowkv::testing::FillRandom;
using flowkv::testing::LogSink;
using flowkv::testing::MakeEngine;
using flowkv::testing::MakePoolPair;
using flowkv::testing::Pair;
using flowkv::testing::PoolPair;
using flowkv::testing::TestEngineOptions;
using flowkv::testing::WaitUntil;

TEST_CASE("Closed peers leave the peer table", "[transfer_contract]") {
  Pair pair;
  pair.a = MakeEngine("a");
  pair.b = MakeEngine("b");
  auto address = pair.b->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  constexpr int kCycles = 1000;
  for (int i = 0; i < kCycles; ++i) {
    auto peer = pair.a->Connect(*address);
    REQUIRE(peer.ok());
    REQUIRE(pair.a->Disconnect(*peer).ok());
  }
  // Disconnect returned after the close completed on a's side.
  const TransferEngineStats a = pair.a->Stats();
  CHECK(a.peers_tracked == 0);
  CHECK(a.peers_connected == 0);
  CHECK(a.peers_listed <= 256);
  // b learns of each close through UCX; its table drains as they arrive.
  CHECK(WaitUntil([&] { return pair.b->Stats().peers_tracked == 0; },
                  2 * flowkv::testing::kPeerFailureTimeout));
  CHECK(pair.b->Stats().peers_listed <= 256);
}

TEST_CASE("Blocking calls from a callback fail instead of deadlocking",
          "[transfer_contract]") {
  PoolPair pair;
  MakePoolPair(4096, &pair);
  const AllocatedRegion* src = &pair.src;
  const AllocatedRegion* dst = &pair.dst;
  std::vector<absl::Status> seen;  // written by the callback, read after Wait
  TransferEngine* engine = pair.a.get();
  const std::string address = pair.address;
  TransferOptions options;
  options.on_complete = [&](const absl::Status&, const TransferStats&) {
    seen.push_back(engine->Connect(address).status());
    seen.push_back(engine->AllocateMemory(4096).status());
    seen.push_back(engine->Disconnect(1));
    TransferHandle inner = engine->Send(1, "from a callback");
    seen.push_back(inner.Wait());
  };
  const TransferOp op{src->id, 0, dst->id, 0, 64};
  REQUIRE(pair.a->Write(pair.a_to_b, {&op, 1}, options).Wait().ok());
  REQUIRE(seen.size() == 4);
  for (const absl::Status& status : seen) {
    INFO(status.ToString());
    CHECK(status.code() == absl::StatusCode::kFailedPrecondition);
  }
  // The engine still works.
  CHECK(pair.a->Write(pair.a_to_b, {&op, 1}).Wait().ok());
}

TEST_CASE("Peer failures and refusals are logged once, with the peer's name",
          "[transfer_contract]") {
  LogSink a_log;
  LogSink b_log;
  TransferEngineOptions a_options = TestEngineOptions("alpha", "secret");
  a_options.log = a_log.Hook();
  TransferEngineOptions b_options = TestEngineOptions("beta", "secret");
  b_options.log = b_log.Hook();
  Pair pair;
  pair.a = MakeEngine(a_options);
  pair.b = MakeEngine(b_options);
  ConnectPair(&pair);
  REQUIRE(pair.a->Disconnect(pair.a_to_b).ok());
  // b hears of it and tells its caller once: a notification and a log line.
  std::vector<Notification> notes;
  REQUIRE(WaitUntil(
      [&] {
        for (Notification& n : pair.b->TakeNotifications()) {
          notes.push_back(std::move(n));
        }
        return !notes.empty();
      },
      2 * flowkv::testing::kPeerFailureTimeout));
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].kind == Notification::Kind::kPeerDisconnected);
  CHECK(notes[0].peer == pair.b_to_a);
  CHECK(b_log.Count("(alpha) disconnected") == 1);
  CHECK(a_log.Count("(beta) disconnected") == 1);

  // A refused token is logged on the refusing side.
  auto stranger = MakeEngine("stranger", "other-secret");
  CHECK(stranger->Connect(pair.address).status().code() ==
        absl::StatusCode::kPermissionDenied);
  CHECK(b_log.Count("refused \"stranger\"") == 1);
}

TEST_CASE("An acknowledged write completes after the receiver's ack",
          "[transfer_contract]") {
  PoolPair pair;
  MakePoolPair(1 << 20, &pair);
  const AllocatedRegion* src = &pair.src;
  const AllocatedRegion* dst = &pair.dst;
  FillRandom(static_cast<uint8_t*>(src->data), src->length, 3);
  const TransferOp op{src->id, 0, dst->id, 0, src->length};
  TransferOptions options;
  options.acknowledged = true;
  // Without a notification there is nothing to acknowledge.
  CHECK(pair.a->Write(pair.a_to_b, {&op, 1}, options).status().code() ==
        absl::StatusCode::kInvalidArgument);
  options.notification = "ack me";
  REQUIRE(pair.a->Write(pair.a_to_b, {&op, 1}, options).Wait().ok());
  // Shared memory moves bytes one-sided; tcp, where UCX would emulate puts,
  // through the engine's message path.
  const PeerDataMethod expected = flowkv::testing::SharedMemoryMode()
                                      ? PeerDataMethod::kRma
                                      : PeerDataMethod::kActiveMessages;
  CHECK(pair.a->GetPeer(pair.a_to_b)->write_method == expected);
  CHECK(pair.a->GetPeer(pair.a_to_b)->read_method == expected);
  // The ack is sent after the notification was queued at b.
  auto notes = pair.b->TakeNotifications();
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].bytes == "ack me");
  CHECK(std::memcmp(src->data, dst->data, src->length) == 0);
  CHECK(pair.a->Stats().transfers_active == 0);
}

TEST_CASE("Large ops move in pieces and heartbeats keep flowing",
          "[transfer_contract]") {
  // Before ops were cut into pieces, the sender's progress thread copied
  // one huge op inline, sent no heartbeat meanwhile, and a receiver with a
  // short failure timeout declared the healthy sender dead. The bound that
  // cannot depend on the machine's speed: what one turn of the loop posts.
  TransferEngineOptions options = TestEngineOptions("a", "secret");
  options.max_window_bytes = 1 << 20;
  Pair pair;
  pair.a = MakeEngine(options);
  options.name = "b";
  pair.b = MakeEngine(options);
  constexpr uint64_t kBytes = uint64_t{256} << 20;
  auto src = pair.a->AllocateMemory(kBytes);
  auto dst = pair.b->AllocateMemory(kBytes);
  REQUIRE(src.ok());
  REQUIRE(dst.ok());
  FillRandom(static_cast<uint8_t*>(src->data), kBytes, 11);
  ConnectPair(&pair);
  const TransferOp op{src->id, 0, dst->id, 0, kBytes};
  TransferOptions write;
  write.notification = "big";
  write.acknowledged = true;
  write.timeout = absl::Minutes(10);  // sanitizer builds copy slowly
  TransferHandle handle = pair.a->Write(pair.a_to_b, {&op, 1}, write);
  const absl::Status status = handle.Wait();
  INFO(status.ToString());
  REQUIRE(status.ok());
  CHECK(handle.stats().ops == 1);
  CHECK(std::memcmp(src->data, dst->data, kBytes) == 0);
  const uint64_t burst =
      internal::EngineInternal::MaxBytesPostedPerTurn(*pair.a);
  CHECK(burst > 0);
  CHECK(burst <= internal::EngineInternal::kWindowsPerProgressTurn *
                     options.max_window_bytes);
  CHECK(pair.b->GetPeer(pair.b_to_a)->connected);
  CHECK(pair.a->GetPeer(pair.a_to_b)->connected);
}

TEST_CASE("Bad sizes, ranges, addresses and transports are refused",
          "[transfer_contract]") {
  TransferEngineOptions options = TestEngineOptions("e", "secret");
  options.max_registered_bytes = 1 << 20;
  auto engine = MakeEngine(options);
  // Larger than the machine (and than /dev/shm): refused at once.
  CHECK(engine->AllocateMemory(uint64_t{1} << 50).status().code() ==
        absl::StatusCode::kResourceExhausted);
  // The engine's cap.
  REQUIRE(engine->AllocateMemory(768 << 10).ok());
  CHECK(engine->AllocateMemory(512 << 10).status().code() ==
        absl::StatusCode::kResourceExhausted);
  CHECK(engine->Stats().registered_bytes == 768 << 10);

  // Unmapped memory and a length far past a buffer.
  const long page = sysconf(_SC_PAGESIZE);
  void* gone = mmap(nullptr, page, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(gone != MAP_FAILED);
  REQUIRE(munmap(gone, page) == 0);
  CHECK(engine->RegisterMemory(gone, page).status().code() ==
        absl::StatusCode::kInvalidArgument);
  std::vector<uint8_t> buffer(4096);
  CHECK(engine->RegisterMemory(buffer.data(), uint64_t{1} << 40)
            .status()
            .code() == absl::StatusCode::kInvalidArgument);

  // Addresses are parsed strictly.
  for (const std::string& address :
       {std::string("127.0.0.1:+5"), std::string("127.0.0.1:0 "),
        std::string("::1:0"), std::string("127.0.0.1:5\0junk", 16)}) {
    INFO(address);
    CHECK(engine->Listen(address).status().code() ==
          absl::StatusCode::kInvalidArgument);
    CHECK(engine->Connect(address).status().code() ==
          absl::StatusCode::kInvalidArgument);
  }

  // A transport UCX does not have.
  TransferEngineOptions bad = TestEngineOptions("bad", "secret");
  bad.ucx_config = {{"TLS", "no_such_transport"}};
  CHECK(TransferEngine::Create(bad).status().code() ==
        absl::StatusCode::kInvalidArgument);
  // UcxInfo lists transports.
  CHECK(absl::StrContains(engine->UcxInfo(), "tcp"));
  CHECK(!absl::StrContains(engine->UcxInfo(), "\n"));
}

TEST_CASE("A connection that never says hello is closed after connect_timeout",
          "[transfer_contract]") {
  // A raw UCX client (no flowkv) connects to the listener, completes UCX's
  // own wire-up, never sends the hello, and keeps its end open.
  TransferEngineOptions options = TestEngineOptions("server", "secret");
  options.connect_timeout = absl::Milliseconds(500);
  auto server = MakeEngine(options);
  auto address = server->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  const uint16_t port = static_cast<uint16_t>(
      std::stoi(address->substr(address->rfind(':') + 1)));

  ucp_config_t* config = nullptr;
  REQUIRE(ucp_config_read(nullptr, nullptr, &config) == UCS_OK);
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_RMA;
  ucp_context_h context = nullptr;
  REQUIRE(ucp_init(&params, config, &context) == UCS_OK);
  ucp_config_release(config);
  ucp_worker_params_t worker_params{};
  ucp_worker_h worker = nullptr;
  REQUIRE(ucp_worker_create(context, &worker_params, &worker) == UCS_OK);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ucp_ep_params_t ep_params{};
  ep_params.field_mask = UCP_EP_PARAM_FIELD_FLAGS |
                         UCP_EP_PARAM_FIELD_SOCK_ADDR |
                         UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  // As an engine would (the server refuses a mismatched mode at once).
  ep_params.err_mode = options.ucx_peer_error_handling
                           ? UCP_ERR_HANDLING_MODE_PEER
                           : UCP_ERR_HANDLING_MODE_NONE;
  ep_params.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
  ep_params.sockaddr.addr = reinterpret_cast<const sockaddr*>(&sin);
  ep_params.sockaddr.addrlen = sizeof(sin);
  ucp_ep_h ep = nullptr;
  REQUIRE(ucp_ep_create(worker, &ep_params, &ep) == UCS_OK);

  // The server accepts the connection (a peer in its handshake) ...
  const absl::Duration bound =
      options.connect_timeout + flowkv::testing::kPeerFailureTimeout;
  CHECK(WaitUntil(
      [&] {
        ucp_worker_progress(worker);
        return server->Stats().peers_tracked == 1;
      },
      bound));
  // ... and drops it once connect_timeout passed, though the client holds
  // its end open and keeps progressing.
  CHECK(WaitUntil(
      [&] {
        ucp_worker_progress(worker);
        return server->Stats().peers_tracked == 0;
      },
      bound));
  CHECK(server->Peers().empty());

  ucp_request_param_t close{};
  close.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  close.flags = UCP_EP_CLOSE_FLAG_FORCE;
  ucs_status_ptr_t request = ucp_ep_close_nbx(ep, &close);
  while (UCS_PTR_IS_PTR(request) &&
         ucp_request_check_status(request) == UCS_INPROGRESS) {
    ucp_worker_progress(worker);
  }
  if (UCS_PTR_IS_PTR(request)) ucp_request_free(request);
  ucp_worker_destroy(worker);
  ucp_cleanup(context);
}

}  // namespace
}  // namespace flowkv
