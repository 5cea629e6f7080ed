// SPDX-License-Identifier: Apache-2.0
// CUDA kernels for KV layout work: the device versions of the functions in
// "flowkv/layout_convert.h" (the CPU reference, which is their
// specification: a device call writes the same bytes the host call would).
// Part of the optional library flowkv::cuda, built when nvcc is found; this
// header needs no CUDA headers and no nvcc.
//
// Every call validates its arguments on the host (the same checks, with the
// same status codes, as the CPU reference), then enqueues kernels on `stream`
// and returns without waiting. An OK status means the work was enqueued;
// errors of the kernels themselves surface on the stream (check them with
// cudaStreamSynchronize). The block lists and region bases are copied into
// the kernel arguments, so the caller may reuse them as soon as the call
// returns; the device memory must stay valid until the stream has run the
// work.
//
//   cudaStream_t stream = ...;
//   absl::Status s = flowkv::cuda::ConvertBlocksAsync(
//       vllm_layout, layer_bases, src_blocks, flowkv_layout, {&pool, 1},
//       dst_blocks, stream);
//
// CUDA errors are converted to absl::Status: FailedPrecondition when no
// usable GPU or driver is present, InvalidArgument for arguments CUDA
// rejects, ResourceExhausted for out of memory, Internal otherwise.
//
// Thread safety: thread-safe; concurrent calls must not write the same
// destination bytes unless ordered by their streams.

#ifndef FLOWKV_CUDA_LAYOUT_KERNELS_H_
#define FLOWKV_CUDA_LAYOUT_KERNELS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "flowkv/block_list.h"
#include "flowkv/export.h"
#include "flowkv/kv_layout.h"

// CUDA's stream type is `CUstream_st*` (cudaStream_t); declaring the struct
// lets callers pass a cudaStream_t without this header including CUDA's.
struct CUstream_st;

namespace flowkv::cuda {

// A cudaStream_t. nullptr is the legacy default stream.
using Stream = ::CUstream_st*;

// The most (layer, part) tensors (num_layers * num_parts) a pool may have in
// these kernels: more is InvalidArgument. Any number of regions.
inline constexpr uint32_t kMaxTensors = 256;

// Device version of flowkv::ConvertBlocks: the same validation and the same
// bytes written, on device-accessible memory (device, managed or mapped
// pinned host memory), ordered on `stream`.
// REQUIRES: as ConvertBlocks, with device-accessible regions.
FLOWKV_EXPORT absl::Status ConvertBlocksAsync(
    const KvLayout& src_layout, absl::Span<const void* const> src_region_bases,
    const BlockList& src_blocks, const KvLayout& dst_layout,
    absl::Span<void* const> dst_region_bases, const BlockList& dst_blocks,
    Stream stream);

// Device version of flowkv::PackBlocks (same staging format).
FLOWKV_EXPORT absl::Status PackBlocksAsync(
    const KvLayout& layout, absl::Span<const void* const> region_bases,
    const BlockList& blocks, void* staging, uint64_t staging_bytes,
    Stream stream);

// Device version of flowkv::UnpackBlocks (same staging format).
FLOWKV_EXPORT absl::Status UnpackBlocksAsync(
    const void* staging, uint64_t staging_bytes, const KvLayout& layout,
    absl::Span<void* const> region_bases, const BlockList& blocks,
    Stream stream);

}  // namespace flowkv::cuda

#endif  // FLOWKV_CUDA_LAYOUT_KERNELS_H_
