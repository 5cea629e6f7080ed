// SPDX-License-Identifier: Apache-2.0
// Fuzzes the KV event wire format (include/flowkv/kv_events.h): the first
// byte picks DecodeKvEventBatch or DecodeKvCacheSnapshot, the rest is the
// message. Any input gives OK or InvalidArgument, never a crash; what
// decodes satisfies the documented rules (runs cover exactly the hashes,
// seqs consecutive up to latest_seq, snapshot blocks ascending, hashes
// unique) and encodes back to the same bytes.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_set.h"
#include "flowkv/kv_events.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flowkv;  // NOLINT
  if (size == 0) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1,
                               size - 1);
  if (data[0] % 2 == 0) {
    absl::StatusOr<KvEventBatch> batch = DecodeKvEventBatch(bytes);
    if (!batch.ok()) {
      FUZZ_CHECK(batch.status().code() == absl::StatusCode::kInvalidArgument,
                 batch.status().ToString());
      return 0;
    }
    FUZZ_CHECK(!batch->fell_behind || batch->events.empty());
    uint64_t prev = 0;
    for (const KvEvent& e : batch->events) {
      FUZZ_CHECK(e.seq >= 1 && e.seq <= batch->latest_seq);
      FUZZ_CHECK(prev == 0 || e.seq == prev + 1);
      prev = e.seq;
      uint64_t blocks = 0;
      for (const BlockRun& run : e.runs) {
        FUZZ_CHECK(run.count > 0 && run.end() <= UINT32_MAX);
        blocks += run.count;
      }
      FUZZ_CHECK(blocks == e.hashes.size());
      FUZZ_CHECK((e.kind == KvEvent::Kind::kAllCleared) == e.hashes.empty());
      FUZZ_CHECK(!e.has_parent || e.kind == KvEvent::Kind::kBlockStored);
    }
    FUZZ_CHECK(EncodeKvEventBatch(*batch) == bytes);
  } else {
    absl::StatusOr<KvCacheSnapshot> snap = DecodeKvCacheSnapshot(bytes);
    if (!snap.ok()) {
      FUZZ_CHECK(snap.status().code() == absl::StatusCode::kInvalidArgument,
                 snap.status().ToString());
      return 0;
    }
    absl::flat_hash_set<BlockHash> hashes;
    for (size_t i = 0; i < snap->blocks.size(); ++i) {
      const KvCachedBlock& b = snap->blocks[i];
      FUZZ_CHECK(b.block < UINT32_MAX);
      FUZZ_CHECK(i == 0 || b.block > snap->blocks[i - 1].block);
      FUZZ_CHECK(hashes.insert(b.hash).second);
    }
    FUZZ_CHECK(EncodeKvCacheSnapshot(*snap) == bytes);
  }
  return 0;
}
