// SPDX-License-Identifier: Apache-2.0
// The handshake messages (wire_format.h): what each carries, that the
// cluster token never appears in any of their bytes, and that a proof is
// valid only for the token and the two nonces it was made with (so a
// recorded proof replayed in another handshake is refused).

#include <cstdint>
#include <string>
#include <string_view>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "lib/common/hmac.h"
#include "lib/engine/wireup/wire_format.h"

namespace flowkv::internal {
namespace {

constexpr std::string_view kToken = "TOKEN-3f9a2c-never-on-the-wire";

EngineInfo MakeInfo(const std::string& name) {
  EngineInfo info;
  info.instance_id = 42;
  info.name = name;
  info.worker_address = std::string(64, '\x5a');
  info.regions.push_back({.id = 1,
                          .kind = 0,
                          .base = 0x7f0000000000,
                          .length = 1 << 20,
                          .rkey = std::string(18, '\x11')});
  return info;
}

// Every byte one Connect and one AddPeer handshake put on the wire, and a
// reject.
struct Transcript {
  Hello hello;
  Challenge challenge;
  HandshakeProof proof;
  HandshakeProof welcome;
  HandshakeNonces nonces;
  std::vector<std::string> messages;
};

Transcript RunHandshake(bool via_sockaddr) {
  Transcript t;
  t.nonces.client = RandomNonce();
  t.nonces.server = RandomNonce();
  t.hello.via_sockaddr = via_sockaddr;
  t.hello.sender_conn_id = 3;
  t.hello.client_nonce = t.nonces.client;
  t.hello.name = "client";
  if (!via_sockaddr) t.hello.worker_address = std::string(40, '\x07');
  t.hello.ucx_version = 0x010d01;
  t.hello.address_format = 1;
  t.challenge = {.sender_conn_id = 9,
                 .receiver_conn_id = 3,
                 .server_nonce = t.nonces.server};
  t.proof.sender_conn_id = 3;
  t.proof.receiver_conn_id = 9;
  t.proof.info = MakeInfo("client");
  t.welcome.sender_conn_id = 9;
  t.welcome.receiver_conn_id = 3;
  t.welcome.info = MakeInfo("server");
  t.messages.push_back(EncodeHello(t.hello, kToken));
  t.messages.push_back(EncodeChallenge(t.challenge));
  t.messages.push_back(
      EncodeProof(ProofRole::kClient, t.proof, kToken, t.nonces));
  t.messages.push_back(
      EncodeProof(ProofRole::kServer, t.welcome, kToken, t.nonces));
  t.messages.push_back(EncodeReject(
      {.receiver_conn_id = 3, .code = 7, .reason = "wrong cluster token"}));
  return t;
}

TEST_CASE("No handshake message carries the cluster token", "[handshake]") {
  for (bool via_sockaddr : {true, false}) {
    const Transcript t = RunHandshake(via_sockaddr);
    for (const std::string& message : t.messages) {
      CHECK(message.find(kToken) == std::string::npos);
      // Nor any 8-byte piece of it.
      for (size_t i = 0; i + 8 <= kToken.size(); ++i) {
        CHECK(message.find(kToken.substr(i, 8)) == std::string::npos);
      }
    }
  }
}

TEST_CASE("Handshake messages round-trip and check with the right token",
          "[handshake]") {
  const Transcript t = RunHandshake(/*via_sockaddr=*/false);
  absl::StatusOr<Hello> hello = ParseHello(AsBytes(t.messages[0]));
  REQUIRE(hello.ok());
  CHECK(!hello->via_sockaddr);
  CHECK(hello->sender_conn_id == 3);
  CHECK(hello->client_nonce == t.nonces.client);
  CHECK(hello->name == "client");
  CHECK(hello->worker_address == t.hello.worker_address);
  CHECK(hello->ucx_version == t.hello.ucx_version);
  CHECK(hello->address_format == t.hello.address_format);
  CHECK(HelloSignedWith(*hello, kToken));
  CHECK(!HelloSignedWith(*hello, "another token"));
  CHECK(!HelloSignedWith(*hello, ""));

  absl::StatusOr<Challenge> challenge = ParseChallenge(AsBytes(t.messages[1]));
  REQUIRE(challenge.ok());
  CHECK(challenge->sender_conn_id == 9);
  CHECK(challenge->receiver_conn_id == 3);
  CHECK(challenge->server_nonce == t.nonces.server);

  absl::StatusOr<HandshakeProof> proof =
      ParseProof(ProofRole::kClient, AsBytes(t.messages[2]));
  REQUIRE(proof.ok());
  CHECK(proof->info.name == "client");
  CHECK(ProofValid(ProofRole::kClient, *proof, kToken, t.nonces));
  CHECK(!ProofValid(ProofRole::kClient, *proof, "another token", t.nonces));

  absl::StatusOr<HandshakeProof> welcome =
      ParseProof(ProofRole::kServer, AsBytes(t.messages[3]));
  REQUIRE(welcome.ok());
  CHECK(welcome->info.name == "server");
  CHECK(ProofValid(ProofRole::kServer, *welcome, kToken, t.nonces));
  // A client proof is not a server proof, nor the other way round.
  CHECK(!ParseProof(ProofRole::kServer, AsBytes(t.messages[2])).ok());
  CHECK(!ParseProof(ProofRole::kClient, AsBytes(t.messages[3])).ok());
}

TEST_CASE("A proof recorded in one handshake is refused in another",
          "[handshake]") {
  const Transcript recorded = RunHandshake(/*via_sockaddr=*/true);
  absl::StatusOr<HandshakeProof> proof =
      ParseProof(ProofRole::kClient, AsBytes(recorded.messages[2]));
  REQUIRE(proof.ok());
  // The replayer sends the recorded hello: the server answers with a fresh
  // nonce, over which the recorded proof does not check.
  HandshakeNonces fresh = recorded.nonces;
  fresh.server = RandomNonce();
  CHECK(!ProofValid(ProofRole::kClient, *proof, kToken, fresh));
  // Nor with the server's nonce reused and another client nonce.
  fresh = recorded.nonces;
  fresh.client = RandomNonce();
  CHECK(!ProofValid(ProofRole::kClient, *proof, kToken, fresh));
  // Any changed field (conn ids, the engine info) fails the proof too.
  HandshakeProof altered = *proof;
  altered.receiver_conn_id += 1;
  CHECK(!ProofValid(ProofRole::kClient, altered, kToken, recorded.nonces));
  altered = *proof;
  altered.info_blob = EncodeEngineInfo(MakeInfo("mallory"), kToken);
  CHECK(!ProofValid(ProofRole::kClient, altered, kToken, recorded.nonces));
  // Two nonces are never equal.
  CHECK(RandomNonce() != RandomNonce());
}

TEST_CASE("Malformed handshake messages are InvalidArgument", "[handshake]") {
  const Transcript t = RunHandshake(/*via_sockaddr=*/true);
  for (size_t i = 0; i < 4; ++i) {
    const std::string& message = t.messages[i];
    for (size_t n = 0; n < message.size(); ++n) {
      const auto bytes = AsBytes(std::string_view(message).substr(0, n));
      absl::Status status = i == 0   ? ParseHello(bytes).status()
                            : i == 1 ? ParseChallenge(bytes).status()
                                     : ParseProof(i == 2 ? ProofRole::kClient
                                                         : ProofRole::kServer,
                                                  bytes)
                                           .status();
      REQUIRE(status.code() == absl::StatusCode::kInvalidArgument);
    }
  }
  // A sockaddr hello with a worker address (or an AddPeer one without).
  Hello hello = t.hello;
  hello.worker_address = "x";
  absl::Status status =
      ParseHello(AsBytes(EncodeHello(hello, kToken))).status();
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(status.message(), "worker_address"));
}

}  // namespace
}  // namespace flowkv::internal
