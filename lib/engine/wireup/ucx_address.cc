// SPDX-License-Identifier: Apache-2.0
// The structural check of packed UCX worker addresses (ucx_address.h). A
// pure parser over bytes: calls nothing of UCX, so that it can run on what
// UCX would crash on.

#include "lib/engine/wireup/ucx_address.h"

#include <cmath>
#include <cstddef>
#include <cstring>
#include <ucs/algorithm/crc.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace flowkv::internal {
namespace {

// Header flags (UCP_ADDRESS_HEADER_FLAG_*).
constexpr uint8_t kFlagDebugInfo = 1 << 0;
constexpr uint8_t kFlagWorkerUuid = 1 << 1;
constexpr uint8_t kFlagClientId = 1 << 2;
constexpr uint8_t kFlagAmOnly = 1 << 3;
constexpr uint8_t kKnownHeaderFlags =
    kFlagDebugInfo | kFlagWorkerUuid | kFlagClientId | kFlagAmOnly;

constexpr uint8_t kNullResource = 0xff;
constexpr uint8_t kFlagLast = 0x80;
constexpr uint8_t kMdEmptyDevice = 0x80;
constexpr uint8_t kMdIndexMask = 0x7f;
constexpr uint8_t kMdIndexMaskV1 = 0x1f;  // v1 also packs alloc/reg flags
constexpr uint8_t kDeviceNumPaths = 0x40;
constexpr uint8_t kDeviceSysDevice = 0x20;
constexpr uint8_t kDeviceLengthMask = 0x1f;
constexpr uint8_t kIfaceHasEp = 0x40;
constexpr uint8_t kIfaceLengthMask = 0x3f;
// sizeof(ucp_address_packed_iface_attr_t) (v1: overhead, bandwidth,
// lat_ovh as floats, u32 prio_cap_flags) and of
// ucp_address_v2_packed_iface_attr_t (v2: overhead, bandwidth, latency,
// prio as u8, seg_size and flags as u16).
constexpr size_t kIfaceAttrBytesV1 = 16;
constexpr size_t kIfaceAttrBytesV2 = 8;
// UCP_MAX_RESOURCES, UCP_MAX_LANES, UCP_MAX_MDS of UCX 1.13.
constexpr size_t kMaxAddresses = 128;
constexpr size_t kMaxEpAddresses = 6;
constexpr size_t kMaxMdIndex = 64;

class Walker {
 public:
  Walker(absl::Span<const uint8_t> bytes, bool v1) : bytes_(bytes), v1_(v1) {}
  bool v1() const { return v1_; }

  bool U8(const char* field, uint8_t* out) {
    if (!Need(field, 1)) return false;
    *out = bytes_[pos_++];
    return true;
  }
  bool Skip(const char* field, size_t n) {
    const uint8_t* unused = nullptr;
    return Take(field, n, &unused);
  }
  bool Take(const char* field, size_t n, const uint8_t** out) {
    if (!Need(field, n)) return false;
    *out = bytes_.data() + pos_;
    pos_ += n;
    return true;
  }
  // A byte whose `mask` bits hold a value, or `mask` itself and the value in
  // the next byte (ucp_address_unpack_byte_extended; v2 only).
  bool Extended(const char* field, uint8_t mask, uint8_t first,
                uint8_t* value) {
    *value = first & mask;
    if (!v1_ && *value == mask) return U8(field, value);
    return true;
  }
  bool Fail(std::string message) {
    if (status_.ok()) {
      status_ = absl::InvalidArgumentError(absl::StrFormat(
          "UCX worker address (%d bytes): %s", bytes_.size(), message));
    }
    return false;
  }
  // What the walk found: each interface's transport and lengths, and the
  // opaque ranges (transport-defined address bodies).
  struct Iface {
    uint16_t tl_name_csum = 0;
    size_t device_length = 0;
    size_t iface_length = 0;
    size_t at = 0;
  };
  std::vector<Iface> ifaces;
  std::vector<UcxAddressRange> opaque;
  size_t device_length = 0;  // of the device being walked

