// SPDX-License-Identifier: Apache-2.0
// Fuzzes the handshake and peer-metadata parsers
// (lib/engine/wireup/wire_format.h): ParseEngineInfo, ParseSignedEngineInfo,
// ParseHello, ParseChallenge, ParseProof (client and server roles) and
// ParseReject on arbitrary bytes. Input: one selector byte (which parser), then
// the blob.
//
// Checks: no crash, leak or undefined behaviour; every error is
// InvalidArgument, FailedPrecondition or (signed info) PermissionDenied;
// what parses obeys the documented limits; and it round-trips: re-encoding
// the value gives bytes that parse to the same value (and re-encode to the
// same bytes). Hellos and proofs re-encoded with the fuzz key verify under
// it (HelloSignedWith, ProofValid) and not under another key or, for
// proofs, other nonces.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "lib/engine/wireup/wire_format.h"
#include "tests/fuzz/fuzz_input.h"

namespace flowkv::internal {
namespace {

// The key the signed-info seeds are signed with (tests/fuzz/make_seeds.cc).
constexpr std::string_view kFuzzKey = "fuzz-cluster-token";

void CheckLimits(const EngineInfo& info) {
  FUZZ_CHECK(info.name.size() <= kMaxNameBytes);
  FUZZ_CHECK(!info.worker_address.empty());
  FUZZ_CHECK(info.worker_address.size() <= kMaxWorkerAddressBytes);
  FUZZ_CHECK(info.regions.size() <= kMaxRegions);
  for (const WireRegion& r : info.regions) {
    FUZZ_CHECK(r.length > 0);
    FUZZ_CHECK(r.base + r.length > r.base || r.base + r.length == 0,
               "region wraps the address space");
    FUZZ_CHECK(r.kind <= 1);
    FUZZ_CHECK(!r.rkey.empty() && r.rkey.size() <= kMaxRkeyBytes);
  }
}

void CheckError(const absl::Status& status, bool signed_info) {
  const absl::StatusCode code = status.code();
  FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument ||
                 code == absl::StatusCode::kFailedPrecondition ||
                 (signed_info && code == absl::StatusCode::kPermissionDenied),
             status.ToString());
  FUZZ_CHECK(!status.message().empty());
}

void FuzzEngineInfo(absl::Span<const uint8_t> blob, bool signed_info) {
  absl::StatusOr<EngineInfo> info = signed_info
                                        ? ParseSignedEngineInfo(blob, kFuzzKey)
                                        : ParseEngineInfo(blob);
  if (!info.ok()) return CheckError(info.status(), signed_info);
  CheckLimits(*info);
  const std::string again = EncodeEngineInfo(*info, kFuzzKey);
  absl::StatusOr<EngineInfo> back =
      ParseSignedEngineInfo(AsBytes(again), kFuzzKey);
  FUZZ_CHECK(back.ok(), back.status().ToString());
  FUZZ_CHECK(*info == *back);
  FUZZ_CHECK(EncodeEngineInfo(*back, kFuzzKey) == again);
  // A blob signed with the fuzz key is refused under another key.
  FUZZ_CHECK(
      ParseSignedEngineInfo(AsBytes(again), "another token").status().code() ==
      absl::StatusCode::kPermissionDenied);
}

void FuzzHello(absl::Span<const uint8_t> blob) {
  absl::StatusOr<Hello> hello = ParseHello(blob);
  if (!hello.ok()) return CheckError(hello.status(), false);
  FUZZ_CHECK(hello->name.size() <= kMaxNameBytes);
  FUZZ_CHECK(hello->worker_address.size() <= kMaxWorkerAddressBytes);
  const std::string again = EncodeHello(*hello, kFuzzKey);
  absl::StatusOr<Hello> back = ParseHello(AsBytes(again));
  FUZZ_CHECK(back.ok(), back.status().ToString());
  FUZZ_CHECK(back->via_sockaddr == hello->via_sockaddr &&
             back->sender_conn_id == hello->sender_conn_id &&
             back->client_nonce == hello->client_nonce &&
             back->name == hello->name &&
             back->worker_address == hello->worker_address);
  FUZZ_CHECK(HelloSignedWith(*back, kFuzzKey));
  FUZZ_CHECK(!HelloSignedWith(*back, "another token"));
  FUZZ_CHECK(EncodeHello(*back, kFuzzKey) == again);
}

void FuzzChallenge(absl::Span<const uint8_t> blob) {
  absl::StatusOr<Challenge> challenge = ParseChallenge(blob);
  if (!challenge.ok()) return CheckError(challenge.status(), false);
  const std::string again = EncodeChallenge(*challenge);
  absl::StatusOr<Challenge> back = ParseChallenge(AsBytes(again));
  FUZZ_CHECK(back.ok(), back.status().ToString());
  FUZZ_CHECK(back->sender_conn_id == challenge->sender_conn_id &&
             back->receiver_conn_id == challenge->receiver_conn_id &&
             back->server_nonce == challenge->server_nonce);
  FUZZ_CHECK(EncodeChallenge(*back) == again);
}

void FuzzProof(absl::Span<const uint8_t> blob, ProofRole role) {
  absl::StatusOr<HandshakeProof> proof = ParseProof(role, blob);
  if (!proof.ok()) return CheckError(proof.status(), false);
  CheckLimits(proof->info);
  // Nonces from the input's first bytes (any value is a valid nonce).
  HandshakeNonces nonces;
  for (size_t i = 0; i < nonces.client.size(); ++i) {
    nonces.client[i] = blob[i % blob.size()];
    nonces.server[i] = static_cast<uint8_t>(~blob[(i + 7) % blob.size()]);
  }
  const std::string again = EncodeProof(role, *proof, kFuzzKey, nonces);
  absl::StatusOr<HandshakeProof> back = ParseProof(role, AsBytes(again));
  FUZZ_CHECK(back.ok(), back.status().ToString());
  FUZZ_CHECK(back->sender_conn_id == proof->sender_conn_id &&
             back->receiver_conn_id == proof->receiver_conn_id &&
             back->info == proof->info);
  FUZZ_CHECK(ProofValid(role, *back, kFuzzKey, nonces));
  FUZZ_CHECK(!ProofValid(role, *back, "another token", nonces));
  HandshakeNonces replayed = nonces;
  replayed.server[0] ^= 1;
  FUZZ_CHECK(!ProofValid(role, *back, kFuzzKey, replayed));
  FUZZ_CHECK(EncodeProof(role, *back, kFuzzKey, nonces) == again);
}

void FuzzReject(absl::Span<const uint8_t> blob) {
  absl::StatusOr<Reject> reject = ParseReject(blob);
  if (!reject.ok()) return CheckError(reject.status(), false);
  FUZZ_CHECK(reject->reason.size() <= kMaxReasonBytes);
  const std::string again = EncodeReject(*reject);
  absl::StatusOr<Reject> back = ParseReject(AsBytes(again));
  FUZZ_CHECK(back.ok(), back.status().ToString());
  FUZZ_CHECK(back->receiver_conn_id == reject->receiver_conn_id &&
             back->code == reject->code && back->reason == reject->reason);
  FUZZ_CHECK(EncodeReject(*back) == again);
}

}  // namespace
}  // namespace flowkv::internal

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flowkv::internal;  // NOLINT
  if (size == 0) return 0;
  const absl::Span<const uint8_t> blob(data + 1, size - 1);
  switch (data[0] % 7) {
    case 0:
      FuzzEngineInfo(blob, /*signed_info=*/false);
      break;
    case 1:
      FuzzEngineInfo(blob, /*signed_info=*/true);
      break;
    case 2:
      FuzzHello(blob);
      break;
    case 3:
      FuzzChallenge(blob);
      break;
    case 4:
      FuzzProof(blob, ProofRole::kClient);
      break;
    case 5:
      FuzzProof(blob, ProofRole::kServer);
      break;
    default:
      FuzzReject(blob);
      break;
  }
  return 0;
}
