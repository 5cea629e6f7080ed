// SPDX-License-Identifier: Apache-2.0
// PagedKv: where one request's KV cache lives, for the model to write and
// read it in place: a pool's memory (the base address of each region), the
// pool's KvLayout (its preset and block size) and the request's BlockList.
// Token p of the request is token p % T of block BlockAt(p / T), T = the
// layout's block_tokens (the convention of PlanTransfer and KvTransfer), so
// a pool filled by the model can be moved to another pool with the library
// and read there by the model.
//
//   auto pool = flowkv::cluster::HostKvPool::Create(layout);  // or a node's
//   flowkv::cluster::PagedKv kv{.layout = &layout,
//                               .region_bases = pool->bases(),
//                               .blocks = request_blocks};
//   absl::StatusOr<int> first = model->Prefill(prompt, kv, nullptr);
//
// PagedKvView is the checked, resolved form the model reads and writes
// through: the address of every head vector of (layer, K|V, token, head).
//
// Thread safety: PagedKv and PagedKvView are plain values (externally
// synchronized); HostKvPool is externally synchronized.

#ifndef FLOWKV_TOOLS_CLUSTER_MODEL_PAGED_KV_H_
#define FLOWKV_TOOLS_CLUSTER_MODEL_PAGED_KV_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "flowkv/block_list.h"
#include "flowkv/kv_layout.h"
#include "flowkv/kv_pool_memory.h"
#include "tools/cluster/model/model_config.h"

namespace flowkv::cluster {

struct PagedKv {
  // The pool's layout (borrowed: it must outlive every call given this
  // PagedKv).
  const KvLayout* layout = nullptr;
  // Region r of the pool starts at region_bases[r] (layout->num_regions()
  // entries, each region_bytes(r) bytes of host memory).
  std::vector<void*> region_bases;
  // The request's blocks, in token order.
  BlockList blocks;

  // The bases of `memory`'s regions (host memory: MakeHostPool,
  // MakeSharedHostPool).
  static PagedKv FromPool(const KvLayout* layout, const KvPoolMemory& memory,
                          BlockList blocks);
};

// A pool in this process's memory for `layout` (zeroed, 64-byte aligned
// regions, freed with the pool): the colocated reference, tests,
// calibration.
class HostKvPool {
 public:
  // ResourceExhausted naming the region and its size when the memory cannot
  // be allocated.
  static absl::StatusOr<HostKvPool> Create(const KvLayout& layout);
  HostKvPool(HostKvPool&&) = default;
  HostKvPool& operator=(HostKvPool&&) = default;

  const std::vector<void*>& bases() const { return bases_; }
  std::vector<const void*> const_bases() const;

 private:
  HostKvPool() = default;
  struct FreeDeleter {
    void operator()(void* p) const;
  };
  std::vector<std::unique_ptr<void, FreeDeleter>> regions_;
  std::vector<void*> bases_;
};

// `kv` checked against the model and resolved to addresses.
class PagedKvView {
 public:
  // OK when `kv` can hold positions [0, positions) of a request of this
  // model: layout non-null and fitting the model (CheckModelLayout), one
  // non-null base per region, every block inside the pool (OutOfRange
  // otherwise), and at least `positions` tokens of blocks (InvalidArgument
  // naming both counts otherwise).
  static absl::StatusOr<PagedKvView> Create(const ModelConfig& config,
                                            const PagedKv& kv,
                                            int64_t positions);

  // The head_dim floats of (layer, K or V, position, kv head).
  // REQUIRES: indices below the limits checked at Create.
  float* Key(int layer, int64_t position, int head) const {
    return At(layer, 0, position, head);
  }
  float* Value(int layer, int64_t position, int head) const {
    return At(layer, 1, position, head);
  }

  // Calls f(position, key, value) for positions 0..count-1 in order, with
  // the head_dim floats of (layer, position, kv head) (block by block: no
  // division per position). REQUIRES: count within the checked positions.
  template <typename F>
  void ForEachKv(int layer, int head, int64_t count, const F& f) const {
    const Tensor& k = tensors_[layer * 2];
    const Tensor& v = tensors_[layer * 2 + 1];
    int64_t position = 0;
    for (size_t b = 0; position < count; ++b) {
      const uint8_t* key =
          k.base + block_ids_[b] * k.block_stride + head * k.head_stride;
      const uint8_t* value =
          v.base + block_ids_[b] * v.block_stride + head * v.head_stride;
      for (int64_t t = 0; t < block_tokens_ && position < count;
           ++t, ++position) {
        f(position, reinterpret_cast<const float*>(key + t * k.token_stride),
          reinterpret_cast<const float*>(value + t * v.token_stride));
      }
    }
  }

 private:
  struct Tensor {
    uint8_t* base = nullptr;  // region base + tensor offset
    uint64_t block_stride = 0;
    uint64_t token_stride = 0;
    uint64_t head_stride = 0;
  };

  float* At(int layer, int part, int64_t position, int head) const {
    const Tensor& t = tensors_[layer * 2 + part];
    const uint64_t block = block_ids_[position / block_tokens_];
    const uint64_t token = position % block_tokens_;
    return reinterpret_cast<float*>(t.base + block * t.block_stride +
                                    token * t.token_stride +
                                    head * t.head_stride);
  }

  std::vector<Tensor> tensors_;  // [layer * 2 + part]
  std::vector<BlockId> block_ids_;
  int64_t block_tokens_ = 1;
};

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_MODEL_PAGED_KV_H_
