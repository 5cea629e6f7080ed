// SPDX-License-Identifier: Apache-2.0
// Encoding and decoding of the control messages (see control.h).

#include "tools/cluster/control.h"

#include "absl/strings/str_cat.h"
#include "tools/cluster/wire.h"

namespace flowkv::cluster {
namespace {

bool KnownType(uint8_t t) { return (t >= 1 && t <= 9) || (t >= 32 && t <= 37); }

}  // namespace

const char* MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kHello:
      return "hello";
    case MessageType::kLoad:
      return "load";
    case MessageType::kBlocks:
      return "blocks";
    case MessageType::kPrefillDone:
      return "prefill_done";
    case MessageType::kKvSent:
      return "kv_sent";
    case MessageType::kFinished:
      return "finished";
    case MessageType::kFailed:
      return "failed";
    case MessageType::kRoleChanged:
      return "role_changed";
    case MessageType::kConnected:
      return "connected";
    case MessageType::kConnect:
      return "connect";
    case MessageType::kAssignDecode:
      return "assign_decode";
    case MessageType::kAssignPrefill:
      return "assign_prefill";
    case MessageType::kSetRole:
      return "set_role";
    case MessageType::kCancel:
      return "cancel";
    case MessageType::kShutdown:
      return "shutdown";
  }
  return "unknown";
}

std::string EncodeMessage(const ControlMessage& m) {
  ByteWriter w;
  w.U8(static_cast<uint8_t>(m.type));
  w.U32(m.node);
  w.U64(m.request);
  w.U32(m.attempt);
  w.U32(m.peer);
  w.U8(static_cast<uint8_t>(m.role));
  w.U8(m.ok ? 1 : 0);
  w.U32(m.prompt_len);
  w.U32(m.max_new);
  w.U64(m.bytes);
  w.F64(m.ms);
  w.Str(m.text);
  w.U32s(m.tokens);
  w.U32s(m.runs);
  w.F64(m.load.queued_prefill_tokens);
  w.F64(m.load.running_decode);
  w.F64(m.load.waiting_decode);
  w.F64(m.load.decode_context_tokens);
  w.F64(m.load.kv_blocks_used);
  w.F64(m.load.kv_blocks_total);
  w.F64(m.load.utilization);
  w.F64(m.prefill_ms_per_token);
  w.F64(m.decode_step_ms);
  return w.Take();
}

absl::StatusOr<ControlMessage> DecodeMessage(std::string_view payload) {
  ByteReader r(payload);
  ControlMessage m;
  const uint8_t type = r.U8();
  m.node = r.U32();
  m.request = r.U64();
  m.attempt = r.U32();
  m.peer = r.U32();
  const uint8_t role = r.U8();
  const uint8_t ok = r.U8();
  m.prompt_len = r.U32();
  m.max_new = r.U32();
  m.bytes = r.U64();
  m.ms = r.F64();
  m.text = r.Str();
  m.tokens = r.U32s();
  m.runs = r.U32s();
  m.load.queued_prefill_tokens = r.F64();
  m.load.running_decode = r.F64();
  m.load.waiting_decode = r.F64();
  m.load.decode_context_tokens = r.F64();
  m.load.kv_blocks_used = r.F64();
  m.load.kv_blocks_total = r.F64();
  m.load.utilization = r.F64();
  m.prefill_ms_per_token = r.F64();
  m.decode_step_ms = r.F64();
  if (absl::Status s = r.Finish(); !s.ok()) return s;
  if (!KnownType(type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown control message type ", type));
  }
  if (role > static_cast<uint8_t>(NodeRole::kHybrid)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown node role ", role));
  }
  if (ok > 1) {
    return absl::InvalidArgumentError(absl::StrCat("bad ok flag ", ok));
  }
  if (m.runs.size() % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("block runs need (first, count) pairs, got ",
                     m.runs.size(), " numbers"));
  }
  for (size_t i = 1; i < m.runs.size(); i += 2) {
    if (m.runs[i] == 0) {
      return absl::InvalidArgumentError("a block run of 0 blocks");
    }
  }
  m.type = static_cast<MessageType>(type);
  m.role = static_cast<NodeRole>(role);
  m.ok = ok == 1;
  return m;
}

std::vector<uint32_t> RunsOf(const BlockList& blocks) {
  std::vector<uint32_t> runs;
  for (const BlockRun& run : blocks.runs()) {
    runs.push_back(run.first);
    runs.push_back(run.count);
  }
  return runs;
}

BlockList BlocksOf(const std::vector<uint32_t>& runs) {
  BlockList list;
  for (size_t i = 0; i + 1 < runs.size(); i += 2) {
    list.Append(runs[i], runs[i + 1]);
  }
  return list;
}

std::string KvRequestId(uint64_t request, uint32_t attempt) {
  return absl::StrCat("r", request, ".", attempt);
}

}  // namespace flowkv::cluster
