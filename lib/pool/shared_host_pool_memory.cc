// SPDX-License-Identifier: Apache-2.0
// MakeSharedHostPool (include/flowkv/kv_pool_memory.h): a host pool in
// POSIX shared-memory objects (one per region) that other processes of this
// host map, its ShareDescriptor, and the peer pools OpenPeer maps. Copies
// are memcpy, synchronous. Calls POSIX (shm_open, mmap), host_pool_copy.h,
// the descriptor's codec (host_share_descriptor.h) and HostBootId
// (lib/common/host_identity.h).

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <random>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "flowkv/kv_pool_memory.h"
#include "lib/common/host_identity.h"
#include "lib/pool/host_pool_copy.h"
#include "lib/pool/host_share_descriptor.h"

namespace flowkv {
namespace {

using internal::kMaxHostShareRegions;

absl::Status SystemError(const char* what, const std::string& name, int err) {
  const std::string message = absl::StrFormat("MakeSharedHostPool: %s %s: %s",
                                              what, name, std::strerror(err));
  if (err == ENOMEM || err == ENOSPC || err == EMFILE || err == ENFILE) {
    return absl::ResourceExhaustedError(message);
  }
  if (err == ENOENT || err == EACCES) return absl::UnavailableError(message);
  return absl::InternalError(message);
}

// One mapping of a shared-memory object; unmapped (and, when owned,
// unlinked) on destruction.
struct Mapping {
  std::string name;
  uint8_t* base = nullptr;
  uint64_t bytes = 0;
  bool owned = false;
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (base != nullptr) munmap(base, bytes);
    if (owned) shm_unlink(name.c_str());
  }
};

absl::StatusOr<std::unique_ptr<Mapping>> MapObject(const std::string& name,
                                                   uint64_t bytes,
                                                   bool create) {
  auto m = std::make_unique<Mapping>();
  m->name = name;
  const int fd =
      shm_open(name.c_str(), create ? O_RDWR | O_CREAT | O_EXCL : O_RDWR, 0600);
  if (fd < 0) return SystemError("shm_open", name, errno);
  m->owned = create;
  if (create && ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int err = errno;
    close(fd);
    return SystemError("ftruncate", name, err);
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < bytes) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrFormat(
        "MakeSharedHostPool: object %s holds fewer than the %d bytes its "
        "descriptor names",
        name, bytes));
  }
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  close(fd);
  if (base == MAP_FAILED) return SystemError("mmap", name, err);
  m->base = static_cast<uint8_t*>(base);
  m->bytes = bytes;
  return m;
}

struct MappedPool {
  std::vector<std::unique_ptr<Mapping>> mappings;
  std::vector<uint8_t*> bases;
  std::vector<uint64_t> sizes;
  void Add(std::unique_ptr<Mapping> m) {
    bases.push_back(m->base);
    sizes.push_back(m->bytes);
    mappings.push_back(std::move(m));
  }
};

class SharedPeer final : public KvPeerPool {
 public:
  SharedPeer(const MappedPool* local, MappedPool peer)
      : local_(local), peer_(std::move(peer)) {}

  void CopyTo(std::vector<TransferOp> copies, void* /*after*/,
              PoolCopyDone done) override {
    done(Copy(copies, /*push=*/true));
  }
  void CopyFrom(std::vector<TransferOp> copies, PoolCopyDone done) override {
    done(Copy(copies, /*push=*/false));
  }

 private:
  // Push: local src -> peer dst; pull: peer src -> local dst. Checks every
  // run first; on an error nothing is copied.
  absl::Status Copy(const std::vector<TransferOp>& copies, bool push) const {
    const MappedPool& src = push ? *local_ : peer_;
    const MappedPool& dst = push ? peer_ : *local_;
    for (const TransferOp& c : copies) {
      if (absl::Status s =
              internal::CheckPoolRun("KvPeerPool source", src.sizes,
                                     c.src_region, c.src_offset, c.length);
          !s.ok()) {
        return s;
      }
      if (absl::Status s =
              internal::CheckPoolRun("KvPeerPool destination", dst.sizes,
                                     c.dst_region, c.dst_offset, c.length);
          !s.ok()) {
        return s;
      }
    }
    for (const TransferOp& c : copies) {
      std::memmove(dst.bases[c.dst_region] + c.dst_offset,
                   src.bases[c.src_region] + c.src_offset, c.length);
    }
    return absl::OkStatus();
  }

