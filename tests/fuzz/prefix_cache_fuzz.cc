// SPDX-License-Identifier: Apache-2.0
// Fuzzes BlockAllocator with the prefix cache (include/flowkv/
// block_allocator.h) with operation sequences read from the input on a pool
// of 1..200 blocks: Lookup of prompts drawn from a small alphabet (so they
// share prefixes) and of raw hashes, Allocate (after a looked-up prefix),
// Extend, CacheBlocks, Free with all, some, wrong or too many hashes,
// Share, lists the allocator never handed out, ClearCache, ReadEvents.
//
// Every call is checked against tests/support/prefix_cache_reference.h: the
// error code, the blocks Lookup returns, that new blocks were free (after
// the model's evictions), and after every call the free, cached and indexed
// counts, the statistics and the events (each one, in order, no gap); after
// every 8th call and the last, every block's RefCount and the Snapshot.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "flowkv/block_allocator.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/support/prefix_cache_reference.h"

namespace flowkv {
namespace {

struct Live {
  BlockList list;
  std::vector<BlockHash> hashes;
};

BlockHash Chain(BlockHash parent, uint64_t tokens) {
  uint64_t x = parent * 0x9E3779B97F4A7C15ull + tokens + 1;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 29);
}

void Compare(BlockAllocator& a, const testing::PrefixCacheReference& ref,
             uint32_t num_blocks, uint64_t* read_seq, bool everything) {
  FUZZ_CHECK(a.free_blocks() == ref.free_blocks());
  FUZZ_CHECK(a.available_blocks() == ref.free_blocks() + ref.cached_blocks());
  const BlockAllocatorStats stats = a.Stats();
  FUZZ_CHECK(stats.cached_blocks == ref.cached_blocks());
  FUZZ_CHECK(stats.indexed_blocks == ref.indexed_blocks());
  FUZZ_CHECK(stats.lookups == ref.lookups());
  FUZZ_CHECK(stats.lookup_hit_blocks == ref.lookup_hit_blocks());
  FUZZ_CHECK(stats.evicted_blocks == ref.evicted_blocks());
  FUZZ_CHECK(stats.latest_event_seq == ref.events().size());
  // The buffer holds everything (its capacity is larger than any run).
  const KvEventBatch batch = a.ReadEvents(*read_seq, SIZE_MAX);
  FUZZ_CHECK(!batch.fell_behind);
  for (const KvEvent& e : batch.events) {
    FUZZ_CHECK(e.seq == *read_seq + 1, "events in order, no gap");
    FUZZ_CHECK(e == ref.events().at(e.seq - 1));
    *read_seq = e.seq;
  }
  FUZZ_CHECK(*read_seq == ref.events().size());
  if (!everything) return;
  for (BlockId b = 0; b < num_blocks; ++b) {
    FUZZ_CHECK(a.RefCount(b) == ref.refs(b));
  }
  FUZZ_CHECK(a.Snapshot() == ref.Snapshot());
}

}  // namespace
}  // namespace flowkv

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flowkv;  // NOLINT
  fuzz::FuzzInput in(data, size);
  const auto num_blocks = static_cast<uint32_t>(in.Range(1, 200));
  const auto slack = static_cast<uint32_t>(in.Range(0, 8));
  auto allocator = BlockAllocator::Create({.num_blocks = num_blocks,
                                           .growth_slack_blocks = slack,
                                           .enable_prefix_cache = true,
                                           .event_buffer_capacity = 1 << 16});
  FUZZ_CHECK(allocator.ok(), allocator.status().ToString());
  BlockAllocator& a = **allocator;
  testing::PrefixCacheReference ref(num_blocks);
  std::vector<Live> live;  // Lists handed out (some freed or broken since).
  uint64_t read_seq = 0;
  auto pick = [&]() -> Live& { return live[in.Range(0, live.size() - 1)]; };
  auto prompt = [&](size_t blocks) {
    std::vector<BlockHash> hashes;
    BlockHash h = 0;
    for (size_t i = 0; i < blocks; ++i) {
      hashes.push_back(h = Chain(h, in.Range(0, 2)));
    }
    return hashes;
  };
  auto free_list = [&](const BlockList& list,
                       const std::vector<BlockHash>& hashes) {
    const absl::StatusCode want = ref.HashesCode(list, hashes);
    absl::Status s = a.Free(list, hashes);
    FUZZ_CHECK(s.code() == want, s.ToString());
    if (s.ok()) ref.Free(list, hashes);
  };
  int step = 0;
  for (; step < 200 && !in.empty(); ++step) {
    const uint8_t op = in.U8() % 9;
    if (op <= 1 || live.empty()) {
      // A request: Lookup its prompt, then Allocate the rest after it.
      std::vector<BlockHash> hashes;
      if (op == 1 && in.Bool()) {
        for (size_t i = in.Range(0, 4); i > 0; --i) hashes.push_back(in.U64());
      } else {
        hashes = prompt(in.Range(0, 12));
      }
      absl::StatusOr<BlockList> hit = a.Lookup(hashes);
      FUZZ_CHECK(hit.ok(), hit.status().ToString());
      FUZZ_CHECK(hit->ToIds() == ref.Lookup(hashes));
      const auto need = static_cast<uint32_t>(in.Range(0, num_blocks / 3 + 2));
      Live r{*hit, hashes};
      if (need > 0) {
        absl::StatusOr<BlockList> rest =
            hit->empty() ? a.Allocate(need)
                         : a.Allocate(need, hit->runs().back());
        if (!ref.CanAllocate(need)) {
          FUZZ_CHECK(rest.status().code() ==
                     absl::StatusCode::kResourceExhausted);
        } else {
          FUZZ_CHECK(rest.ok(), rest.status().ToString());
          FUZZ_CHECK(rest->num_blocks() == need);
          ref.EvictFor(need);
          FUZZ_CHECK(ref.Take(rest->ToIds()), "a block that was not free");
          r.list.AppendList(*rest);
        }
      }
      if (r.hashes.size() > r.list.num_blocks()) {
        r.hashes.resize(r.list.num_blocks());
      }
      if (!r.list.empty()) live.push_back(std::move(r));
    } else if (op == 2) {
      Live& r = pick();
      const auto n = static_cast<uint32_t>(in.Range(0, 6));
      const absl::StatusCode want = ref.ExtendCode(r.list, n);
      BlockList grown = r.list;
      absl::Status s = a.Extend(&grown, n);
      FUZZ_CHECK(s.code() == want, s.ToString());
      if (s.ok() && n > 0) {
        ref.EvictFor(n);
        const std::vector<BlockId> ids = grown.ToIds();
        FUZZ_CHECK(ids.size() == r.list.num_blocks() + n);
        FUZZ_CHECK(ref.Take(absl::MakeConstSpan(ids).subspan(
            static_cast<size_t>(r.list.num_blocks()))));
        r.list = grown;
      }
    } else if (op == 3) {
      Live& r = pick();
      std::vector<BlockHash> hashes = r.hashes;
      hashes.resize(in.Range(0, hashes.size()));
      const absl::StatusCode want = ref.HashesCode(r.list, hashes);
      absl::Status s = a.CacheBlocks(r.list, hashes);
      FUZZ_CHECK(s.code() == want, s.ToString());
      if (s.ok()) ref.Record(r.list, hashes);
    } else if (op == 4 || op == 5) {
      // Free with all, some, none, one wrong or too many hashes; the list
      // stays in `live` (a later pick is a double free).
      Live& r = pick();
      std::vector<BlockHash> hashes = r.hashes;
      switch (in.U8() % 5) {
        case 0:
          break;
        case 1:
          hashes.resize(in.Range(0, hashes.size()));
          break;
        case 2:
          hashes.clear();
          break;
        case 3:
          if (!hashes.empty()) hashes[in.Range(0, hashes.size() - 1)] ^= 1;
          break;
        default:
          hashes.resize(r.list.num_blocks() + 1, 7);
          break;
      }
      free_list(r.list, hashes);
    } else if (op == 6) {
      Live& r = pick();
      const absl::StatusCode want = ref.ListCode(r.list);
      absl::Status s = a.Share(r.list);
      FUZZ_CHECK(s.code() == want, s.ToString());
      if (s.ok()) {
        ref.Share(r.list);
        live.push_back(r);
      }
    } else if (op == 7) {
      // A list the allocator never handed out.
      BlockList list;
      for (int i = static_cast<int>(in.Range(1, 3)); i > 0; --i) {
        list.Append(static_cast<BlockId>(in.Range(0, num_blocks + 1)),
                    static_cast<uint32_t>(in.Range(1, 4)));
      }
      if (in.Bool()) {
        free_list(list, {});
      } else {
        const absl::StatusCode want = ref.ListCode(list);
        absl::Status s = a.Share(list);
        FUZZ_CHECK(s.code() == want, s.ToString());
        if (s.ok()) ref.Share(list);
      }
    } else if (in.U8() < 16) {
      FUZZ_CHECK(a.ClearCache().ok());
      ref.Clear();
    }
    Compare(a, ref, num_blocks, &read_seq, step % 8 == 0);
  }
  Compare(a, ref, num_blocks, &read_seq, true);
  return 0;
}
