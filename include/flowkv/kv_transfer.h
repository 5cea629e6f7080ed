// KvTransfer: moves whole requests' KV caches between the pools of a
// prefill and a decode process — the one call model runner code makes.
//
// It joins a local KvLayout and the engine regions that hold the pool, the
// layouts of peers' pools, the planner and the TransferEngine:
//
//   // Both sides, at start-up: register the pool, region by region.
//   auto kv = flowkv::KvTransfer::Create(engine.get(), layout, {region});
//   // Prefill side, once the decode peer and its pool layout are known:
//   kv->AddPeerPool(peer, decode_layout, decode_regions);
//   // Per request: one call, after the prompt's prefill.
//   flowkv::TransferHandle h = kv->Send(request_id, peer, {
//       .src_blocks = prefill_blocks, .dst_blocks = decode_blocks,
//       .num_tokens = prompt_tokens});
//   // ... or layer by layer, as each layer's prefill finishes:
//   kv->Send(request_id, peer, {..., .layer_begin = l, .layer_end = l + 1});
//   // Decode side: which requests have all their KV.
//   for (uint64_t id : kv->Poll().finished) StartDecoding(id);
//
// Each Send plans the ops with PlanTransfer (one op per run that is
// contiguous on both sides), writes them with one network call each, and
// then sends a notification carrying the request id and the layer range; it
// reaches the decode side only after the data. The decode side counts layers
// per request and reports a request finished once every layer arrived.
//
// Thread safety: thread-safe.

#ifndef FLOWKV_KV_TRANSFER_H_
#define FLOWKV_KV_TRANSFER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "flowkv/block_list.h"
#include "flowkv/export.h"
#include "flowkv/kv_layout.h"
#include "flowkv/transfer_engine.h"

namespace flowkv {

// What to send for one request (or one layer range of it).
struct KvSendRequest {
  // The request's blocks in the local (source) pool and in the peer's pool,
  // in token order.
  BlockList src_blocks;
  BlockList dst_blocks;
  // Tokens of the request (the last block may be partial).
  uint64_t num_tokens = 0;
  // Layers [layer_begin, layer_end). Default (0, 0): every layer.
  uint32_t layer_begin = 0;
  uint32_t layer_end = 0;
  // Heterogeneous tensor parallelism: local heads [src_head_begin, +n) go
  // to the peer's heads [dst_head_begin, +n). Default: every head.
  uint32_t src_head_begin = 0;
  uint32_t dst_head_begin = 0;
  uint32_t num_heads = 0;
  // Deadline of the transfer. Default: the engine's default_timeout.
  std::optional<absl::Duration> timeout = std::nullopt;
};

// What the decode side learnt since the last Poll.
struct KvPollResult {
  // Requests whose every layer arrived, in the order they completed.
  std::vector<uint64_t> finished;
  // Notifications that were not KvTransfer's (the caller's own messages).
  std::vector<Notification> other;
};

class FLOWKV_EXPORT KvTransfer {
 public:
  // `engine` is borrowed and must outlive the KvTransfer. `regions[i]` is
  // the engine region holding region i of `layout`. InvalidArgument when
  // the count differs from layout.num_regions() or a region is smaller than
  // the layout's region_bytes(); NotFound for an unknown region.
  static absl::StatusOr<std::unique_ptr<KvTransfer>> Create(
      TransferEngine* engine, const KvLayout& layout,
      std::vector<RegionId> regions);

  // Declares the pool of `peer`: its layout and, per layout region, the
  // peer's region id (as in PeerInfo::regions). Replaces an earlier one.
  // NotFound for an unknown peer; InvalidArgument as in Create.
  absl::Status AddPeerPool(PeerId peer, const KvLayout& layout,
                           std::vector<RegionId> peer_regions);

  // Writes the request's KV (or the layer range) into the peer's pool, then
  // notifies the peer. Errors come through the handle: the planner's
  // (InvalidArgument, OutOfRange), FailedPrecondition when no pool was
  // declared for the peer, and the engine's.
  TransferHandle Send(uint64_t request_id, PeerId peer,
                      const KvSendRequest& request);

  // Takes the engine's notifications (waiting up to `wait` for the first)
  // and returns the requests that are now complete. KvTransfer's own
  // notifications are consumed; every other one is returned in `other`.
  // Requires that the engine was created without on_notification.
  KvPollResult Poll(absl::Duration wait = absl::ZeroDuration());

  // Feeds one notification received by other means (an on_notification
  // callback). Returns true when it was a KvTransfer notification.
  bool HandleNotification(const Notification& notification);

  // Requests completed through HandleNotification since the last call.
  std::vector<uint64_t> TakeFinished();

  // The number of layers of `request_id` that have arrived so far (for
  // layer-wise loading on the decode side); 0 for an unknown request and
  // num_layers for a finished one until it is taken.
  uint32_t LayersArrived(uint64_t request_id) const;

  const KvLayout& layout() const;

  ~KvTransfer();
  KvTransfer(const KvTransfer&) = delete;
  KvTransfer& operator=(const KvTransfer&) = delete;

 private:
  class Impl;
  explicit KvTransfer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flowkv

#endif  // FLOWKV_KV_TRANSFER_H_
