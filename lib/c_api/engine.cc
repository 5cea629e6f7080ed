// SPDX-License-Identifier: Apache-2.0
// The C API of TransferEngine (flowkv_engine_* in include/flowkv/flowkv_c.h):
// options, memory, connections, transfers and notifications. Transfer
// handles are in handle.cc.
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lib/c_api/c_api_internal.h"
#include "lib/common/tsan_lock.h"

namespace flowkv::c_api {
namespace {

absl::StatusOr<TransferEngineOptions> EngineOptionsFromC(
    const char* fn, const flowkv_engine_options_t& c) {
  TransferEngineOptions options;
  if (absl::Status s = Buffer(fn, c.name, c.name_len, "options->name");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = Buffer(fn, c.cluster_token, c.cluster_token_len,
                              "options->cluster_token");
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          Buffer(fn, c.listen_ip, c.listen_ip_len, "options->listen_ip");
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          Buffer(fn, c.ucx_config, c.ucx_config_count, "options->ucx_config");
      !s.ok()) {
    return s;
  }
  if (c.name_len != 0) options.name = std::string(View(c.name, c.name_len));
  options.cluster_token =
      std::string(View(c.cluster_token, c.cluster_token_len));
  options.default_timeout = Micros(c.default_timeout_us);
  options.ucx_peer_error_handling = c.ucx_peer_error_handling;
  options.peer_failure_timeout = Micros(c.peer_failure_timeout_us);
  options.connect_timeout = Micros(c.connect_timeout_us);
  options.busy_poll = c.busy_poll;
  options.idle_spin = Micros(c.idle_spin_us);
  options.max_queued_notifications = c.max_queued_notifications;
  options.max_window_bytes = c.max_window_bytes;
  options.max_registered_bytes = c.max_registered_bytes;
  for (size_t i = 0; i < c.ucx_config_count; ++i) {
    const flowkv_config_entry_t& entry = c.ucx_config[i];
    const std::string name = absl::StrCat("options->ucx_config[", i, "]");
    if (absl::Status s =
            Buffer(fn, entry.name, entry.name_len, (name + ".name").c_str());
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            Buffer(fn, entry.value, entry.value_len, (name + ".value").c_str());
        !s.ok()) {
      return s;
    }
    options.ucx_config.emplace_back(View(entry.name, entry.name_len),
                                    View(entry.value, entry.value_len));
  }
  options.log = LogHook(c.log, c.log_user_data);
  return options;
}

// "ip:port", or "[ip]:port" for an IPv6 address given without brackets.
std::string ListenAddress(std::string_view ip, uint16_t port) {
  if (ip.find(':') != std::string_view::npos && ip.front() != '[') {
    return absl::StrCat("[", std::string(ip), "]:", port);
  }
  return absl::StrCat(std::string(ip), ":", port);
}

absl::Status Listen(flowkv_engine_t* engine, const std::string& address) {
  absl::StatusOr<std::string> bound = engine->engine->Listen(address);
  if (!bound.ok()) return bound.status();
  internal::TsanMutexLock lock(&engine->listen_mu);
  engine->listen_address = *std::move(bound);
  return absl::OkStatus();
}

absl::StatusOr<TransferOptions> TransferOptionsFromC(
    const char* fn, const flowkv_transfer_options_t* c) {
  TransferOptions options;
  if (c == nullptr) return options;
  if (absl::Status s = Buffer(fn, c->notification, c->notification_len,
                              "options->notification");
      !s.ok()) {
    return s;
  }
  if (c->notification != nullptr) {
    options.notification =
        std::string(View(c->notification, c->notification_len));
  }
  if (c->timeout_us != 0) options.timeout = Micros(c->timeout_us);
  options.acknowledged = c->acknowledged;
  return options;
}

enum class Direction { kWrite, kRead };

absl::Status StartTransfer(const char* fn, Direction direction,
                           flowkv_engine_t* engine, uint64_t peer,
                           const flowkv_transfer_op_t* ops, size_t num_ops,
                           const flowkv_transfer_options_t* c_options,
                           flowkv_handle_t** handle) {
  if (absl::Status s = NotNull(fn, engine, "engine"); !s.ok()) return s;
  if (absl::Status s = NotNull(fn, handle, "handle"); !s.ok()) return s;
  if (absl::Status s = Buffer(fn, ops, num_ops, "ops"); !s.ok()) return s;
  absl::StatusOr<TransferOptions> options = TransferOptionsFromC(fn, c_options);
  if (!options.ok()) return options.status();
  auto wrapper = std::make_unique<flowkv_handle>();
  std::vector<TransferOp> cpp_ops(num_ops);
  for (size_t i = 0; i < num_ops; ++i) {
    cpp_ops[i] = {.src_region = ops[i].src_region,
                  .src_offset = ops[i].src_offset,
                  .dst_region = ops[i].dst_region,
                  .dst_offset = ops[i].dst_offset,
                  .length = ops[i].length};
  }
  wrapper->handle =
      direction == Direction::kWrite
          ? engine->engine->Write(peer, cpp_ops, *std::move(options))
          : engine->engine->Read(peer, cpp_ops, *std::move(options));
  return Accept(std::move(wrapper), handle);
}

// Packs the leftover notifications into the caller's arrays.
absl::Status PackNotifications(const char* fn, flowkv_engine_t* engine,
                               flowkv_notification_t* out, size_t capacity,
                               void* buffer, size_t buffer_capacity,
                               size_t* count)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine->take_mu) {
  std::deque<Notification>& queue = engine->leftover;
  if (!queue.empty() && capacity > 0 &&
      queue.front().bytes.size() > buffer_capacity) {
    return absl::ResourceExhaustedError(absl::StrCat(
        fn, ": the next notification holds ", queue.front().bytes.size(),
        " bytes, the buffer ", buffer_capacity));
  }
  size_t taken = 0;
  size_t used = 0;
  uint8_t* bytes = static_cast<uint8_t*>(buffer);
  while (!queue.empty() && taken < capacity &&
         queue.front().bytes.size() <= buffer_capacity - used) {
    Notification& n = queue.front();
    uint8_t* at = bytes == nullptr ? nullptr : bytes + used;
    if (!n.bytes.empty()) std::memcpy(at, n.bytes.data(), n.bytes.size());
    out[taken] = {.peer = n.peer,
                  .kind = static_cast<flowkv_notification_kind_t>(n.kind),
                  .bytes = at,
                  .bytes_len = n.bytes.size()};
    used += n.bytes.size();
    ++taken;
    queue.pop_front();
  }
  *count = taken;
  return absl::OkStatus();
}

}  // namespace
}  // namespace flowkv::c_api

