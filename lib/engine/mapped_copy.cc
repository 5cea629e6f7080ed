// SPDX-License-Identifier: Apache-2.0
// Copies into and out of peer memory that UCX maps into this process (see
// mapped_copy.h for why the engine copies these windows itself). Calls only
// ucp_rkey_ptr and the C library.
#include "lib/engine/mapped_copy.h"

#include <atomic>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace flowkv::internal {

#if defined(__x86_64__)
namespace {

// `n` bytes, `dst` 32-byte aligned, in 128-byte blocks (the tail is the
// caller's); returns the bytes copied.
__attribute__((target("avx2"))) size_t StreamAvx2(char* dst, const char* src,
                                                  size_t n) {
  const size_t blocks = n / 128;
  auto* out = reinterpret_cast<__m256i*>(dst);
  const auto* in = reinterpret_cast<const __m256i*>(src);
  for (size_t i = 0; i < blocks; ++i, out += 4, in += 4) {
    const __m256i a = _mm256_loadu_si256(in);
    const __m256i b = _mm256_loadu_si256(in + 1);
    const __m256i c = _mm256_loadu_si256(in + 2);
    const __m256i d = _mm256_loadu_si256(in + 3);
    _mm256_stream_si256(out, a);
    _mm256_stream_si256(out + 1, b);
    _mm256_stream_si256(out + 2, c);
    _mm256_stream_si256(out + 3, d);
  }
  return blocks * 128;
}

// The same with SSE2 (every x86-64), 64-byte blocks, `dst` 16-byte aligned.
size_t StreamSse2(char* dst, const char* src, size_t n) {
  const size_t blocks = n / 64;
  auto* out = reinterpret_cast<__m128i*>(dst);
  const auto* in = reinterpret_cast<const __m128i*>(src);
  for (size_t i = 0; i < blocks; ++i, out += 4, in += 4) {
    const __m128i a = _mm_loadu_si128(in);
    const __m128i b = _mm_loadu_si128(in + 1);
    const __m128i c = _mm_loadu_si128(in + 2);
    const __m128i d = _mm_loadu_si128(in + 3);
    _mm_stream_si128(out, a);
    _mm_stream_si128(out + 1, b);
    _mm_stream_si128(out + 2, c);
    _mm_stream_si128(out + 3, d);
  }
  return blocks * 64;
}

const bool kHasAvx2 = __builtin_cpu_supports("avx2");

}  // namespace
#endif

char* MappedPeerAddress(ucp_rkey_h rkey, uint64_t remote_address) {
#if defined(__SANITIZE_THREAD__)
  // Under ThreadSanitizer the copy stays UCX's: TSan does not see UCX's
  // shared-memory messages, so it would take this instrumented copy and the
  // receiver's reads after the notification for a race.
  (void)remote_address;
  return nullptr;
#endif
  if (rkey == nullptr) return nullptr;
  void* local = nullptr;
  if (ucp_rkey_ptr(rkey, remote_address, &local) != UCS_OK) return nullptr;
  return static_cast<char*>(local);
}

void CopyToMapped(char* dst, const char* src, size_t n) {
#if defined(__x86_64__)
  if (n >= kStreamingCopyMin) {
    // Align the destination to 32 bytes, stream the blocks, copy the tail,
    // then fence the streaming stores.
    const size_t head = (32 - (reinterpret_cast<uintptr_t>(dst) & 31)) & 31;
    std::memcpy(dst, src, head);
    dst += head;
    src += head;
    n -= head;
    const size_t done =
        kHasAvx2 ? StreamAvx2(dst, src, n) : StreamSse2(dst, src, n);
    std::memcpy(dst + done, src + done, n - done);
    _mm_sfence();
    return;
  }
#endif
  std::memcpy(dst, src, n);
  std::atomic_thread_fence(std::memory_order_release);
}

}  // namespace flowkv::internal