  size_t pos() const { return pos_; }
  size_t remaining() const { return bytes_.size() - pos_; }
  const absl::Status& status() const { return status_; }

 private:
  bool Need(const char* field, size_t n) {
    if (n > remaining()) {
      return Fail(absl::StrFormat("%s at offset %d needs %d bytes, %d left",
                                  field, pos_, n, remaining()));
    }
    return true;
  }

  absl::Span<const uint8_t> bytes_;
  bool v1_ = false;
  size_t pos_ = 0;
  absl::Status status_;
};

float LittleEndianFloat(const uint8_t* p) {
  const uint32_t bits = uint32_t{p[0]} | uint32_t{p[1]} << 8 |
                        uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
  float value = 0;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// The performance figures UCX's lane selection divides by and asserts on
// (select.c: a score that is negative or NaN aborts the process): v1's
// floats must be finite, overhead and latency not negative, the bandwidth
// not zero; v2's fp8 values must not be NaN (exponent 0xf).
bool CheckIfaceAttributes(Walker& w, size_t at, const uint8_t* attr) {
  if (w.v1()) {
    const float overhead = LittleEndianFloat(attr);
    const float bandwidth = LittleEndianFloat(attr + 4);
    const float latency = LittleEndianFloat(attr + 8);
    if (!std::isfinite(overhead) || !std::isfinite(bandwidth) ||
        !std::isfinite(latency) || overhead < 0 || latency < 0 ||
        bandwidth == 0) {
      return w.Fail(absl::StrFormat(
          "iface at offset %d: overhead %g, bandwidth %g, latency %g (must "
          "be finite, not negative, the bandwidth not zero)",
          at, overhead, bandwidth, latency));
    }
    return true;
  }
  for (int i = 0; i < 3; ++i) {  // overhead, bandwidth, latency
    if ((attr[i] & 0x0f) == 0x0f) {
      return w.Fail(absl::StrFormat(
          "iface at offset %d: performance figure %d is NaN (fp8 0x%02x)", at,
          i, attr[i]));
    }
  }
  return true;
}

// One interface of a device and its endpoint addresses.
bool WalkIface(Walker& w, bool* last_iface) {
  uint8_t length_byte = 0;
  uint8_t length = 0;
  const uint8_t* attr = nullptr;
  const size_t iface_at = w.pos();
  const uint8_t* csum = nullptr;
  if (!w.Take("tl_name_csum", 2, &csum) ||
      !w.Take("iface attributes",
              w.v1() ? kIfaceAttrBytesV1 : kIfaceAttrBytesV2, &attr) ||
      !CheckIfaceAttributes(w, iface_at, attr)) {
    return false;
  }
  // The flags share the length byte; peek at them before it is consumed.
  const size_t at = w.pos();
  if (!w.U8("iface address length", &length_byte)) return false;
  *last_iface = (length_byte & kFlagLast) != 0;
  const bool has_ep = (length_byte & kIfaceHasEp) != 0;
  if (!w.Extended("iface address length", kIfaceLengthMask, length_byte,
                  &length)) {
    return false;
  }
  w.opaque.push_back({w.pos(), length});
  if (!w.Skip("iface address", length)) return false;
  w.ifaces.push_back({static_cast<uint16_t>(csum[0] | csum[1] << 8),
                      w.device_length, length, iface_at});
  size_t eps = 0;
  for (bool last_ep = !has_ep; !last_ep;) {
    if (++eps > kMaxEpAddresses) {
      return w.Fail(absl::StrFormat(
          "iface at offset %d has more than %d endpoint addresses", at,
          kMaxEpAddresses));
    }
    uint8_t ep_length = 0;
    uint8_t lane = 0;
    if (!w.U8("ep address length", &ep_length) ||
        !w.Skip("ep address", ep_length) || !w.U8("ep lane", &lane)) {
      return false;
    }
    last_ep = (lane & kFlagLast) != 0;
  }
  return true;
}

// One device and its interfaces; `addresses` counts interfaces.
bool WalkDevice(Walker& w, size_t* addresses, bool* last_device) {
  const size_t at = w.pos();
  uint8_t md_byte = 0;
  if (!w.U8("md index", &md_byte)) return false;
  const bool empty = (md_byte & kMdEmptyDevice) != 0;
  uint8_t md_index = 0;
  if (!w.Extended("md index", w.v1() ? kMdIndexMaskV1 : kMdIndexMask, md_byte,
                  &md_index)) {
    return false;
  }
  if (md_index >= kMaxMdIndex) {
    return w.Fail(absl::StrFormat("device at offset %d: md index %d (max %d)",
                                  at, md_index, kMaxMdIndex - 1));
  }
  uint8_t device_byte = 0;
  if (!w.U8("device address length", &device_byte)) return false;
  *last_device = (device_byte & kFlagLast) != 0;
  uint8_t length = 0;
  if (!w.Extended("device address length", kDeviceLengthMask, device_byte,
                  &length)) {
    return false;
  }
  if ((device_byte & kDeviceNumPaths) != 0 && !w.Skip("num_paths", 1)) {
    return false;
  }
  if ((device_byte & kDeviceSysDevice) != 0 && !w.Skip("sys_dev", 1)) {
    return false;
  }
  w.opaque.push_back({w.pos(), length});
  w.device_length = length;
  if (!w.Skip("device address", length)) return false;
  for (bool last_iface = empty; !last_iface;) {
    if (++*addresses > kMaxAddresses) {
      return w.Fail(
          absl::StrFormat("more than %d transport addresses", kMaxAddresses));
    }
    if (!WalkIface(w, &last_iface)) return false;
  }
  return true;
}

}  // namespace

std::string UcxVersionString(uint32_t version) {
  return absl::StrFormat("%d.%d.%d", version >> 16 & 0xff, version >> 8 & 0xff,
                         version & 0xff);
}

uint8_t UcxAddressFormat(absl::Span<const uint8_t> address) {
  return address.empty() ? 0xff : address[0] & 0x0f;
}

absl::Status CheckUcxCompatible(uint32_t local_version, uint32_t peer_version,
                                uint8_t peer_format) {
  if ((local_version >> 8) != (peer_version >> 8)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the peer runs UCX %s, this engine UCX %s: flowkv connects only "
        "engines of the same UCX major and minor version",
        UcxVersionString(peer_version), UcxVersionString(local_version)));
  }
  if (peer_format != kUcxAddressFormatV1 &&
      peer_format != kUcxAddressFormatV2) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the peer's worker address has format %d; this engine reads formats "
        "%d and %d (UCX_ADDRESS_VERSION=v1, v2)",
        peer_format, kUcxAddressFormatV1, kUcxAddressFormatV2));
  }
  return absl::OkStatus();
}