using flowkv::c_api::Buffer;
using flowkv::c_api::CopyOut;
using flowkv::c_api::Guard;
using flowkv::c_api::GuardVoid;
using flowkv::c_api::NotNull;
using flowkv::c_api::View;

extern "C" {

void flowkv_engine_options_init(flowkv_engine_options_t* options) {
  if (options == nullptr) return;
  const flowkv::TransferEngineOptions defaults;
  *options = {};
  options->default_timeout_us =
      absl::ToInt64Microseconds(defaults.default_timeout);
  options->ucx_peer_error_handling = defaults.ucx_peer_error_handling;
  options->peer_failure_timeout_us =
      absl::ToInt64Microseconds(defaults.peer_failure_timeout);
  options->connect_timeout_us =
      absl::ToInt64Microseconds(defaults.connect_timeout);
  options->busy_poll = defaults.busy_poll;
  options->idle_spin_us = absl::ToInt64Microseconds(defaults.idle_spin);
  options->max_queued_notifications = defaults.max_queued_notifications;
  options->max_window_bytes = defaults.max_window_bytes;
  options->max_registered_bytes = defaults.max_registered_bytes;
}

flowkv_status_t flowkv_engine_create(const flowkv_engine_options_t* options,
                                     flowkv_engine_t** engine) {
  static constexpr char kFn[] = "flowkv_engine_create";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, options, "options"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, engine, "engine"); !s.ok()) return s;
    auto cpp_options = flowkv::c_api::EngineOptionsFromC(kFn, *options);
    if (!cpp_options.ok()) return cpp_options.status();
    auto created = flowkv::TransferEngine::Create(*cpp_options);
    if (!created.ok()) return created.status();
    auto wrapped = std::make_unique<flowkv_engine>();
    wrapped->engine = *std::move(created);
    if (options->listen_ip_len != 0) {
      const std::string address = flowkv::c_api::ListenAddress(
          View(options->listen_ip, options->listen_ip_len),
          options->listen_port);
      if (absl::Status s = flowkv::c_api::Listen(wrapped.get(), address);
          !s.ok()) {
        return s;
      }
    }
    *engine = wrapped.release();
    return absl::OkStatus();
  });
}

