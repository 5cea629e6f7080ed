// SPDX-License-Identifier: Apache-2.0
// MakeSharedHostPool's share descriptor codec
// (lib/pool/host_share_descriptor.h), through lib/common/byte_io.h.

#include "lib/pool/host_share_descriptor.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "lib/common/byte_io.h"

namespace flowkv::internal {
namespace {

// A shm_open name: "/" and at least one more byte, none of them "/" or NUL.
bool ValidName(std::string_view name) {
  return name.size() >= 2 && name[0] == '/' &&
         name.find_first_of(std::string_view("/\0", 2), 1) ==
             std::string_view::npos;
}

}  // namespace

std::string EncodeHostShareDescriptor(const HostShareDescriptor& descriptor) {
  ByteWriter w;
  w.Magic(kHostShareMagic);
  w.U16(kHostShareVersion);
  w.Bytes(descriptor.boot_id);
  w.U32(static_cast<uint32_t>(descriptor.regions.size()));
  for (const HostShareRegion& region : descriptor.regions) {
    w.Bytes(region.name);
    w.U64(region.size);
  }
  return std::move(w).Take();
}

absl::StatusOr<HostShareDescriptor> ParseHostShareDescriptor(
    std::string_view bytes) {
  ByteReader r(bytes, "MakeSharedHostPool share descriptor");
  HostShareDescriptor descriptor;
  uint16_t version = 0;
  uint32_t count = 0;
  if (!r.Magic("magic", kHostShareMagic) || !r.U16("version", &version)) {
    return r.status();
  }
  if (version != kHostShareVersion) {
    r.Fail(
        absl::StrFormat("version %d, expected %d", version, kHostShareVersion));
    return r.status();
  }
  r.Bytes("boot_id", kMaxHostShareBootIdBytes, &descriptor.boot_id);
  if (r.U32("num_regions", &count) &&
      (count == 0 || count > kMaxHostShareRegions)) {
    r.Fail(absl::StrFormat("num_regions %d outside [1, %d]", count,
                           kMaxHostShareRegions));
  }
  for (uint32_t i = 0; i < count && r.ok(); ++i) {
    HostShareRegion region;
    if (!r.Bytes("name", kMaxHostShareNameBytes, &region.name) ||
        !r.U64("size", &region.size)) {
      break;
    }
    if (!ValidName(region.name)) {
      r.Fail(absl::StrFormat(
          "region %d: name \"%s\" is not \"/\" and 1 to %d bytes without "
          "\"/\" or NUL",
          i, absl::CHexEscape(region.name), kMaxHostShareNameBytes - 1));
    } else if (region.size == 0) {
      r.Fail(absl::StrFormat("region %d has 0 bytes", i));
    }
    descriptor.regions.push_back(std::move(region));
  }
  if (absl::Status s = r.End(); !s.ok()) return s;
  return descriptor;
}

}  // namespace flowkv::internal
