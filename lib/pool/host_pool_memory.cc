// SPDX-License-Identifier: Apache-2.0
// MakeHostPool (include/flowkv/kv_pool_memory.h): a pool in this
// process's host memory; gathers and scatters are memcpy, synchronous.
// Also the copy helpers the shared-host pool reuses (host_pool_copy.h).
// Calls nothing else.
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "flowkv/kv_pool_memory.h"
#include "lib/pool/host_pool_copy.h"

namespace flowkv {
namespace internal {

absl::Status CheckPoolRun(const char* what, const std::vector<uint64_t>& sizes,
                          uint32_t region, uint64_t offset, uint64_t length) {
  if (region >= sizes.size() || offset > sizes[region] ||
      length > sizes[region] - offset) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: run [%d, +%d) of region %d is outside the pool (%d regions%s)",
        what, offset, length, region, sizes.size(),
        region < sizes.size()
            ? absl::StrFormat(", region of %d bytes", sizes[region])
            : ""));
  }
  return absl::OkStatus();
}

absl::Status HostGatherScatter(const std::vector<uint8_t*>& bases,
                               const std::vector<uint64_t>& sizes,
                               const std::vector<PoolHostCopy>& copies,
                               bool to_host) {
  const char* what = to_host ? "Gather" : "Scatter";
  for (const PoolHostCopy& c : copies) {
    if (absl::Status s =
            CheckPoolRun(what, sizes, c.region, c.offset, c.length);
        !s.ok()) {
      return s;
    }
    if (c.host == nullptr && c.length > 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: null host pointer", what));
    }
  }
  for (const PoolHostCopy& c : copies) {
    uint8_t* pool = bases[c.region] + c.offset;
    if (to_host) {
      std::memcpy(c.host, pool, c.length);
    } else {
      std::memcpy(pool, c.host, c.length);
    }
  }
  return absl::OkStatus();
}

}  // namespace internal

namespace {

class HostPool final : public KvPoolMemory {
 public:
  HostPool(std::vector<uint8_t*> bases, std::vector<uint64_t> sizes)
      : bases_(std::move(bases)), sizes_(std::move(sizes)) {}

  MemoryKind kind() const override { return MemoryKind::kHost; }
  uint32_t num_regions() const override {
    return static_cast<uint32_t>(sizes_.size());
  }
  uint64_t region_bytes(uint32_t region) const override {
    return region < sizes_.size() ? sizes_[region] : 0;
  }
  void* region_base(uint32_t region) const override {
    return region < bases_.size() ? bases_[region] : nullptr;
  }
  void Gather(std::vector<PoolHostCopy> copies, void* /*after*/,
              PoolCopyDone done) override {
    done(internal::HostGatherScatter(bases_, sizes_, copies, true));
  }
  void Scatter(std::vector<PoolHostCopy> copies, PoolCopyDone done) override {
    done(internal::HostGatherScatter(bases_, sizes_, copies, false));
  }

 private:
  const std::vector<uint8_t*> bases_;
  const std::vector<uint64_t> sizes_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvPoolMemory>> MakeHostPool(
    std::vector<void*> bases, std::vector<uint64_t> sizes) {
  if (bases.empty() || bases.size() != sizes.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("MakeHostPool: %d bases and %d sizes (need the same "
                        "count, at least 1)",
                        bases.size(), sizes.size()));
  }
  std::vector<uint8_t*> bytes;
  for (size_t i = 0; i < bases.size(); ++i) {
    if (bases[i] == nullptr || sizes[i] == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "MakeHostPool: region %d has a null base or size 0", i));
    }
    bytes.push_back(static_cast<uint8_t*>(bases[i]));
  }
  return std::unique_ptr<KvPoolMemory>(
      new HostPool(std::move(bytes), std::move(sizes)));
}

}  // namespace flowkv
