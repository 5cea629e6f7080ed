// SPDX-License-Identifier: Apache-2.0
// The engine's own copy for a peer region that UCX maps into this process
// (shared-memory transports: ucp_rkey_ptr gives a local address for the
// peer's bytes). PostWindow copies such windows itself instead of posting
// ucp_put_nbx / ucp_get_nbx.
//
// Why: UCX's shared-memory put is a glibc memcpy of each window (at most
// max_window_bytes, 4 MiB by default). glibc switches to non-temporal
// stores only above a threshold derived from the last-level cache (about
// 3/4 of its per-thread share: tens to hundreds of MiB on servers), so a
// window is copied with ordinary stores: every destination line is read
// first and then evicted, about 1.5x the CPU time of the single large
// memcpy the same bytes would take (process_cpu_ms of
// benchmarks/transfer_benchmark.cc, flowkv against memcpy). A KV cache
// written to a peer is not read back by this process, so windows of at
// least kStreamingCopyMin bytes are copied with streaming (non-temporal)
// stores here; smaller ones with memcpy.
//
// Thread safety: the functions are thread-safe (they touch only their
// arguments).

#ifndef FLOWKV_LIB_ENGINE_MAPPED_COPY_H_
#define FLOWKV_LIB_ENGINE_MAPPED_COPY_H_

#include <cstddef>
#include <cstdint>
#include <ucp/api/ucp.h>

namespace flowkv::internal {

// Copies at least this many bytes with streaming stores.
inline constexpr size_t kStreamingCopyMin = size_t{32} << 10;

// The local address of `remote_address` of a peer region whose unpacked
// key is `rkey`, or null when no transport of the key maps it here (tcp,
// cma, a GPU region), and always null under ThreadSanitizer (see the .cc).
// Progress thread (it calls UCX).
char* MappedPeerAddress(ucp_rkey_h rkey, uint64_t remote_address);

// Copies `n` bytes from `src` to `dst` (which do not overlap); the stores
// are globally visible when it returns (a store fence), so a message sent
// afterwards on any endpoint is seen after them.
void CopyToMapped(char* dst, const char* src, size_t n);

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_ENGINE_MAPPED_COPY_H_
