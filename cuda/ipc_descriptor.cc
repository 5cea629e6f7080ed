// SPDX-License-Identifier: Apache-2.0
// Encoding and parsing of CudaPoolMemory's ShareDescriptor
// (cuda/ipc_descriptor.h).

#include "cuda/ipc_descriptor.h"

#include <cstring>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace flowkv::cuda::internal {
namespace {

constexpr std::string_view kMagic = "FKVCUDA";
constexpr uint8_t kVersion = 2;
constexpr size_t kRegionBytes = 4 * 8 + kIpcHandleBytes;

uint64_t Fnv1a(std::string_view bytes) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (const char c : bytes) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

// Reads fields front to back; every read checks the length first.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}
  bool Take(size_t n, std::string_view* out) {
    if (bytes_.size() - pos_ < n) return false;
    *out = bytes_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool U8(uint8_t* v) {
    std::string_view s;
    if (!Take(1, &s)) return false;
    *v = static_cast<uint8_t>(s[0]);
    return true;
  }
  bool U32(uint32_t* v) {
    std::string_view s;
    if (!Take(4, &s)) return false;
    *v = 0;
    for (int i = 0; i < 4; ++i)
      *v |= uint32_t{static_cast<uint8_t>(s[i])} << (8 * i);
    return true;
  }
  bool U64(uint64_t* v) {
    std::string_view s;
    if (!Take(8, &s)) return false;
    *v = 0;
    for (int i = 0; i < 8; ++i)
      *v |= uint64_t{static_cast<uint8_t>(s[i])} << (8 * i);
    return true;
  }
  size_t remaining() const { return bytes_.size() - pos_; }

 private:
  std::string_view bytes_;
  size_t pos_ = 0;
};

absl::Status Malformed(std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrFormat("CUDA pool share descriptor: %s", what));
}

}  // namespace

std::string EncodeIpcDescriptor(const IpcDescriptor& descriptor) {
  std::string out(kMagic);
  out.push_back(static_cast<char>(kVersion));
  const size_t boot_length = std::min<size_t>(descriptor.boot_id.size(), 255);
  out.push_back(static_cast<char>(boot_length));
  out.append(descriptor.boot_id, 0, boot_length);
  PutU32(&out, descriptor.pid);
  out.append(reinterpret_cast<const char*>(descriptor.device_uuid.data()),
             descriptor.device_uuid.size());
  PutU32(&out, static_cast<uint32_t>(descriptor.regions.size()));
  for (const IpcRegion& region : descriptor.regions) {
    PutU64(&out, region.size);
    PutU64(&out, region.address);
    PutU64(&out, region.offset);
    PutU64(&out, region.allocation_bytes);
    out.append(region.handle.data(), region.handle.size());
  }
  PutU64(&out, Fnv1a(out));
  return out;
}

absl::StatusOr<IpcDescriptor> ParseIpcDescriptor(std::string_view bytes) {
  if (bytes.size() < kMagic.size() + 1 + 8) {
    return Malformed(absl::StrFormat("%d bytes are too few", bytes.size()));
  }
  if (bytes.substr(0, kMagic.size()) != kMagic) {
    return Malformed("bad magic (not a CudaPoolMemory descriptor)");
  }
  const std::string_view body = bytes.substr(0, bytes.size() - 8);
  Reader tail(bytes.substr(bytes.size() - 8));
  uint64_t checksum = 0;
  tail.U64(&checksum);
  if (checksum != Fnv1a(body)) return Malformed("checksum mismatch");

  Reader reader(body.substr(kMagic.size()));
  IpcDescriptor descriptor;
  uint8_t version = 0, boot_length = 0;
  std::string_view field;
  reader.U8(&version);
  if (version != kVersion) {
    return Malformed(
        absl::StrFormat("version %d, expected %d", version, kVersion));
  }
  if (!reader.U8(&boot_length) || !reader.Take(boot_length, &field)) {
    return Malformed("truncated boot id");
  }
  descriptor.boot_id = std::string(field);
  if (!reader.U32(&descriptor.pid)) return Malformed("truncated pid");
  if (!reader.Take(descriptor.device_uuid.size(), &field)) {
    return Malformed("truncated device UUID");
  }
  std::memcpy(descriptor.device_uuid.data(), field.data(), field.size());
  uint32_t count = 0;
  if (!reader.U32(&count)) return Malformed("truncated region count");
  if (count == 0 || count > kMaxIpcRegions) {
    return Malformed(absl::StrFormat("region count %d outside [1, %d]", count,
                                     kMaxIpcRegions));
  }
  if (reader.remaining() != uint64_t{count} * kRegionBytes) {
    return Malformed(absl::StrFormat(
        "%d bytes of regions for %d regions (expected %d)", reader.remaining(),
        count, uint64_t{count} * kRegionBytes));
  }
  descriptor.regions.resize(count);
  for (size_t i = 0; i < descriptor.regions.size(); ++i) {
    IpcRegion& region = descriptor.regions[i];
    reader.U64(&region.size);
    reader.U64(&region.address);
    reader.U64(&region.offset);
    reader.U64(&region.allocation_bytes);
    reader.Take(kIpcHandleBytes, &field);
    std::memcpy(region.handle.data(), field.data(), kIpcHandleBytes);
    if (region.size == 0) {
      return Malformed(absl::StrFormat("region %d has 0 bytes", i));
    }
    if (region.offset > region.allocation_bytes ||
        region.size > region.allocation_bytes - region.offset) {
      return Malformed(absl::StrFormat(
          "region %d ([%d, +%d)) leaves its allocation of %d bytes", i,
          region.offset, region.size, region.allocation_bytes));
    }
  }
  return descriptor;
}

std::string HostBootId() {
  std::ifstream file("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(file, id);
  return id;
}

}  // namespace flowkv::cuda::internal
