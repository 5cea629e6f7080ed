// SPDX-License-Identifier: Apache-2.0
// The handshake against clients that do not play by the rules, through a
// real engine over UCX on loopback: a recorded handshake replayed by a raw
// UCX client is refused; half-open connections (raw TCP clients that stay
// silent, send garbage or stop half-way, and raw UCX clients that never
// finish the handshake) stay within max_pending_handshakes, are dropped
// within connect_timeout, and a legitimate peer connects meanwhile.

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "flowkv/transfer_engine.h"
#include "lib/common/hmac.h"
#include "lib/engine/transfer_engine_impl.h"
#include "lib/engine/wireup/wire_format.h"
#include "tests/support/engine_pair.h"
#include "tests/support/log_sink.h"
#include "tests/support/raw_ucx_client.h"
#include "tests/support/transfer_test_util.h"
#include "tests/support/wait_until.h"

namespace flowkv {
namespace {

using flowkv::testing::LogSink;
using flowkv::testing::MakeEngine;
using flowkv::testing::RawUcxClient;
using flowkv::testing::TestEngineOptions;
using flowkv::testing::WaitUntil;
using internal::Nonce;

constexpr char kToken[] = "handshake-security-token";

uint16_t PortOf(const std::string& address) {
  return static_cast<uint16_t>(
      std::stoi(address.substr(address.rfind(':') + 1)));
}

// A server engine listening on 127.0.0.1 whose log the test reads.
struct LoggedServer {
  // `server_options`: the server's options; its log hook is set here.
  explicit LoggedServer(TransferEngineOptions server_options)
      : options(std::move(server_options)) {
    options.log = log.Hook();
    engine = MakeEngine(options);
    auto listening = engine->Listen("127.0.0.1:0");
    REQUIRE(listening.ok());
    address = *listening;
    port = PortOf(address);
    bound = options.connect_timeout + flowkv::testing::kPeerFailureTimeout;
  }