  const MappedPool* const local_;
  const MappedPool peer_;
};

class SharedHostPool final : public KvPoolMemory {
 public:
  SharedHostPool(MappedPool pool, std::string boot_id)
      : pool_(std::move(pool)), boot_id_(std::move(boot_id)) {}

  MemoryKind kind() const override { return MemoryKind::kHost; }
  uint32_t num_regions() const override {
    return static_cast<uint32_t>(pool_.sizes.size());
  }
  uint64_t region_bytes(uint32_t region) const override {
    return region < pool_.sizes.size() ? pool_.sizes[region] : 0;
  }
  void* region_base(uint32_t region) const override {
    return region < pool_.bases.size() ? pool_.bases[region] : nullptr;
  }
  void Gather(std::vector<PoolHostCopy> copies, void* /*after*/,
              PoolCopyDone done) override {
    done(internal::HostGatherScatter(pool_.bases, pool_.sizes, copies, true));
  }
  void Scatter(std::vector<PoolHostCopy> copies, PoolCopyDone done) override {
    done(internal::HostGatherScatter(pool_.bases, pool_.sizes, copies, false));
  }

  std::string ShareDescriptor() const override {
    internal::HostShareDescriptor descriptor{.boot_id = boot_id_,
                                             .regions = {}};
    for (const auto& m : pool_.mappings) {
      descriptor.regions.push_back({.name = m->name, .size = m->bytes});
    }
    return internal::EncodeHostShareDescriptor(descriptor);
  }

  absl::StatusOr<std::unique_ptr<KvPeerPool>> OpenPeer(
      std::string_view descriptor) override {
    absl::StatusOr<internal::HostShareDescriptor> parsed =
        internal::ParseHostShareDescriptor(descriptor);
    if (!parsed.ok()) return parsed.status();
    if (parsed->boot_id != boot_id_) {
      return absl::UnavailableError(absl::StrCat(
          "MakeSharedHostPool::OpenPeer: the peer's pool is on another "
          "host (boot id ",
          absl::CHexEscape(parsed->boot_id), ", this host's ", boot_id_, ")"));
    }
    MappedPool peer;
    for (const internal::HostShareRegion& region : parsed->regions) {
      absl::StatusOr<std::unique_ptr<Mapping>> m =
          MapObject(region.name, region.size, /*create=*/false);
      if (!m.ok()) return m.status();
      peer.Add(*std::move(m));
    }
    return std::unique_ptr<KvPeerPool>(new SharedPeer(&pool_, std::move(peer)));
  }

 private:
  const MappedPool pool_;
  const std::string boot_id_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvPoolMemory>> MakeSharedHostPool(
    std::vector<uint64_t> sizes) {
  if (sizes.empty() || sizes.size() > kMaxHostShareRegions) {
    return absl::InvalidArgumentError(
        absl::StrFormat("MakeSharedHostPool: %d sizes given (need 1 to %d)",
                        sizes.size(), kMaxHostShareRegions));
  }
  static std::atomic<uint64_t> next{0};
  const uint64_t nonce = std::random_device{}();
  MappedPool pool;
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("MakeSharedHostPool: region %d has size 0", i));
    }
    const std::string name = absl::StrFormat("/flowkv-%d-%d-%x-r%d", getpid(),
                                             next.fetch_add(1), nonce, i);
    absl::StatusOr<std::unique_ptr<Mapping>> m =
        MapObject(name, sizes[i], /*create=*/true);
    if (!m.ok()) return m.status();
    pool.Add(*std::move(m));
  }
  return std::unique_ptr<KvPoolMemory>(
      new SharedHostPool(std::move(pool), internal::HostBootId()));
}

}  // namespace flowkv
