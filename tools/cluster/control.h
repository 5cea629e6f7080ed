// SPDX-License-Identifier: Apache-2.0
// The control messages of flowkv-cluster: what the router and the node
// processes tell each other over their loopback TCP channel (framed and
// encoded by wire.h). One struct, ControlMessage, carries every type; each
// type uses the fields its comment names and leaves the others at their
// defaults. Every message encodes every field, in declaration order, so the
// codec is one function each way and a decoder checks the whole layout.
//
// A request's attempt (a retry after a node died is a new attempt) is named
// on the wire by (request, attempt); KvTransfer request ids are
// KvRequestId(request, attempt).
//
// Node -> router                     Router -> node
//   kHello     address, role           kAssignDecode   request, attempt, peer
//   kLoad      load, role, speeds                       (P node), prompt_len,
//   kBlocks    request, attempt, ok,                    max_new
//              runs (first,count)*     kAssignPrefill  request, attempt, peer
//   kPrefillDone request, attempt,                      (D node), address (D's
//              tokens {first}, ms                       engine; "" colocated),
//   kKvSent    request, attempt, ok,                    tokens (prompt),
//              bytes, ms                                max_new, runs (D's)
//   kFinished  request, attempt,       kSetRole        role
//              tokens (all generated)  kCancel         request, attempt
//   kFailed    request, attempt, text  kShutdown
//   kRoleChanged role                  kConnect        peer, address (its
//   kConnected peer, ok, text                           engine): connect and
//                                                      exchange pools now
//
// Thread safety: plain values and pure functions.

#ifndef FLOWKV_TOOLS_CLUSTER_CONTROL_H_
#define FLOWKV_TOOLS_CLUSTER_CONTROL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "flowkv/block_list.h"
#include "flowkv/scheduler.h"

namespace flowkv::cluster {

enum class MessageType : uint8_t {
  kHello = 1,
  kLoad = 2,
  kBlocks = 3,
  kPrefillDone = 4,
  kKvSent = 5,
  kFinished = 6,
  kFailed = 7,
  kRoleChanged = 8,
  kConnected = 9,
  kAssignDecode = 32,
  kAssignPrefill = 33,
  kSetRole = 34,
  kCancel = 35,
  kShutdown = 36,
  kConnect = 37,
};

const char* MessageTypeName(MessageType type);

struct ControlMessage {
  MessageType type = MessageType::kShutdown;
  // The sending node (node -> router); the node addressed (router -> node).
  uint32_t node = 0;
  uint64_t request = 0;
  uint32_t attempt = 0;
  // The other node of a placement.
  uint32_t peer = 0;
  NodeRole role = NodeRole::kHybrid;
  bool ok = true;
  uint32_t prompt_len = 0;
  uint32_t max_new = 0;
  uint64_t bytes = 0;
  // kPrefillDone: prefill compute ms; kKvSent: first send to last ack, ms.
  double ms = 0;
  // An engine address, or a failure's reason.
  std::string text;
  std::vector<uint32_t> tokens;
  // Block runs as (first, count) pairs.
  std::vector<uint32_t> runs;
  // kLoad: the node's load, and its measured speeds (0 until measured).
  NodeLoad load;
  double prefill_ms_per_token = 0;
  double decode_step_ms = 0;
};

std::string EncodeMessage(const ControlMessage& message);
// InvalidArgument for a truncated or over-long payload, an unknown type or
// role, an odd runs length.
absl::StatusOr<ControlMessage> DecodeMessage(std::string_view payload);

std::vector<uint32_t> RunsOf(const BlockList& blocks);
BlockList BlocksOf(const std::vector<uint32_t>& runs);

std::string KvRequestId(uint64_t request, uint32_t attempt);

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_CONTROL_H_