  LogSink log;
  TransferEngineOptions options;
  std::unique_ptr<TransferEngine> engine;
  std::string address;
  uint16_t port = 0;
  // The bound of every wait on this server: its connect timeout plus the
  // peer failure timeout.
  absl::Duration bound;
};

std::vector<unsigned> HandshakeReplies() {
  return {internal::kAmChallenge, internal::kAmWelcome, internal::kAmReject};
}

// The next handshake reply the raw client receives, within `bound`.
RawUcxClient::Received NextReply(RawUcxClient* client, size_t* seen,
                                 absl::Duration bound) {
  const bool arrived = WaitUntil(
      [&] {
        client->Progress();
        return client->received().size() > *seen;
      },
      bound);
  REQUIRE(arrived);
  return client->received()[(*seen)++];
}

// What a raw client that holds the token sent to complete a handshake by
// hand, and the server's id for the connection.
struct HandRun {
  std::string hello;
  std::string proof;
  uint64_t server_conn_id = 0;
  Nonce server_nonce{};
};

HandRun HandshakeByHand(RawUcxClient* raw, ucp_ep_h ep, size_t* seen,
                        absl::Duration bound) {
  HandRun run;
  internal::Hello hello;
  hello.via_sockaddr = true;
  hello.sender_conn_id = 101;
  hello.client_nonce = internal::RandomNonce();
  hello.name = "by-hand";
  run.hello = internal::EncodeHello(hello, kToken);
  raw->Send(ep, internal::kAmHello, 0, run.hello);
  const RawUcxClient::Received challenge_bytes = NextReply(raw, seen, bound);
  REQUIRE(challenge_bytes.kind == 'C');
  auto challenge =
      internal::ParseChallenge(internal::AsBytes(challenge_bytes.bytes));
  REQUIRE(challenge.ok());
  run.server_conn_id = challenge->sender_conn_id;
  run.server_nonce = challenge->server_nonce;
  internal::HandshakeProof proof;
  proof.sender_conn_id = hello.sender_conn_id;
  proof.receiver_conn_id = challenge->sender_conn_id;
  proof.info.name = "by-hand";
  proof.info.worker_address = raw->Address();
  run.proof = internal::EncodeProof(
      internal::ProofRole::kClient, proof, kToken,
      {.client = hello.client_nonce, .server = challenge->server_nonce});
  raw->Send(ep, internal::kAmProof, run.server_conn_id, run.proof);
  const RawUcxClient::Received welcome = NextReply(raw, seen, bound);
  REQUIRE(welcome.kind == 'W');
  return run;
}

TEST_CASE("A recorded handshake replayed by a raw client is refused",
          "[handshake_security]") {
  LoggedServer server(TestEngineOptions("server", kToken));
  RawUcxClient raw(HandshakeReplies(), server.options.ucx_peer_error_handling);

  // A client that holds the token completes the handshake by hand; the
  // attacker records what it sent.
  size_t seen = 0;
  const HandRun recorded =
      HandshakeByHand(&raw, raw.Connect(server.port), &seen, server.bound);
  REQUIRE(server.engine->Peers().size() == 1);
  CHECK(server.engine->Peers()[0].name == "by-hand");

  // The replay: the same hello and proof bytes on a new connection. The
  // server's challenge carries a fresh nonce, over which the recorded proof
  // does not check.
  ucp_ep_h second = raw.Connect(server.port);
  raw.Send(second, internal::kAmHello, 0, recorded.hello);
  const RawUcxClient::Received challenge_bytes =
      NextReply(&raw, &seen, server.bound);
  REQUIRE(challenge_bytes.kind == 'C');
  auto challenge =
      internal::ParseChallenge(internal::AsBytes(challenge_bytes.bytes));
  REQUIRE(challenge.ok());
  CHECK(challenge->server_nonce != recorded.server_nonce);
  // The replayer addresses the new connection (the AmHeader is not signed);
  // the proof inside is the recorded one.
  raw.Send(second, internal::kAmProof, challenge->sender_conn_id,
           recorded.proof);
  const RawUcxClient::Received refusal = NextReply(&raw, &seen, server.bound);
  REQUIRE(refusal.kind == 'R');
  auto reject = internal::ParseReject(internal::AsBytes(refusal.bytes));
  REQUIRE(reject.ok());
  CHECK(reject->code ==
        static_cast<uint32_t>(absl::StatusCode::kPermissionDenied));
  CHECK(absl::StrContains(reject->reason, "replayed"));
  CHECK(server.log.Count("a replayed handshake") == 1);
  // Only the first connection is a peer; the refused one leaves the table.
  CHECK(server.engine->Peers().size() == 1);
  CHECK(WaitUntil(
      [&] {
        raw.Progress();
        return server.engine->Stats().peers_tracked == 1;
      },
      server.bound + absl::Seconds(2) /* the reject's linger */));
}

TEST_CASE("A notification over the size limit is dropped, not copied",
          "[handshake_security]") {
  LoggedServer server(TestEngineOptions("server", kToken));
  RawUcxClient raw(HandshakeReplies(), server.options.ucx_peer_error_handling);
  size_t seen = 0;
  ucp_ep_h ep = raw.Connect(server.port);
  const HandRun run = HandshakeByHand(&raw, ep, &seen, server.bound);
  raw.Send(ep, internal::kAmMessage, run.server_conn_id,
           std::string(internal::kMaxNotificationBytes + 1, 'x'));
  raw.Send(ep, internal::kAmMessage, run.server_conn_id, "small");
  std::vector<Notification> notes =
      server.engine->TakeNotifications(server.bound);
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].bytes == "small");
  CHECK(server.log.Count("over the 1048576-byte limit") == 1);
}

TEST_CASE(
    "A hello signed with another token is refused before the "
    "challenge",
    "[handshake_security]") {
  LoggedServer server(TestEngineOptions("server", kToken));
  RawUcxClient raw(HandshakeReplies(), server.options.ucx_peer_error_handling);
  internal::Hello hello;
  hello.via_sockaddr = true;
  hello.sender_conn_id = 5;
  hello.client_nonce = internal::RandomNonce();
  hello.name = "stranger";
  size_t seen = 0;
  ucp_ep_h ep = raw.Connect(server.port);
  raw.Send(ep, internal::kAmHello, 0,
           internal::EncodeHello(hello, "another token"));
  const RawUcxClient::Received refusal = NextReply(&raw, &seen, server.bound);
  CHECK(refusal.kind == 'R');
  CHECK(server.log.Count("refused \"stranger\": wrong cluster token") == 1);
  CHECK(server.engine->Peers().empty());
}

// Opens a non-blocking TCP connection to 127.0.0.1:`port`; -1 on failure.
int RawTcpConnect(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&sin), sizeof(sin)) != 0 &&
      errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

