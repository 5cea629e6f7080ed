// SPDX-License-Identifier: Apache-2.0
// The C API of KvTransfer (flowkv_kv_* in include/flowkv/flowkv_c.h): pools,
// sends and fetches, expectations, and the poll results object with its
// accessors.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lib/c_api/c_api_internal.h"

namespace flowkv::c_api {
namespace {

absl::Status RequestId(const char* fn, const char* id, size_t len) {
  return Buffer(fn, id, len, "request_id");
}

absl::StatusOr<KvPiece> RequestFromC(const char* fn,
                                     const flowkv_kv_request_t& c) {
  KvPiece request;
  absl::StatusOr<BlockList> src =
      BlocksFromC(fn, c.src_blocks, "request->src_blocks");
  if (!src.ok()) return src.status();
  absl::StatusOr<BlockList> dst =
      BlocksFromC(fn, c.dst_blocks, "request->dst_blocks");
  if (!dst.ok()) return dst.status();
  if (absl::Status s = Buffer(fn, c.payload, c.payload_len, "request->payload");
      !s.ok()) {
    return s;
  }
  request.src_blocks = *std::move(src);
  request.dst_blocks = *std::move(dst);
  request.token_begin = c.token_begin;
  request.num_tokens = c.num_tokens;
  request.layer_begin = c.layer_begin;
  request.layer_end = c.layer_end;
  request.src_head_begin = c.src_head_begin;
  request.dst_head_begin = c.dst_head_begin;
  request.num_heads = c.num_heads;
  request.sender_rank = c.sender_rank;
  request.num_senders = c.num_senders;
  request.final_chunk = c.final_chunk;
  request.payload = std::string(View(c.payload, c.payload_len));
  if (c.timeout_us != 0) request.timeout = Micros(c.timeout_us);
  return request;
}

enum class Direction { kSend, kFetch };

absl::Status SendOrFetch(const char* fn, Direction direction,
                         flowkv_kv_transfer_t* kv, const char* request_id,
                         size_t request_id_len, uint64_t peer,
                         const flowkv_kv_request_t* c_request,
                         flowkv_handle_t** handle) {
  if (absl::Status s = NotNull(fn, kv, "kv"); !s.ok()) return s;
  if (absl::Status s = RequestId(fn, request_id, request_id_len); !s.ok()) {
    return s;
  }
  if (absl::Status s = NotNull(fn, c_request, "request"); !s.ok()) return s;
  if (absl::Status s = NotNull(fn, handle, "handle"); !s.ok()) return s;
  absl::StatusOr<KvPiece> request = RequestFromC(fn, *c_request);
  if (!request.ok()) return request.status();
  const std::string_view id = View(request_id, request_id_len);
  auto wrapper = std::make_unique<flowkv_handle>();
  wrapper->handle = direction == Direction::kSend
                        ? kv->kv->Send(id, peer, *request)
                        : kv->kv->Fetch(id, peer, *request);
  return Accept(std::move(wrapper), handle);
}

// Checks the arguments of an entry accessor: `results` and `entry` set,
// `index` below the count of that kind of entry.
template <typename Entries>
absl::Status EntryArgs(const char* fn, const flowkv_kv_results_t* results,
                       Entries KvPollResult::*entries, size_t index,
                       const void* entry) {
  if (absl::Status s = NotNull(fn, results, "results"); !s.ok()) return s;
  if (absl::Status s = NotNull(fn, entry, "entry"); !s.ok()) return s;
  const size_t count = (results->result.*entries).size();
  if (index < count) return absl::OkStatus();
  return absl::OutOfRangeError(
      absl::StrCat(fn, ": index ", index, " is not below the count ", count));
}

// An entry accessor: checks its arguments (EntryArgs), then stores
// convert(the entry at `index`) in *entry.
template <typename Entries, typename Entry, typename Convert>
flowkv_status_t ResultEntry(const char* fn, const flowkv_kv_results_t* results,
                            Entries KvPollResult::*entries, size_t index,
                            Entry* entry, Convert convert) noexcept {
  return Guard(fn, [&]() -> absl::Status {
    if (absl::Status s = EntryArgs(fn, results, entries, index, entry);
        !s.ok()) {
      return s;
    }
    *entry = convert((results->result.*entries)[index]);
    return absl::OkStatus();
  });
}

}  // namespace
}  // namespace flowkv::c_api

