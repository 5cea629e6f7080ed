// SPDX-License-Identifier: Apache-2.0
// Encoding and parsing of CudaPoolMemory's ShareDescriptor
// (cuda/ipc_descriptor.h), through lib/common/byte_io.h. Pure: no CUDA
// header, so the fuzz target (tests/fuzz/cuda_ipc_descriptor_fuzz.cc) and
// the tests compile it without CUDA.

#include "cuda/ipc_descriptor.h"

#include <algorithm>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "lib/common/byte_io.h"

namespace flowkv::cuda::internal {
namespace {

using ::flowkv::internal::ByteReader;
using ::flowkv::internal::ByteWriter;
using ::flowkv::internal::Fnv1a64;

constexpr std::string_view kMagic = "FKVCUDA";
constexpr uint8_t kVersion = 2;
constexpr size_t kRegionBytes = 4 * 8 + kIpcHandleBytes;
constexpr size_t kChecksumBytes = 8;
constexpr size_t kMaxBootIdBytes = 255;

absl::Span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

std::string EncodeIpcDescriptor(const IpcDescriptor& descriptor) {
  ByteWriter w;
  w.Reserve(kMagic.size() + 2 + descriptor.boot_id.size() + 4 + 16 + 4 +
            descriptor.regions.size() * kRegionBytes + kChecksumBytes);
  w.Magic(kMagic);
  w.U8(kVersion);
  const size_t boot_length =
      std::min(descriptor.boot_id.size(), kMaxBootIdBytes);
  w.U8(static_cast<uint8_t>(boot_length));
  w.Raw(std::string_view(descriptor.boot_id).substr(0, boot_length));
  w.U32(descriptor.pid);
  w.Raw(std::string_view(
      reinterpret_cast<const char*>(descriptor.device_uuid.data()),
      descriptor.device_uuid.size()));
  w.U32(static_cast<uint32_t>(descriptor.regions.size()));
  for (const IpcRegion& region : descriptor.regions) {
    w.U64(region.size);
    w.U64(region.address);
    w.U64(region.offset);
    w.U64(region.allocation_bytes);
    w.Raw(std::string_view(region.handle.data(), region.handle.size()));
  }
  w.U64(Fnv1a64(AsBytes(w.bytes())));
  return std::move(w).Take();
}

absl::StatusOr<IpcDescriptor> ParseIpcDescriptor(std::string_view bytes) {
  ByteReader r(bytes, "CUDA pool share descriptor");
  absl::Span<const uint8_t> trailer;
  if (!r.Magic("magic", kMagic) ||
      !r.SplitTrailer("checksum", kChecksumBytes, &trailer)) {
    return r.status();
  }
  ByteReader stored(trailer, "CUDA pool share descriptor");
  uint64_t checksum = 0;
  stored.U64("checksum", &checksum);
  if (checksum != Fnv1a64(r.data())) {
    r.Fail("checksum mismatch");
    return r.status();
  }

  IpcDescriptor descriptor;
  uint8_t version = 0;
  if (r.U8("version", &version) && version != kVersion) {
    r.Fail(absl::StrFormat("version %d, expected %d", version, kVersion));
  }
  uint8_t boot_length = 0;
  std::string_view field;
  if (r.U8("boot_id length", &boot_length) &&
      r.Raw("boot_id", boot_length, &field)) {
    descriptor.boot_id = std::string(field);
  }
  r.U32("pid", &descriptor.pid);
  if (r.Raw("device_uuid", descriptor.device_uuid.size(), &field)) {
    std::memcpy(descriptor.device_uuid.data(), field.data(), field.size());
  }
  uint32_t count = 0;
  if (r.U32("region count", &count) && (count == 0 || count > kMaxIpcRegions)) {
    r.Fail(absl::StrFormat("region count %d outside [1, %d]", count,
                           kMaxIpcRegions));
  }
  if (r.ok() && r.remaining() != uint64_t{count} * kRegionBytes) {
    r.Fail(absl::StrFormat("%d bytes of regions for %d regions (expected %d)",
                           r.remaining(), count,
                           uint64_t{count} * kRegionBytes));
  }
  if (!r.ok()) return r.status();
  descriptor.regions.resize(count);
  for (size_t i = 0; i < descriptor.regions.size() && r.ok(); ++i) {
    IpcRegion& region = descriptor.regions[i];
    r.U64("size", &region.size);
    r.U64("address", &region.address);
    r.U64("offset", &region.offset);
    r.U64("allocation_bytes", &region.allocation_bytes);
    if (r.Raw("handle", kIpcHandleBytes, &field)) {
      std::memcpy(region.handle.data(), field.data(), kIpcHandleBytes);
    }
    if (!r.ok()) break;
    if (region.size == 0) {
      r.Fail(absl::StrFormat("region %d has 0 bytes", i));
    } else if (region.offset > region.allocation_bytes ||
               region.size > region.allocation_bytes - region.offset) {
      r.Fail(absl::StrFormat(
          "region %d ([%d, +%d)) leaves its allocation of %d bytes", i,
          region.offset, region.size, region.allocation_bytes));
    }
  }
  if (absl::Status s = r.End(); !s.ok()) return s;
  return descriptor;
}

}  // namespace flowkv::cuda::internal