TEST_CASE(
    "Half-open connections stay bounded and a legitimate peer "
    "connects meanwhile",
    "[handshake_security]") {
  TransferEngineOptions options = TestEngineOptions("server", kToken);
  // Long enough that every half-open client is pending before the first
  // one is dropped, however slowly a loaded machine wires them up.
  options.connect_timeout = absl::Seconds(10);
  options.max_pending_handshakes = 16;
  LoggedServer server(options);
  const uint16_t port = server.port;

  // 200 raw TCP clients: a third stay silent, a third send garbage, a third
  // send the first bytes of a message and stop. UCX's listener never hands
  // them to the engine as connections.
  constexpr int kRawTcp = 200;
  std::vector<int> fds;
  for (int i = 0; i < kRawTcp; ++i) {
    const int fd = RawTcpConnect(port);
    REQUIRE(fd >= 0);
    fds.push_back(fd);
  }
  std::string garbage(512, '\0');
  flowkv::testing::FillRandom(reinterpret_cast<uint8_t*>(garbage.data()),
                              garbage.size(), 7);
  for (int i = 0; i < kRawTcp; ++i) {
    if (i % 3 == 1) (void)send(fds[i], garbage.data(), garbage.size(), 0);
    if (i % 3 == 2) (void)send(fds[i], garbage.data(), 3, MSG_NOSIGNAL);
  }
  // A legitimate peer connects while they are open.
  auto good = MakeEngine(TestEngineOptions("good", kToken));
  auto first = good->Connect(server.address);
  INFO(first.status().ToString());
  REQUIRE(first.ok());

  // Raw UCX clients: twice the limit; half never say hello, half send a
  // valid hello and never answer the challenge.
  const size_t raw_ucx = 2 * options.max_pending_handshakes;
  RawUcxClient raw(HandshakeReplies(), options.ucx_peer_error_handling);
  internal::Hello hello;
  hello.via_sockaddr = true;
  hello.client_nonce = internal::RandomNonce();
  hello.name = "half-open";
  const std::string hello_bytes = internal::EncodeHello(hello, kToken);
  for (size_t i = 0; i < raw_ucx; ++i) {
    ucp_ep_h ep = raw.Connect(port);
    if (i % 2 == 1) raw.Send(ep, internal::kAmHello, 0, hello_bytes);
  }
  // The server takes at most max_pending_handshakes of them (plus the good
  // peer) and refuses the rest at once.
  uint64_t most_tracked = 0;
  CHECK(WaitUntil(
      [&] {
        raw.Progress();
        most_tracked =
            std::max(most_tracked, server.engine->Stats().peers_tracked);
        return server.log.Count("max_pending_handshakes") > 0 &&
               most_tracked == options.max_pending_handshakes + 1;
      },
      server.bound));
  // Every half-open one is dropped within connect_timeout.
  CHECK(WaitUntil(
      [&] {
        raw.Progress();
        most_tracked =
            std::max(most_tracked, server.engine->Stats().peers_tracked);
        return server.engine->Stats().peers_tracked == 1;
      },
      server.bound));
  CHECK(most_tracked == options.max_pending_handshakes + 1);
  // The server still serves: the connected peer's message arrives and a
  // new peer connects.
  REQUIRE(good->Send(*first, "still here").Wait().ok());
  std::vector<Notification> notes =
      server.engine->TakeNotifications(server.bound);
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].bytes == "still here");
  auto late = MakeEngine(TestEngineOptions("late", kToken));
  auto second = late->Connect(server.address);
  INFO(second.status().ToString());
  CHECK(second.ok());
  CHECK(server.engine->Peers().size() == 2);
  for (int fd : fds) close(fd);
}

// Little-endian bytes of `v`.
template <typename T>
void PutLe(T v, std::string* out) {
  for (size_t i = 0; i < sizeof(T); ++i) {
    out->push_back(static_cast<char>(static_cast<uint64_t>(v) >> (8 * i)));
  }
}

