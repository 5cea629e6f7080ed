// SPDX-License-Identifier: Apache-2.0
// PagedKv checks and address resolution, and HostKvPool (paged_kv.h). Uses
// only the public KvLayout / BlockList / KvPoolMemory API.

#include "tools/cluster/model/paged_kv.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_format.h"

namespace flowkv::cluster {
namespace {

constexpr size_t kAlignment = 64;

}  // namespace

PagedKv PagedKv::FromPool(const KvLayout* layout, const KvPoolMemory& memory,
                          BlockList blocks) {
  PagedKv kv;
  kv.layout = layout;
  kv.region_bases.reserve(memory.num_regions());
  for (uint32_t r = 0; r < memory.num_regions(); ++r) {
    kv.region_bases.push_back(memory.region_base(r));
  }
  kv.blocks = std::move(blocks);
  return kv;
}

void HostKvPool::FreeDeleter::operator()(void* p) const { std::free(p); }

absl::StatusOr<HostKvPool> HostKvPool::Create(const KvLayout& layout) {
  HostKvPool pool;
  for (uint32_t r = 0; r < layout.num_regions(); ++r) {
    const uint64_t bytes =
        (layout.region_bytes(r) + kAlignment - 1) / kAlignment * kAlignment;
    void* p = bytes < layout.region_bytes(r)
                  ? nullptr
                  : std::aligned_alloc(kAlignment, bytes);
    if (p == nullptr) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "HostKvPool: cannot allocate region %u of %u bytes (%s)", r,
          layout.region_bytes(r), layout.ToString()));
    }
    std::memset(p, 0, bytes);
    pool.regions_.emplace_back(p);
    pool.bases_.push_back(p);
  }
  return pool;
}

std::vector<const void*> HostKvPool::const_bases() const {
  return std::vector<const void*>(bases_.begin(), bases_.end());
}

absl::StatusOr<PagedKvView> PagedKvView::Create(const ModelConfig& config,
                                                const PagedKv& kv,
                                                int64_t positions) {
  if (kv.layout == nullptr) {
    return absl::InvalidArgumentError("PagedKv.layout is null");
  }
  const KvLayout& layout = *kv.layout;
  if (absl::Status s = CheckModelLayout(config, layout); !s.ok()) return s;
  if (kv.region_bases.size() != layout.num_regions()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "PagedKv.region_bases: %u entries, the layout %s has %u regions",
        kv.region_bases.size(), layout.name(), layout.num_regions()));
  }
  for (size_t r = 0; r < kv.region_bases.size(); ++r) {
    if (kv.region_bases[r] == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrFormat("PagedKv.region_bases[%u] is null", r));
    }
  }
  if (absl::Status s = layout.CheckBlocks(kv.blocks); !s.ok()) return s;
  const int64_t block_tokens = layout.geometry().block_tokens;
  const uint64_t capacity = kv.blocks.num_blocks() * block_tokens;
  if (positions < 0 || static_cast<uint64_t>(positions) > capacity) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "PagedKv.blocks: %u blocks of %d tokens hold %u positions, the "
        "request needs %d",
        kv.blocks.num_blocks(), block_tokens, capacity, positions));
  }

  PagedKvView view;
  view.block_tokens_ = block_tokens;
  const uint64_t needed_blocks = (positions + block_tokens - 1) / block_tokens;
  view.block_ids_.reserve(needed_blocks);
  for (const BlockRun& run : kv.blocks.runs()) {
    for (uint32_t i = 0;
         i < run.count && view.block_ids_.size() < needed_blocks; ++i) {
      view.block_ids_.push_back(run.first + i);
    }
  }
  view.tensors_.reserve(config.layers * 2);
  for (int layer = 0; layer < config.layers; ++layer) {
    for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
      const KvTensor& t = layout.tensor(layer, part);
      view.tensors_.push_back(Tensor{
          .base = static_cast<uint8_t*>(kv.region_bases[t.region]) + t.offset,
          .block_stride = t.block_stride,
          .token_stride = t.token_stride,
          .head_stride = t.head_stride});
    }
  }
  return view;
}

}  // namespace flowkv::cluster