using flowkv::c_api::Guard;
using flowkv::c_api::GuardVoid;
using flowkv::c_api::NotNull;
using flowkv::c_api::View;

extern "C" {

void flowkv_kv_request_init(flowkv_kv_request_t* request) {
  if (request == nullptr) return;
  *request = {};
  request->num_senders = 1;
  request->final_chunk = true;
}

void flowkv_kv_options_init(flowkv_kv_options_t* options) {
  if (options == nullptr) return;
  const flowkv::KvTransferOptions defaults;
  *options = {};
  options->incomplete_request_timeout_us =
      absl::ToInt64Microseconds(defaults.incomplete_request_timeout);
  options->max_tombstones = defaults.max_tombstones;
}

flowkv_status_t flowkv_kv_create(flowkv_engine_t* engine,
                                 const flowkv_layout_t* layout,
                                 const uint32_t* regions, size_t num_regions,
                                 const flowkv_kv_options_t* options,
                                 flowkv_kv_transfer_t** kv) {
  static constexpr char kFn[] = "flowkv_kv_create";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, engine, "engine"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, layout, "layout"); !s.ok()) return s;
    if (absl::Status s =
            flowkv::c_api::Buffer(kFn, regions, num_regions, "regions");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = NotNull(kFn, kv, "kv"); !s.ok()) return s;
    flowkv::KvTransferOptions cpp_options;
    if (options != nullptr) {
      cpp_options.incomplete_request_timeout =
          flowkv::c_api::Micros(options->incomplete_request_timeout_us);
      cpp_options.max_tombstones = options->max_tombstones;
      cpp_options.log =
          flowkv::c_api::LogHook(options->log, options->log_user_data);
    }
    auto created = flowkv::KvTransfer::Create(
        engine->engine.get(), layout->layout,
        std::vector<flowkv::RegionId>(regions, regions + num_regions),
        std::move(cpp_options));
    if (!created.ok()) return created.status();
    *kv = new flowkv_kv_transfer{*std::move(created)};
    return absl::OkStatus();
  });
}

void flowkv_kv_destroy(flowkv_kv_transfer_t* kv) {
  GuardVoid([&] { delete kv; });
}

flowkv_status_t flowkv_kv_add_peer_pool(flowkv_kv_transfer_t* kv, uint64_t peer,
                                        const flowkv_layout_t* layout,
                                        const uint32_t* peer_regions,
                                        size_t num_regions) {
  static constexpr char kFn[] = "flowkv_kv_add_peer_pool";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, kv, "kv"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, layout, "layout"); !s.ok()) return s;
    if (absl::Status s = flowkv::c_api::Buffer(kFn, peer_regions, num_regions,
                                               "peer_regions");
        !s.ok()) {
      return s;
    }
    return kv->kv->AddPeerPool(peer, layout->layout,
                               std::vector<flowkv::RegionId>(
                                   peer_regions, peer_regions + num_regions));
  });
}

flowkv_status_t flowkv_kv_announce_pool(flowkv_kv_transfer_t* kv,
                                        uint64_t peer) {
  static constexpr char kFn[] = "flowkv_kv_announce_pool";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, kv, "kv"); !s.ok()) return s;
    return kv->kv->AnnouncePool(peer);
  });
}

flowkv_status_t flowkv_kv_wait_for_peer_pool(flowkv_kv_transfer_t* kv,
                                             uint64_t peer,
                                             int64_t timeout_us) {
  static constexpr char kFn[] = "flowkv_kv_wait_for_peer_pool";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, kv, "kv"); !s.ok()) return s;
    if (timeout_us < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(kFn, ": timeout_us ", timeout_us, " is negative"));
    }
    return kv->kv->WaitForPeerPool(peer, flowkv::c_api::Micros(timeout_us));
  });
}