void flowkv_engine_destroy(flowkv_engine_t* engine) {
  GuardVoid([&] { delete engine; });
}

flowkv_status_t flowkv_engine_register_memory(flowkv_engine_t* engine,
                                              void* base, uint64_t length,
                                              flowkv_memory_kind_t kind,
                                              uint32_t* region_id) {
  static constexpr char kFn[] = "flowkv_engine_register_memory";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, engine, "engine"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, region_id, "region_id"); !s.ok()) {
      return s;
    }
    const int64_t kind_value = flowkv::c_api::EnumValue(kind);
    if (kind_value != FLOWKV_MEMORY_HOST &&
        kind_value != FLOWKV_MEMORY_CUDA_DEVICE) {
      return absl::InvalidArgumentError(
          absl::StrCat(kFn, ": kind ", kind_value, " is unknown"));
    }
    auto region = engine->engine->RegisterMemory(
        base, length, static_cast<flowkv::MemoryKind>(kind_value));
    if (!region.ok()) return region.status();
    *region_id = *region;
    return absl::OkStatus();
  });
}

flowkv_status_t flowkv_engine_allocate_memory(flowkv_engine_t* engine,
                                              uint64_t length,
                                              flowkv_memory_kind_t kind,
                                              uint32_t* region_id,
                                              void** data) {
  static constexpr char kFn[] = "flowkv_engine_allocate_memory";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, engine, "engine"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, region_id, "region_id"); !s.ok()) {
      return s;
    }
    if (absl::Status s = NotNull(kFn, data, "data"); !s.ok()) return s;
    const int64_t kind_value = flowkv::c_api::EnumValue(kind);
    if (kind_value != FLOWKV_MEMORY_HOST &&
        kind_value != FLOWKV_MEMORY_CUDA_DEVICE) {
      return absl::InvalidArgumentError(
          absl::StrCat(kFn, ": kind ", kind_value, " is unknown"));
    }
    auto region = engine->engine->AllocateMemory(
        length, static_cast<flowkv::MemoryKind>(kind_value));
    if (!region.ok()) return region.status();
    *region_id = region->id;
    *data = region->data;
    return absl::OkStatus();
  });
}

flowkv_status_t flowkv_engine_deregister_memory(flowkv_engine_t* engine,
                                                uint32_t region_id) {
  static constexpr char kFn[] = "flowkv_engine_deregister_memory";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, engine, "engine"); !s.ok()) return s;
    return engine->engine->DeregisterMemory(region_id);
  });
}

flowkv_status_t flowkv_engine_listen(flowkv_engine_t* engine,
                                     const char* address, size_t address_len) {
  static constexpr char kFn[] = "flowkv_engine_listen";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, engine, "engine"); !s.ok()) return s;
    if (absl::Status s = Buffer(kFn, address, address_len, "address");
        !s.ok()) {
      return s;
    }
    return flowkv::c_api::Listen(engine,
                                 std::string(View(address, address_len)));
  });
}

