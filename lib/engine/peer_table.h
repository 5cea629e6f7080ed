// SPDX-License-Identifier: Apache-2.0
// PeerTable: the engine's connections and what callers may see of them.
//
// A Peer moves through
//   kConnecting (Connect/AddPeer sent a hello) or kAccepting (a connection
//   request or hello arrived) -> kReady (handshake done) -> kClosing (failed
//   or disconnected: the endpoint is being force-closed) -> kClosed,
// or kAccepting -> kRejecting (a refused token: the reject lingers, then
// closes). Disconnect first asks the peer to stop writing (a ready peer
// that is `stopping` takes no new transfers) and closes on its
// confirmation or after peer_failure_timeout. A closed peer leaves the table as
// soon as its transfers are reported, so the progress loop's cost follows the
// live connections, not every connection the engine ever had. Callers see peers
// through published immutable views (PeerView); the views of disconnected peers
// stay listed (the newest kMaxListedDisconnected of them) so callers can read
// why.
//
// The state transitions themselves (FailPeer, close, handshake) are the
// engine's (peer_table.cc, handshake.cc); this class holds the data.
//
// Thread safety: the peer map is the progress thread's; the views are
// thread-safe.

#ifndef FLOWKV_LIB_ENGINE_PEER_TABLE_H_
#define FLOWKV_LIB_ENGINE_PEER_TABLE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <ucp/api/ucp.h>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "flowkv/transfer_engine.h"
#include "lib/engine/wireup/wire_format.h"

namespace flowkv::internal {

class TransferEngineImpl;

enum class PeerState {
  kConnecting,
  kAccepting,
  kRejecting,
  kReady,
  kClosing,
  kClosed
};

struct RemoteRegion {
  RegionInfo info;
  ucp_rkey_h rkey = nullptr;
  // Where a shared-memory transport maps the region here (mapped_copy.h);
  // looked up on the first window to it (mapped_known), null if unmapped.
  bool mapped_known = false;
  char* mapped = nullptr;
};

// What callers may read of a peer.
struct PeerView {
  std::string name;
  bool connected = false;
  PeerDataMethod write_method = PeerDataMethod::kRma;
  PeerDataMethod read_method = PeerDataMethod::kRma;
  absl::Status failure;
  absl::flat_hash_map<RegionId, RegionInfo> regions;
};

// A connection (progress thread).
struct Peer {
  TransferEngineImpl* engine = nullptr;
  PeerId id = 0;
  // This engine's id for the connection on the wire (the AmHeader's
  // conn_id of what the peer sends): random, so that an endpoint that did
  // not complete the handshake cannot name another's connection.
  uint64_t wire_id = 0;
  ucp_ep_h ep = nullptr;
  PeerState state = PeerState::kConnecting;
  bool was_ready = false;
  uint64_t remote_conn_id = 0;
  std::string name;
  absl::flat_hash_map<RegionId, RemoteRegion> regions;
  // Whether the endpoint has a one-sided put / get (else the message data
  // path moves the bytes; set when the handshake completes).
  bool rma_put = true;
  bool rma_get = true;
  absl::Time handshake_deadline = absl::InfiniteFuture();
  // The handshake: both nonces once the challenge was sent or received.
  HandshakeNonces nonces;
  bool challenged = false;
  // An accepted connection whose hello was made with the engine's
  // secondary_cluster_token: its proof and the welcome use that token.
  bool secondary_token = false;
  // Watched with heartbeats (ucx_peer_error_handling == false).
  bool heartbeat = false;
  absl::Time last_heard = absl::InfinitePast();
  absl::Time last_ping = absl::InfinitePast();
  absl::Status failure;
  // Connect / AddPeer waiting for the handshake.
  std::function<void(absl::StatusOr<PeerId>)> on_connected;
  // Disconnect calls waiting for the endpoint to close, with the result.
  std::vector<std::function<void(absl::Status)>> on_closed;
  // The stop handshake of a Disconnect (peer_table.cc): this engine asked
  // the peer to stop writing (stopping, until stop_deadline) and the peer
  // confirmed it had (stop_confirmed); or the peer asked this engine to
  // stop (stop_requested).
  bool stopping = false;
  absl::Time stop_deadline = absl::InfiniteFuture();
  bool stop_confirmed = false;
  bool stop_requested = false;
  bool stop_ack_sent = false;
};

class PeerTable {
 public:
  static constexpr size_t kMaxListedDisconnected = 256;

  // --- Progress thread ----------------------------------------------------
  Peer* Add(std::unique_ptr<Peer> peer);
  Peer* Find(PeerId id) const;
  Peer* FindByWireId(uint64_t wire_id) const;
  // Removes a closed peer (its view stays listed).
  void Erase(PeerId id);
  template <typename Fn>
  void ForEach(Fn fn) {
    for (auto& [id, peer] : peers_) fn(peer.get());
  }
  template <typename Fn>
  void ForEach(Fn fn) const {
    for (const auto& [id, peer] : peers_)
      fn(static_cast<const Peer*>(peer.get()));
  }
  size_t size() const { return peers_.size(); }
  // Endpoints of accepted connections still in their handshake.
  absl::flat_hash_map<ucp_ep_h, PeerId>& accepting() { return accepting_; }

  // Publishes the peer's current state to callers (after its handshake).
  void Publish(const Peer& peer);

  // --- Any thread ---------------------------------------------------------
  std::shared_ptr<const PeerView> FindView(PeerId id) const;
  std::vector<PeerInfo> Views() const;
  absl::StatusOr<PeerInfo> View(PeerId id) const;
  // Listed peers, and those of them that are connected.
  void CountViews(uint64_t* listed, uint64_t* connected) const;

 private:
  absl::flat_hash_map<PeerId, std::unique_ptr<Peer>> peers_;
  absl::flat_hash_map<ucp_ep_h, PeerId> accepting_;
  absl::flat_hash_map<uint64_t, PeerId> wire_ids_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<PeerId, std::shared_ptr<const PeerView>> views_
      ABSL_GUARDED_BY(mu_);
  // Disconnected peers in the order they disconnected (oldest first).
  std::deque<PeerId> disconnected_ ABSL_GUARDED_BY(mu_);
};

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_ENGINE_PEER_TABLE_H_