flowkv_status_t flowkv_kv_send(flowkv_kv_transfer_t* kv, const char* request_id,
                               size_t request_id_len, uint64_t peer,
                               const flowkv_kv_request_t* request,
                               flowkv_handle_t** handle) {
  static constexpr char kFn[] = "flowkv_kv_send";
  return Guard(kFn, [&]() -> absl::Status {
    return flowkv::c_api::SendOrFetch(kFn, flowkv::c_api::Direction::kSend, kv,
                                      request_id, request_id_len, peer, request,
                                      handle);
  });
}

flowkv_status_t flowkv_kv_fetch(flowkv_kv_transfer_t* kv,
                                const char* request_id, size_t request_id_len,
                                uint64_t peer,
                                const flowkv_kv_request_t* request,
                                flowkv_handle_t** handle) {
  static constexpr char kFn[] = "flowkv_kv_fetch";
  return Guard(kFn, [&]() -> absl::Status {
    return flowkv::c_api::SendOrFetch(kFn, flowkv::c_api::Direction::kFetch, kv,
                                      request_id, request_id_len, peer, request,
                                      handle);
  });
}

flowkv_status_t flowkv_kv_expect(flowkv_kv_transfer_t* kv,
                                 const char* request_id, size_t request_id_len,
                                 int64_t timeout_us) {
  static constexpr char kFn[] = "flowkv_kv_expect";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, kv, "kv"); !s.ok()) return s;
    if (absl::Status s =
            flowkv::c_api::RequestId(kFn, request_id, request_id_len);
        !s.ok()) {
      return s;
    }
    if (timeout_us <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(kFn, ": timeout_us ", timeout_us, " is not positive"));
    }
    return kv->kv->Expect(View(request_id, request_id_len),
                          absl::Now() + flowkv::c_api::Micros(timeout_us));
  });
}

flowkv_status_t flowkv_kv_forget(flowkv_kv_transfer_t* kv,
                                 const char* request_id,
                                 size_t request_id_len) {
  static constexpr char kFn[] = "flowkv_kv_forget";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, kv, "kv"); !s.ok()) return s;
    if (absl::Status s =
            flowkv::c_api::RequestId(kFn, request_id, request_id_len);
        !s.ok()) {
      return s;
    }
    kv->kv->Forget(View(request_id, request_id_len));
    return absl::OkStatus();
  });
}

flowkv_status_t flowkv_kv_layers_arrived(const flowkv_kv_transfer_t* kv,
                                         const char* request_id,
                                         size_t request_id_len,
                                         uint32_t* layers) {
  static constexpr char kFn[] = "flowkv_kv_layers_arrived";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, kv, "kv"); !s.ok()) return s;
    if (absl::Status s =
            flowkv::c_api::RequestId(kFn, request_id, request_id_len);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = NotNull(kFn, layers, "layers"); !s.ok()) return s;
    *layers = kv->kv->LayersArrived(View(request_id, request_id_len));
    return absl::OkStatus();
  });
}

flowkv_status_t flowkv_kv_poll(flowkv_kv_transfer_t* kv, int64_t wait_us,
                               flowkv_kv_results_t** results) {
  static constexpr char kFn[] = "flowkv_kv_poll";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, kv, "kv"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, results, "results"); !s.ok()) return s;
    if (wait_us < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(kFn, ": wait_us ", wait_us, " is negative"));
    }
    // Allocated first: a failure after Poll would lose its results.
    auto out = std::make_unique<flowkv_kv_results>();
    out->result = kv->kv->Poll(flowkv::c_api::Micros(wait_us));
    *results = out.release();
    return absl::OkStatus();
  });
}