namespace {

absl::Status WalkAddress(Walker& w, absl::Span<const uint8_t> address);

}  // namespace

absl::Status CheckUcxWorkerAddress(absl::Span<const uint8_t> address,
                                   absl::Span<const uint8_t> local_address,
                                   std::vector<UcxAddressRange>* opaque) {
  const uint8_t format = UcxAddressFormat(address);
  if (!address.empty() && format != kUcxAddressFormatV1 &&
      format != kUcxAddressFormatV2) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "UCX worker address: format %d, this engine reads formats %d and %d",
        format, kUcxAddressFormatV1, kUcxAddressFormatV2));
  }
  Walker w(address, format == kUcxAddressFormatV1);
  if (absl::Status s = WalkAddress(w, address); !s.ok()) return s;
  if (opaque != nullptr) *opaque = w.opaque;
  if (local_address.empty()) return absl::OkStatus();
  // A transport packs its device and interface addresses at fixed lengths;
  // UCX hands them to the transport's own code (is_reachable, connect)
  // without checking. Compare with the local address's.
  Walker local(local_address,
               UcxAddressFormat(local_address) == kUcxAddressFormatV1);
  if (absl::Status s = WalkAddress(local, local_address); !s.ok()) {
    return absl::InternalError(
        absl::StrCat("the local worker address: ", s.message()));
  }
  // A transport packs its addresses at fixed lengths, except that tcp's
  // device address holds an IPv4 or an IPv6 address (16 - 4 = 12 bytes
  // apart): a remote interface must match one of this worker's interfaces
  // of the same transport, tcp's device length up to the family.
  const uint16_t tcp_csum = ucs_crc16_string("tcp");
  constexpr size_t kIpv6MinusIpv4 = 12;
  for (const Walker::Iface& remote : w.ifaces) {
    const bool tcp = remote.tl_name_csum == tcp_csum;
    const Walker::Iface* same_transport = nullptr;
    bool matched = false;
    for (const Walker::Iface& mine : local.ifaces) {
      if (mine.tl_name_csum != remote.tl_name_csum) continue;
      same_transport = &mine;
      const bool device_ok =
          mine.device_length == remote.device_length ||
          (tcp &&
           (mine.device_length + kIpv6MinusIpv4 == remote.device_length ||
            remote.device_length + kIpv6MinusIpv4 == mine.device_length));
      if (device_ok && mine.iface_length == remote.iface_length) {
        matched = true;
        break;
      }
    }
    if (same_transport != nullptr && !matched) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "UCX worker address (%d bytes): iface at offset %d (transport "
          "checksum 0x%04x) has a %d-byte device and %d-byte iface address; "
          "this UCX packs %d and %d for that transport",
          address.size(), remote.at, remote.tl_name_csum, remote.device_length,
          remote.iface_length, same_transport->device_length,
          same_transport->iface_length));
    }
  }
  return absl::OkStatus();
}

