// SPDX-License-Identifier: Apache-2.0
// A structural check of a packed UCX worker address (ucp_worker_get_address
// bytes) before any of it reaches ucp_ep_create. UCX's own parser
// (ucp_address_unpack, src/ucp/wireup/address.c) trusts its input: it reads
// past the end of a truncated address and aborts the process
// (ucs_assertv_always) on an unknown address version. An address arrives
// from a peer (AddPeer metadata, an AddPeer hello), so flowkv walks it here
// first, every length checked against the bytes left.
//
// The formats are the two UCX 1.13 reads (UCX_ADDRESS_VERSION; v1 is
// 1.13's default, v2 the later one) in non-unified mode, all integers
// little-endian; "ext" is a value whose all-ones marks the real value in
// the next byte, in v2 only:
//
//   header   v1: u8 (flags << 4 | 0)   v2: u8 (proto << 4 | 1)  u8 flags
//            u64 uuid (v1 always; v2 if flags & 2, which
//            ucp_worker_get_address always sets)
//            [u64 client_id if flags & 4]
//            [u8 n, n bytes worker name if flags & 1]
//   devices  0xff alone (no device), or until a device marked last:
//     md       u8 (empty_dev 0x80 | md_index: v1 5 bits, v2 7 bits ext)
//     dev len  u8 (last 0x80 | num_paths 0x40 | sys_dev 0x20 | len 5 bits
//              ext)  [u8 num_paths] [u8 sys_dev]  len bytes
//     ifaces   unless empty_dev, until an iface marked last:
//       u16 tl_name_csum  attributes (v1 16 bytes, v2 8 bytes)
//       u8 (last 0x80 | has_ep 0x40 | len 6 bits ext)  len bytes
//       eps    while has_ep, until a lane byte marked last (at most 6):
//              u8 len  len bytes  u8 (last 0x80 | lane)
//
// It checks the structure (version bits, known flags, lengths within the
// blob, the counts UCX bounds, no trailing bytes) and the interfaces'
// performance figures that UCX's lane selection asserts on (finite, not
// negative: a NaN or negative score aborts in select.c); the addresses
// inside are the transports' to judge, and UCX 1.13's transports trust
// them: a token holder can still crash a peer through them (the posix
// transport asserts on a segment id whose flags it does not expect;
// docs/security.md). Unified mode packs no lengths (the receiver takes them
// from its own interfaces), so it cannot be checked here and flowkv does
// not support it.
//
// Thread safety: thread-safe (pure functions).

#ifndef FLOWKV_LIB_ENGINE_WIREUP_UCX_ADDRESS_H_
#define FLOWKV_LIB_ENGINE_WIREUP_UCX_ADDRESS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace flowkv::internal {

// The address formats (the header's low 4 bits) this check reads:
// UCP_OBJECT_VERSION_V1 and _V2. UCX 1.13 aborts on any other.
inline constexpr uint8_t kUcxAddressFormatV1 = 0;
inline constexpr uint8_t kUcxAddressFormatV2 = 1;

// A UCX library version as ucp_get_version reports it, packed
// major << 16 | minor << 8 | release.
inline constexpr uint32_t PackUcxVersion(unsigned major, unsigned minor,
                                         unsigned release) {
  return (major & 0xff) << 16 | (minor & 0xff) << 8 | (release & 0xff);
}
std::string UcxVersionString(uint32_t version);

// The address format of a packed worker address (its first byte's low 4
// bits); 0xff for an empty one.
uint8_t UcxAddressFormat(absl::Span<const uint8_t> address);

// Whether the local UCX (`local_version`) reads addresses that a peer
// running `peer_version` wrote in `peer_format`: the same major and minor
// version (UCX changes its address format between minor versions) and
// format v1 or v2. FailedPrecondition naming both otherwise.
absl::Status CheckUcxCompatible(uint32_t local_version, uint32_t peer_version,
                                uint8_t peer_format);

// A range of bytes in an address.
struct UcxAddressRange {
  size_t offset = 0;
  size_t length = 0;
};

// OK when `address` has the structure above; InvalidArgument naming the
// offset and the field otherwise (truncation, a length past the end, an
// unknown version or flag, too many interfaces or endpoint addresses,
// trailing bytes, a NaN or negative performance figure, or - given
// `local_address`, this worker's own - a transport whose device or
// interface address length differs from the local one of the same
// transport). FailedPrecondition for a format other than v1 and v2. On
// success `opaque` (optional) gets the device and interface address bodies,
// whose content only the transport can judge.
absl::Status CheckUcxWorkerAddress(
    absl::Span<const uint8_t> address,
    absl::Span<const uint8_t> local_address = {},
    std::vector<UcxAddressRange>* opaque = nullptr);

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_ENGINE_WIREUP_UCX_ADDRESS_H_