TEST_CASE(
    "An endpoint that did not complete the handshake cannot speak for "
    "a connected peer",
    "[handshake_security]") {
  LoggedServer server(TestEngineOptions("server", kToken));
  auto dst = server.engine->AllocateMemory(4096);
  REQUIRE(dst.ok());
  std::memset(dst->data, 0, 4096);
  auto good = MakeEngine(TestEngineOptions("good", kToken));
  auto peer = good->Connect(server.address);
  REQUIRE(peer.ok());

  // An unauthenticated endpoint names connection ids as a peer would: small
  // integers, and every id it could learn from a failed handshake of its
  // own. None names the good peer's connection.
  RawUcxClient raw(HandshakeReplies(), server.options.ucx_peer_error_handling);
  ucp_ep_h ep = raw.Connect(server.port);
  constexpr uint64_t kGuesses = 256;
  for (uint64_t conn_id = 0; conn_id < kGuesses; ++conn_id) {
    raw.Send(ep, internal::kAmMessage, conn_id, "spoofed");
    std::string header;
    PutLe<uint64_t>(conn_id, &header);  // conn_id
    PutLe<uint64_t>(0, &header);        // transfer_id
    PutLe<uint32_t>(dst->id, &header);  // region
    PutLe<uint32_t>(0, &header);        // code
    PutLe<uint64_t>(0, &header);        // offset
    PutLe<uint64_t>(8, &header);        // length
    PutLe<uint32_t>(0, &header);        // reply_region
    PutLe<uint64_t>(0, &header);        // reply_offset
    REQUIRE(header.size() == internal::kDataHeaderBytes);
    raw.SendWithHeader(ep, internal::kAmData, header, std::string(8, '\xff'));
  }
  // A hello with another token on the same endpoint: its refusal is logged
  // after everything sent before it was handled.
  internal::Hello hello;
  hello.via_sockaddr = true;
  hello.name = "spoofer";
  raw.Send(ep, internal::kAmHello, 0, internal::EncodeHello(hello, "guess"));
  CHECK(WaitUntil(
      [&] {
        raw.Progress();
        return server.log.Count("refused \"spoofer\"") == 1;
      },
      server.bound));
  CHECK(server.log.Count("which is not connected") ==
        static_cast<int>(kGuesses));
  CHECK(server.engine->TakeNotifications().empty());
  const auto* bytes = static_cast<const uint8_t*>(dst->data);
  CHECK(std::all_of(bytes, bytes + 4096, [](uint8_t b) { return b == 0; }));
  // The good peer still speaks for itself.
  REQUIRE(good->Send(*peer, "real").Wait().ok());
  std::vector<Notification> notes =
      server.engine->TakeNotifications(server.bound);
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].bytes == "real");
}

TEST_CASE("A secondary token lets a rotation proceed without a flag day",
          "[handshake_security]") {
  // Mid-rotation: the server has moved to the new token and still accepts
  // the old one.
  TransferEngineOptions options = TestEngineOptions("server", "new-token");
  options.secondary_cluster_token = "old-token";
  auto server = MakeEngine(options);
  auto address = server->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  auto old_client = MakeEngine(TestEngineOptions("old", "old-token"));
  auto old_peer = old_client->Connect(*address);
  INFO(old_peer.status().ToString());
  CHECK(old_peer.ok());
  auto new_client = MakeEngine(TestEngineOptions("new", "new-token"));
  CHECK(new_client->Connect(*address).ok());
  auto stranger = MakeEngine(TestEngineOptions("stranger", "other-token"));
  CHECK(stranger->Connect(*address).status().code() ==
        absl::StatusCode::kPermissionDenied);
  // An engine not yet moved (old token first) that already accepts the new
  // one takes the server's metadata, signed with the new token.
  TransferEngineOptions lagging = TestEngineOptions("lagging", "old-token");
  lagging.secondary_cluster_token = "new-token";
  auto lagging_client = MakeEngine(lagging);
  auto metadata = server->LocalMetadata();
  REQUIRE(metadata.ok());
  auto added = lagging_client->AddPeer(*metadata);
  INFO(added.status().ToString());
  CHECK(added.ok());
  CHECK(server->Peers().size() == 3);
  // Transfers flow over the connection made with the old token.
  REQUIRE(old_client->Send(*old_peer, "via old").Wait().ok());
  std::vector<Notification> notes = server->TakeNotifications(
      options.connect_timeout + flowkv::testing::kPeerFailureTimeout);
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].bytes == "via old");
  // Limits apply to the second token as to the first.
  TransferEngineOptions too_long = TestEngineOptions("long", "t");
  too_long.secondary_cluster_token = std::string(4097, 'x');
  CHECK(TransferEngine::Create(too_long).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("max_pending_handshakes must be > 0", "[handshake_security]") {
  TransferEngineOptions options = TestEngineOptions("zero", kToken);
  options.max_pending_handshakes = 0;
  auto engine = TransferEngine::Create(options);
  CHECK(engine.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(engine.status().message(), "max_pending_handshakes"));
}

}  // namespace
}  // namespace flowkv