namespace {

absl::Status WalkAddress(Walker& w, absl::Span<const uint8_t> address) {
  uint8_t version_byte = 0;
  uint8_t flags = 0;
  if (!w.U8("header", &version_byte)) return w.status();
  if (w.v1()) {
    flags = version_byte >> 4;  // v1: the flags share the version's byte
  } else if (!w.U8("header flags", &flags)) {
    return w.status();
  }
  if ((flags & ~kKnownHeaderFlags) != 0) {
    w.Fail(absl::StrFormat("unknown header flags 0x%x", flags));
    return w.status();
  }
  // ucp_worker_get_address always packs the uuid (UCX asserts it does); a
  // v1 address has it whatever its flags say.
  if (!w.v1() && (flags & kFlagWorkerUuid) == 0) {
    w.Fail("no worker uuid (header flag 0x2 clear)");
    return w.status();
  }
  if (!w.Skip("worker uuid", 8)) return w.status();
  if ((flags & kFlagClientId) != 0 && !w.Skip("client id", 8)) {
    return w.status();
  }
  if ((flags & kFlagDebugInfo) != 0) {
    uint8_t name_length = 0;
    if (!w.U8("worker name length", &name_length) ||
        !w.Skip("worker name", name_length)) {
      return w.status();
    }
  }
  if (w.remaining() == 0) {
    w.Fail("no device list");
    return w.status();
  }
  if (address[w.pos()] == kNullResource) {  // no devices
    if (w.remaining() != 1) {
      w.Fail(absl::StrFormat("%d trailing bytes after the empty device list",
                             w.remaining() - 1));
    }
    return w.status();
  }
  size_t addresses = 0;
  for (bool last_device = false; !last_device;) {
    if (!WalkDevice(w, &addresses, &last_device)) return w.status();
  }
  if (w.remaining() != 0) {
    w.Fail(absl::StrFormat("%d trailing bytes after the last device",
                           w.remaining()));
  }
  return w.status();
}

}  // namespace

}  // namespace flowkv::internal
