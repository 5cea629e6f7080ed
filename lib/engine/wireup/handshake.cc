// SPDX-License-Identifier: Apache-2.0
// Connection set-up: Listen, Connect, AddPeer, LocalMetadata, and the
// handshake (wire_format.h): Hello -> Challenge -> Proof -> Welcome, in
// which each side proves it holds the cluster token over both sides' fresh
// nonces, checks the protocol version and trades region tables. Accepted
// connections still in their handshake are capped at
// options.max_pending_handshakes and dropped after options.connect_timeout.
// It may call UCX endpoint and listener creation, the wire format,
// sock_addr, and the peer state machine.

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lib/common/tsan_lock.h"
#include "lib/engine/fault_injection.h"
#include "lib/engine/transfer_engine_impl.h"
#include "lib/engine/ucx_status.h"
#include "lib/engine/wireup/sock_addr.h"
#include "lib/engine/wireup/ucx_address.h"

namespace flowkv::internal {
namespace {

// How long a refused connection stays open for the reject to reach the
// client before the server closes it.
constexpr absl::Duration kRejectLinger = absl::Seconds(2);

absl::StatusCode CodeFromWire(uint32_t code) {
  if (code == 0 ||
      code > static_cast<uint32_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::StatusCode::kPermissionDenied;
  }
  return static_cast<absl::StatusCode>(code);
}

}  // namespace

EngineInfo TransferEngineImpl::BuildEngineInfo() const {
  EngineInfo info;
  info.instance_id = instance_id_;
  info.name = options_.name;
  info.ucx_version = worker_->ucx_version();
  info.address_format = UcxAddressFormat(AsBytes(worker_->address()));
  info.worker_address = worker_->address();
  info.regions = regions_.Wire();
  return info;
}

absl::Status TransferEngineImpl::CheckPeerWorkerAddress(
    uint32_t ucx_version, uint8_t address_format,
    const std::string& address) const {
  if (absl::Status s = CheckUcxCompatible(worker_->ucx_version(), ucx_version,
                                          address_format);
      !s.ok()) {
    return s;
  }
  return CheckUcxWorkerAddress(AsBytes(address), AsBytes(worker_->address()));
}

absl::StatusOr<PeerId> TransferEngineImpl::StartConnect(
    const ucp_ep_params_t& base_params, bool via_sockaddr,
    std::function<void(absl::StatusOr<PeerId>)> done) {
  if (stopping_) {
    return absl::FailedPreconditionError("TransferEngine: shutting down");
  }
  Peer* peer = NewPeer();
  ucp_ep_params_t params = base_params;
  params.field_mask |=
      UCP_EP_PARAM_FIELD_ERR_HANDLER | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  params.err_mode = ErrMode();
  params.err_handler.cb = &TransferEngineImpl::OnPeerError;
  params.err_handler.arg = PeerRefFor(peer);
  ucs_status_t st = FaultInjector::Inject(FaultPoint::kEpCreate);
  if (st == UCS_OK) st = ucp_ep_create(worker_->worker(), &params, &peer->ep);
  if (st != UCS_OK) {
    const absl::Status status = UcxStatus(st, "ucp_ep_create");
    peers_.Erase(peer->id);
    return status;
  }
  peer->state = PeerState::kConnecting;
  peer->handshake_deadline = absl::Now() + options_.connect_timeout;
  peer->on_connected = std::move(done);
  peer->nonces.client = RandomNonce();
  Hello hello;
  hello.via_sockaddr = via_sockaddr;
  hello.sender_conn_id = peer->wire_id;
  hello.client_nonce = peer->nonces.client;
  hello.name = options_.name;
  hello.ucx_version = worker_->ucx_version();
  hello.address_format = UcxAddressFormat(AsBytes(worker_->address()));
  if (!via_sockaddr) hello.worker_address = worker_->address();
  SendControl(peer, kAmHello, {}, EncodeHello(hello, options_.cluster_token),
              /*reply=*/via_sockaddr);
  return peer->id;
}

absl::StatusOr<PeerId> TransferEngineImpl::AwaitConnect(
    const std::string& what, std::function<absl::StatusOr<PeerId>(
                                 std::function<void(absl::StatusOr<PeerId>)>)>
                                 start) {
  if (absl::Status s = CheckNotProgressThread(what.c_str()); !s.ok()) return s;
  struct Waiter {
    TsanNotification done;
    absl::StatusOr<PeerId> result = absl::UnknownError("pending");
  };
  auto waiter = std::make_shared<Waiter>();
  auto on_done = [waiter](absl::StatusOr<PeerId> result) {
    waiter->result = std::move(result);
    waiter->done.Notify();
  };
  absl::StatusOr<PeerId> started = RunSync<absl::StatusOr<PeerId>>(
      [&]() -> absl::StatusOr<PeerId> { return start(on_done); });
  if (!started.ok()) {
    return absl::Status(started.status().code(),
                        absl::StrCat(what, ": ", started.status().message()));
  }
  waiter->done.WaitForNotification();
  if (!waiter->result.ok()) {
    return absl::Status(
        waiter->result.status().code(),
        absl::StrCat(what, ": ", waiter->result.status().message()));
  }
  return waiter->result;
}

absl::StatusOr<std::string> TransferEngineImpl::Listen(
    const std::string& address) {
  absl::StatusOr<SockAddr> addr = ParseSockAddr(address);
  if (!addr.ok()) return addr.status();
  return RunSync<absl::StatusOr<std::string>>(
      [&]() -> absl::StatusOr<std::string> {
        if (listener_ != nullptr) {
          return absl::FailedPreconditionError(
              "Listen: the engine is already listening");
        }
        ucp_listener_params_t params{};
        params.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR |
                            UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
        params.sockaddr.addr =
            reinterpret_cast<const sockaddr*>(&addr->storage);
        params.sockaddr.addrlen = addr->length;
        params.conn_handler.cb = &TransferEngineImpl::OnConnRequest;
        params.conn_handler.arg = this;
        if (absl::Status s = UcxStatus(
                ucp_listener_create(worker_->worker(), &params, &listener_),
                absl::StrCat("Listen(", address, ")"));
            !s.ok()) {
          listener_ = nullptr;
          return s;
        }
        ucp_listener_attr_t attr{};
        attr.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
        if (absl::Status s = UcxStatus(ucp_listener_query(listener_, &attr),
                                       "ucp_listener_query");
            !s.ok()) {
          return s;
        }
        std::string bound = FormatSockAddr(attr.sockaddr);
        TsanMutexLock lock(&mu_);
        listen_address_ = bound;
        return bound;
      });
}

absl::StatusOr<PeerId> TransferEngineImpl::Connect(const std::string& address) {
  absl::StatusOr<SockAddr> addr = ParseSockAddr(address);
  if (!addr.ok()) return addr.status();
  return AwaitConnect(
      absl::StrCat("Connect(", address, ")"),
      [&](std::function<void(absl::StatusOr<PeerId>)> done) {
        ucp_ep_params_t params{};
        params.field_mask =
            UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR;
        params.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
        params.sockaddr.addr =
            reinterpret_cast<const sockaddr*>(&addr->storage);
        params.sockaddr.addrlen = addr->length;
        return StartConnect(params, /*via_sockaddr=*/true, std::move(done));
      });
}

absl::StatusOr<std::string> TransferEngineImpl::LocalMetadata() const {
  return EncodeEngineInfo(BuildEngineInfo(), options_.cluster_token);
}

absl::StatusOr<PeerId> TransferEngineImpl::AddPeer(
    absl::Span<const uint8_t> metadata) {
  // Verified (structure and the cluster token's MAC) before any byte of it
  // reaches UCX.
  absl::StatusOr<EngineInfo> info =
      ParseSignedEngineInfo(metadata, options_.cluster_token);
  if (info.status().code() == absl::StatusCode::kPermissionDenied &&
      options_.secondary_cluster_token.has_value()) {
    info = ParseSignedEngineInfo(metadata, *options_.secondary_cluster_token);
  }
  // Signed is not well formed: a cluster member's bytes reach UCX only
  // once the local UCX can read them.
  if (info.ok()) {
    if (absl::Status s = CheckPeerWorkerAddress(
            info->ucx_version, info->address_format, info->worker_address);
        !s.ok()) {
      info = absl::Status(s.code(), absl::StrFormat("engine \"%s\": %s",
                                                    info->name, s.message()));
    }
  }
  if (!info.ok()) {
    // The caller gets the error; the log keeps a trace of the refusal.
    Log(LogSeverity::kInfo,
        absl::StrCat("AddPeer refused metadata: ", info.status().ToString()));
    return absl::Status(info.status().code(),
                        absl::StrCat("AddPeer: ", info.status().message()));
  }
  return AwaitConnect(
      absl::StrCat("AddPeer(\"", info->name, "\")"),
      [&](std::function<void(absl::StatusOr<PeerId>)> done) {
        ucp_ep_params_t params{};
        params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
        params.address =
            reinterpret_cast<const ucp_address_t*>(info->worker_address.data());
        return StartConnect(params, /*via_sockaddr=*/false, std::move(done));
      });
}

void TransferEngineImpl::OnConnRequest(ucp_conn_request_h request, void* arg) {
  auto* self = static_cast<TransferEngineImpl*>(arg);
  if (self->stopping_) {
    ucp_listener_reject(self->listener_, request);
    return;
  }
  if (!self->AdmitHandshake("a connection request")) {
    ucp_listener_reject(self->listener_, request);
    return;
  }
  Peer* peer = self->NewPeer();
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER |
                      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  params.conn_request = request;
  params.err_mode = self->ErrMode();
  params.err_handler.cb = &TransferEngineImpl::OnPeerError;
  params.err_handler.arg = self->PeerRefFor(peer);
  ucs_status_t st = FaultInjector::Inject(FaultPoint::kEpCreate);
  if (st != UCS_OK) {
    ucp_listener_reject(self->listener_, request);  // not handed to UCX
  } else {
    st = ucp_ep_create(self->worker_->worker(), &params, &peer->ep);
  }
  if (st != UCS_OK) {
    self->Log(
        LogSeverity::kWarning,
        UcxStatus(st, "accepting a connection: ucp_ep_create").ToString());
    self->peers_.Erase(peer->id);
    return;
  }
  peer->state = PeerState::kAccepting;
  peer->handshake_deadline = absl::Now() + self->options_.connect_timeout;
  self->peers_.accepting()[peer->ep] = peer->id;
}

absl::Status TransferEngineImpl::UnpackRegions(Peer* peer,
                                               const EngineInfo& info) {
  for (const WireRegion& wire : info.regions) {
    RemoteRegion region;
    region.info.id = wire.id;
    region.info.kind = static_cast<MemoryKind>(wire.kind);
    region.info.base = wire.base;
    region.info.length = wire.length;
    ucs_status_t st =
        ucp_ep_rkey_unpack(peer->ep, wire.rkey.data(), &region.rkey);
    if (st != UCS_OK) {
      return UcxStatus(st, absl::StrFormat("peer %d: remote key of region %d",
                                           peer->id, wire.id));
    }
    peer->regions[wire.id] = region;
  }
  return absl::OkStatus();
}

void TransferEngineImpl::MakeReady(Peer* peer, const EngineInfo& info,
                                   uint64_t remote_conn_id) {
  peer->state = PeerState::kReady;
  peer->was_ready = true;
  peer->name = info.name;
  peer->remote_conn_id = remote_conn_id;
  peer->handshake_deadline = absl::InfiniteFuture();
  peer->last_heard = absl::Now();
  const EndpointRma rma = QueryEndpointRma(peer->ep);
  peer->rma_put = rma.put;
  peer->rma_get = rma.get;
  peers_.accepting().erase(peer->ep);
  peers_.Publish(*peer);
}

size_t TransferEngineImpl::PendingHandshakes() const {
  size_t pending = 0;
  peers_.ForEach([&](const Peer* peer) {
    pending += peer->state == PeerState::kAccepting ||
               peer->state == PeerState::kRejecting;
  });
  return pending;
}

bool TransferEngineImpl::AdmitHandshake(const char* what) {
  const size_t pending = PendingHandshakes();
  if (pending < options_.max_pending_handshakes) return true;
  ++handshakes_refused_for_load_;
  // Once per burst: the count says how many were refused.
  if (handshakes_refused_for_load_ == 1 ||
      (handshakes_refused_for_load_ & (handshakes_refused_for_load_ - 1)) ==
          0) {
    Log(LogSeverity::kWarning,
        absl::StrFormat("refused %s: %d handshakes pending (the limit, "
                        "max_pending_handshakes); %d refused so far",
                        what, pending, handshakes_refused_for_load_));
  }
  return false;
}

void TransferEngineImpl::RejectPeer(Peer* peer, uint64_t client_conn_id,
                                    std::string reason) {
  Reject reject;
  reject.receiver_conn_id = client_conn_id;
  reject.code = static_cast<uint32_t>(absl::StatusCode::kPermissionDenied);
  reject.reason = std::move(reason);
  Log(LogSeverity::kWarning, reject.reason);
  SendControl(peer, kAmReject, {client_conn_id, 0}, EncodeReject(reject),
              false);
  peer->state = PeerState::kRejecting;
  peer->handshake_deadline = absl::Now() + kRejectLinger;
  peers_.accepting().erase(peer->ep);
}

void TransferEngineImpl::HandleHello(const Hello& hello, ucp_ep_h reply_ep) {
  const bool primary = HelloSignedWith(hello, options_.cluster_token);
  const bool secondary =
      !primary && options_.secondary_cluster_token.has_value() &&
      HelloSignedWith(hello, *options_.secondary_cluster_token);
  const bool signed_ok = primary || secondary;
  Peer* peer = nullptr;
  if (hello.via_sockaddr) {
    if (reply_ep == nullptr) return;
    auto it = peers_.accepting().find(reply_ep);
    if (it == peers_.accepting().end()) return;
    peer = peers_.Find(it->second);
    if (peer == nullptr || peer->state != PeerState::kAccepting ||
        peer->challenged) {
      return;
    }
  } else {
    // AddPeer: connect back to the sender's worker. Its address reaches
    // UCX only from a hello made by someone holding this cluster's token.
    if (!signed_ok) {
      Log(LogSeverity::kWarning,
          absl::StrFormat("refused a hello from \"%s\": wrong cluster token "
                          "(no connection back)",
                          hello.name));
      return;
    }
    if (absl::Status s = CheckPeerWorkerAddress(
            hello.ucx_version, hello.address_format, hello.worker_address);
        !s.ok()) {
      Log(LogSeverity::kWarning,
          absl::StrFormat("refused a hello from \"%s\" (no connection back): "
                          "%s",
                          hello.name, s.ToString()));
      return;
    }
    if (!AdmitHandshake("an AddPeer hello")) return;
    peer = NewPeer();
    ucp_ep_params_t params{};
    params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
                        UCP_EP_PARAM_FIELD_ERR_HANDLER |
                        UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    params.address =
        reinterpret_cast<const ucp_address_t*>(hello.worker_address.data());
    params.err_mode = ErrMode();
    params.err_handler.cb = &TransferEngineImpl::OnPeerError;
    params.err_handler.arg = PeerRefFor(peer);
    ucs_status_t st = FaultInjector::Inject(FaultPoint::kEpCreate);
    if (st == UCS_OK) st = ucp_ep_create(worker_->worker(), &params, &peer->ep);
    if (st != UCS_OK) {
      Log(LogSeverity::kWarning,
          absl::StrFormat("cannot connect back to \"%s\"", hello.name));
      peers_.Erase(peer->id);
      return;
    }
    peer->state = PeerState::kAccepting;
    peer->handshake_deadline = absl::Now() + options_.connect_timeout;
  }
  peer->name = hello.name;
  if (!signed_ok) {
    RejectPeer(
        peer, hello.sender_conn_id,
        absl::StrFormat("engine \"%s\" refused \"%s\": wrong cluster token",
                        options_.name, hello.name));
    return;
  }
  // Answer with a fresh nonce: only a client that holds the token can make
  // the proof over it, so a recorded hello (or proof) replayed gets no
  // further.
  peer->challenged = true;
  peer->secondary_token = secondary;
  peer->remote_conn_id = hello.sender_conn_id;
  peer->nonces.client = hello.client_nonce;
  peer->nonces.server = RandomNonce();
  Challenge challenge;
  challenge.sender_conn_id = peer->wire_id;
  challenge.receiver_conn_id = hello.sender_conn_id;
  challenge.server_nonce = peer->nonces.server;
  SendControl(peer, kAmChallenge, {hello.sender_conn_id, 0},
              EncodeChallenge(challenge), false);
}

void TransferEngineImpl::HandleChallenge(const Challenge& challenge) {
  Peer* peer = peers_.FindByWireId(challenge.receiver_conn_id);
  if (peer == nullptr || peer->state != PeerState::kConnecting ||
      peer->challenged) {
    return;
  }
  peer->challenged = true;
  peer->remote_conn_id = challenge.sender_conn_id;
  peer->nonces.server = challenge.server_nonce;
  HandshakeProof proof;
  proof.sender_conn_id = peer->wire_id;
  proof.receiver_conn_id = challenge.sender_conn_id;
  proof.info = BuildEngineInfo();
  SendControl(peer, kAmProof, {challenge.sender_conn_id, 0},
              EncodeProof(ProofRole::kClient, proof, options_.cluster_token,
                          peer->nonces),
              false);
}

void TransferEngineImpl::HandleProof(const HandshakeProof& proof,
                                     uint64_t conn_id) {
  Peer* peer = peers_.FindByWireId(conn_id);
  if (peer == nullptr || peer->state != PeerState::kAccepting ||
      !peer->challenged) {
    return;
  }
  // Connection ids that are not this handshake's are a proof from another
  // (a replay): refused as a wrong proof.
  if (proof.receiver_conn_id != peer->wire_id ||
      proof.sender_conn_id != peer->remote_conn_id ||
      !ProofValid(ProofRole::kClient, proof, TokenFor(*peer), peer->nonces)) {
    RejectPeer(peer, peer->remote_conn_id,
               absl::StrFormat("engine \"%s\" refused \"%s\": its handshake "
                               "proof does not match this handshake's "
                               "nonces and cluster token (a wrong token or "
                               "a replayed handshake)",
                               options_.name, peer->name));
    return;
  }
  if (absl::Status s = UnpackRegions(peer, proof.info); !s.ok()) {
    FailPeer(peer, s);
    return;
  }
  HandshakeProof welcome;
  welcome.sender_conn_id = peer->wire_id;
  welcome.receiver_conn_id = peer->remote_conn_id;
  welcome.info = BuildEngineInfo();
  const uint64_t client = peer->remote_conn_id;
  // Ready (and visible in Peers()) before the client can see the welcome.
  MakeReady(peer, proof.info, client);
  SendControl(
      peer, kAmWelcome, {client, 0},
      EncodeProof(ProofRole::kServer, welcome, TokenFor(*peer), peer->nonces),
      false);
}

void TransferEngineImpl::HandleWelcome(const HandshakeProof& welcome) {
  Peer* peer = peers_.FindByWireId(welcome.receiver_conn_id);
  if (peer == nullptr || peer->state != PeerState::kConnecting ||
      !peer->challenged || welcome.sender_conn_id != peer->remote_conn_id) {
    return;
  }
  if (!ProofValid(ProofRole::kServer, welcome, options_.cluster_token,
                  peer->nonces)) {
    FailPeer(peer, absl::PermissionDeniedError(absl::StrFormat(
                       "engine \"%s\" refused \"%s\": its handshake proof "
                       "does not match this handshake's nonces and cluster "
                       "token",
                       options_.name, welcome.info.name)));
    return;
  }
  if (absl::Status s = UnpackRegions(peer, welcome.info); !s.ok()) {
    FailPeer(peer, s);
    return;
  }
  MakeReady(peer, welcome.info, welcome.sender_conn_id);
  if (peer->on_connected) {
    auto done = std::move(peer->on_connected);
    peer->on_connected = nullptr;
    done(peer->id);
  }
}

void TransferEngineImpl::HandleReject(const Reject& reject) {
  Peer* peer = peers_.FindByWireId(reject.receiver_conn_id);
  if (peer == nullptr || peer->state != PeerState::kConnecting) return;
  FailPeer(peer,
           absl::Status(CodeFromWire(reject.code),
                        absl::StrCat("connection refused: ", reject.reason)));
}

}  // namespace flowkv::internal