flowkv_status_t flowkv_engine_listen_address(const flowkv_engine_t* engine,
                                             char* address, size_t capacity,
                                             size_t* length) {
  static constexpr char kFn[] = "flowkv_engine_listen_address";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = flowkv::c_api::SourceAndOutBuffer(
            kFn, engine, "engine", address, capacity, length, "address");
        !s.ok()) {
      return s;
    }
    flowkv::internal::TsanMutexLock lock(&engine->listen_mu);
    if (engine->listen_address.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat(kFn, ": the engine does not listen"));
    }
    return CopyOut(kFn, engine->listen_address, address, capacity, length,
                   /*terminate=*/true);
  });
}

flowkv_status_t flowkv_engine_local_metadata(const flowkv_engine_t* engine,
                                             void* metadata, size_t capacity,
                                             size_t* length) {
  static constexpr char kFn[] = "flowkv_engine_local_metadata";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = flowkv::c_api::SourceAndOutBuffer(
            kFn, engine, "engine", metadata, capacity, length, "metadata");
        !s.ok()) {
      return s;
    }
    auto blob = engine->engine->LocalMetadata();
    if (!blob.ok()) return blob.status();
    return CopyOut(kFn, *blob, metadata, capacity, length,
                   /*terminate=*/false);
  });
}

flowkv_status_t flowkv_engine_connect(flowkv_engine_t* engine,
                                      const char* address, size_t address_len,
                                      uint64_t* peer) {
  static constexpr char kFn[] = "flowkv_engine_connect";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, engine, "engine"); !s.ok()) return s;
    if (absl::Status s = Buffer(kFn, address, address_len, "address");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = NotNull(kFn, peer, "peer"); !s.ok()) return s;
    auto connected =
        engine->engine->Connect(std::string(View(address, address_len)));
    if (!connected.ok()) return connected.status();
    *peer = *connected;
    return absl::OkStatus();
  });
}

flowkv_status_t flowkv_engine_add_peer(flowkv_engine_t* engine,
                                       const void* metadata,
                                       size_t metadata_len, uint64_t* peer) {
  static constexpr char kFn[] = "flowkv_engine_add_peer";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, engine, "engine"); !s.ok()) return s;
    if (absl::Status s = Buffer(kFn, metadata, metadata_len, "metadata");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = NotNull(kFn, peer, "peer"); !s.ok()) return s;
    auto added = engine->engine->AddPeer(absl::MakeConstSpan(
        static_cast<const uint8_t*>(metadata), metadata_len));
    if (!added.ok()) return added.status();
    *peer = *added;
    return absl::OkStatus();
  });
}

flowkv_status_t flowkv_engine_disconnect(flowkv_engine_t* engine,
                                         uint64_t peer) {
  static constexpr char kFn[] = "flowkv_engine_disconnect";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, engine, "engine"); !s.ok()) return s;
    return engine->engine->Disconnect(peer);
  });
}

flowkv_status_t flowkv_engine_peer_connected(const flowkv_engine_t* engine,
                                             uint64_t peer, bool* connected) {
  static constexpr char kFn[] = "flowkv_engine_peer_connected";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, engine, "engine"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, connected, "connected"); !s.ok()) {
      return s;
    }
    auto info = engine->engine->GetPeer(peer);
    if (!info.ok()) return info.status();
    *connected = info->connected;
    return absl::OkStatus();
  });
}

flowkv_status_t flowkv_engine_write(flowkv_engine_t* engine, uint64_t peer,
                                    const flowkv_transfer_op_t* ops,
                                    size_t num_ops,
                                    const flowkv_transfer_options_t* options,
                                    flowkv_handle_t** handle) {
  static constexpr char kFn[] = "flowkv_engine_write";
  return Guard(kFn, [&]() -> absl::Status {
    return flowkv::c_api::StartTransfer(kFn, flowkv::c_api::Direction::kWrite,
                                        engine, peer, ops, num_ops, options,
                                        handle);
  });
}