flowkv_status_t flowkv_kv_stats(const flowkv_kv_transfer_t* kv,
                                flowkv_kv_stats_t* stats) {
  return flowkv::c_api::Getter(
      "flowkv_kv_stats", kv, "kv", stats, "stats",
      [](const flowkv_kv_transfer& t) {
        const flowkv::KvTransferStats cpp = t.kv->Stats();
        return flowkv_kv_stats_t{.requests_active = cpp.requests_active,
                                 .results_pending = cpp.results_pending,
                                 .tombstones = cpp.tombstones,
                                 .malformed_notices = cpp.malformed_notices,
                                 .late_notices = cpp.late_notices,
                                 .pools_refused = cpp.pools_refused};
      });
}

// ---- Poll results ---------------------------------------------------------

size_t flowkv_kv_results_num_finished(const flowkv_kv_results_t* results) {
  return results == nullptr ? 0 : results->result.finished.size();
}

size_t flowkv_kv_results_num_failed(const flowkv_kv_results_t* results) {
  return results == nullptr ? 0 : results->result.failed.size();
}

size_t flowkv_kv_results_num_released(const flowkv_kv_results_t* results) {
  return results == nullptr ? 0 : results->result.released.size();
}

size_t flowkv_kv_results_num_other(const flowkv_kv_results_t* results) {
  return results == nullptr ? 0 : results->result.other.size();
}

flowkv_status_t flowkv_kv_results_finished(const flowkv_kv_results_t* results,
                                           size_t index,
                                           flowkv_kv_finished_t* entry) {
  return flowkv::c_api::ResultEntry(
      "flowkv_kv_results_finished", results, &flowkv::KvPollResult::finished,
      index, entry, [](const flowkv::KvFinished& f) {
        return flowkv_kv_finished_t{
            .request_id = f.request_id.data(),
            .request_id_len = f.request_id.size(),
            .payload = reinterpret_cast<const uint8_t*>(f.payload.data()),
            .payload_len = f.payload.size()};
      });
}

flowkv_status_t flowkv_kv_results_failed(const flowkv_kv_results_t* results,
                                         size_t index,
                                         flowkv_kv_failed_t* entry) {
  return flowkv::c_api::ResultEntry(
      "flowkv_kv_results_failed", results, &flowkv::KvPollResult::failed, index,
      entry, [](const flowkv::KvFailed& f) {
        const absl::string_view message = f.status.message();
        return flowkv_kv_failed_t{
            .request_id = f.request_id.data(),
            .request_id_len = f.request_id.size(),
            .status = static_cast<flowkv_status_t>(f.status.code()),
            .message = message.data(),
            .message_len = message.size()};
      });
}

flowkv_status_t flowkv_kv_results_released(const flowkv_kv_results_t* results,
                                           size_t index,
                                           flowkv_kv_released_t* entry) {
  return flowkv::c_api::ResultEntry(
      "flowkv_kv_results_released", results, &flowkv::KvPollResult::released,
      index, entry, [](const flowkv::KvReleased& r) {
        const absl::string_view message = r.status.message();
        return flowkv_kv_released_t{
            .request_id = r.request_id.data(),
            .request_id_len = r.request_id.size(),
            .peer = r.peer,
            .status = static_cast<flowkv_status_t>(r.status.code()),
            .message = message.data(),
            .message_len = message.size()};
      });
}

flowkv_status_t flowkv_kv_results_other(const flowkv_kv_results_t* results,
                                        size_t index,
                                        flowkv_notification_t* entry) {
  return flowkv::c_api::ResultEntry(
      "flowkv_kv_results_other", results, &flowkv::KvPollResult::other, index,
      entry, [](const flowkv::Notification& n) {
        return flowkv_notification_t{
            .peer = n.peer,
            .kind = static_cast<flowkv_notification_kind_t>(n.kind),
            .bytes = reinterpret_cast<const uint8_t*>(n.bytes.data()),
            .bytes_len = n.bytes.size()};
      });
}

void flowkv_kv_results_free(flowkv_kv_results_t* results) {
  GuardVoid([&] { delete results; });
}

}  // extern "C"