flowkv_status_t flowkv_engine_read(flowkv_engine_t* engine, uint64_t peer,
                                   const flowkv_transfer_op_t* ops,
                                   size_t num_ops,
                                   const flowkv_transfer_options_t* options,
                                   flowkv_handle_t** handle) {
  static constexpr char kFn[] = "flowkv_engine_read";
  return Guard(kFn, [&]() -> absl::Status {
    return flowkv::c_api::StartTransfer(kFn, flowkv::c_api::Direction::kRead,
                                        engine, peer, ops, num_ops, options,
                                        handle);
  });
}

flowkv_status_t flowkv_engine_send(flowkv_engine_t* engine, uint64_t peer,
                                   const void* bytes, size_t len,
                                   const flowkv_transfer_options_t* options,
                                   flowkv_handle_t** handle) {
  static constexpr char kFn[] = "flowkv_engine_send";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, engine, "engine"); !s.ok()) return s;
    if (absl::Status s = NotNull(kFn, handle, "handle"); !s.ok()) return s;
    if (absl::Status s = Buffer(kFn, bytes, len, "bytes"); !s.ok()) return s;
    auto cpp_options = flowkv::c_api::TransferOptionsFromC(kFn, options);
    if (!cpp_options.ok()) return cpp_options.status();
    auto wrapper = std::make_unique<flowkv_handle>();
    std::string message(View(bytes, len));
    wrapper->handle =
        engine->engine->Send(peer, std::move(message), *std::move(cpp_options));
    return flowkv::c_api::Accept(std::move(wrapper), handle);
  });
}

flowkv_status_t flowkv_engine_take_notifications(
    flowkv_engine_t* engine, int64_t wait_us, flowkv_notification_t* out,
    size_t capacity, void* buffer, size_t buffer_capacity, size_t* count) {
  static constexpr char kFn[] = "flowkv_engine_take_notifications";
  return Guard(kFn, [&]() -> absl::Status {
    if (absl::Status s = NotNull(kFn, engine, "engine"); !s.ok()) return s;
    if (absl::Status s = Buffer(kFn, out, capacity, "out"); !s.ok()) return s;
    if (absl::Status s = Buffer(kFn, buffer, buffer_capacity, "buffer");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = NotNull(kFn, count, "count"); !s.ok()) return s;
    if (wait_us < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(kFn, ": wait_us ", wait_us, " is negative"));
    }
    flowkv::internal::TsanMutexLock lock(&engine->take_mu);
    // Only a caller with nothing left over waits.
    std::vector<flowkv::Notification> taken = engine->engine->TakeNotifications(
        engine->leftover.empty() ? flowkv::c_api::Micros(wait_us)
                                 : absl::ZeroDuration());
    for (flowkv::Notification& n : taken) {
      engine->leftover.push_back(std::move(n));
    }
    return flowkv::c_api::PackNotifications(kFn, engine, out, capacity, buffer,
                                            buffer_capacity, count);
  });
}

flowkv_status_t flowkv_engine_stats(const flowkv_engine_t* engine,
                                    flowkv_engine_stats_t* stats) {
  return flowkv::c_api::Getter(
      "flowkv_engine_stats", engine, "engine", stats, "stats",
      [](const flowkv_engine& e) {
        const flowkv::TransferEngineStats cpp = e.engine->Stats();
        return flowkv_engine_stats_t{.peers_tracked = cpp.peers_tracked,
                                     .peers_connected = cpp.peers_connected,
                                     .peers_listed = cpp.peers_listed,
                                     .transfers_active = cpp.transfers_active,
                                     .messages_dropped = cpp.messages_dropped,
                                     .registered_bytes = cpp.registered_bytes};
      });
}

}  // extern "C"
