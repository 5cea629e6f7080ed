// SPDX-License-Identifier: Apache-2.0
// The numerical kernels of flowkv-cluster's model: matrix products (BLAS or
// plain loops), RMSNorm, rotary position embeddings, SwiGLU, attention of
// one query head over a sequence of keys, greedy argmax.
//
// Exactness. Every kernel computes each output with a fixed sequence of
// float operations that depends only on the sizes, never on the address or
// alignment of its inputs or on other rows of a batch: reductions keep
// eight partial sums in a fixed lane order (lane = index % 8) and add them
// in a fixed tree; attention visits keys in position order; the loop
// matrix product computes each row alone (its result for a row is the same
// whatever the other rows of the batch). So the same
// inputs give bit-identical outputs wherever they are stored, e.g. K/V read
// from an SGLang pool with 16-token blocks or from a vLLM pool with 32-token
// blocks. BLAS runs single-threaded (ForceSingleThreadedBlas) and is called
// on 64-byte aligned buffers of fixed shapes, so it too repeats itself run
// to run; it differs from the loops in the last bits.
//
// Thread safety: thread-safe (pure functions on caller-owned memory).

#ifndef FLOWKV_TOOLS_CLUSTER_MODEL_MODEL_KERNELS_H_
#define FLOWKV_TOOLS_CLUSTER_MODEL_MODEL_KERNELS_H_

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>
#include <vector>

namespace flowkv::cluster::kernels {

// A std::allocator for 64-byte aligned float buffers.
template <typename T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U>&) {}  // NOLINT
  T* allocate(size_t n) {
    const size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, bytes == 0 ? 64 : bytes);
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <typename U>
  bool operator==(const AlignedAllocator<U>&) const {
    return true;
  }
};
using FloatBuffer = std::vector<float, AlignedAllocator<float>>;

// Limits OpenBLAS to one thread (idempotent; no-op without BLAS).
void ForceSingleThreadedBlas();

// y[rows][out] = x[rows][in] * w[in][out] (row-major). With `use_blas`
// (REQUIRES: BlasAvailable()) cblas_sgemm, or cblas_sgemv for one row;
// otherwise loops that add x[r][k] * w[k][j] over k in increasing order.
void MatMul(bool use_blas, const float* x, int rows, int in, const float* w,
            int out, float* y);

// Sum of a[i] * b[i] in eight lanes (see the file comment).
float Dot(const float* a, const float* b, int n);

// y = x / sqrt(mean(x^2) + eps) * weight.
void RmsNorm(const float* x, const float* weight, int n, float eps, float* y);

// Rotates pairs (i, i + head_dim / 2) of `vec` by the angles whose cosines
// and sines are cos_row[i], sin_row[i] (i < head_dim / 2).
void ApplyRope(float* vec, int head_dim, const float* cos_row,
               const float* sin_row);

// out[i] = silu(gate[i]) * up[i] (SwiGLU); silu(g) = g / (1 + exp(-g)).
void SwiGlu(const float* gate, const float* up, int n, float* out);

// out += scale * x.
void AddScaled(float* out, const float* x, float scale, int n);

// The index of the largest value, the lowest on ties.
int Argmax(const float* values, int n);

// The exp used by the softmax (std::exp in float).
float SoftmaxExp(float x);

// Attention of `group` query heads that share one KV head (grouped-query
// attention), over keys 0..num_keys-1: for each head h,
//   out_h = sum_j softmax_j(dot(q_h, key_j) * scale) * value_j.
// q and out hold the group's heads back to back (group * head_dim floats);
// `scores` is group * num_keys floats of scratch. for_each_kv(f) must call
// f(j, key_j, value_j) for j = 0, 1, ..., num_keys - 1 in that order, each
// pointer to head_dim floats; it is called twice. Every head's result
// depends on the values only (keys summed in order j), not on where they
// are stored or on the group size.
template <typename ForEachKv>
void AttendGroup(const float* q, int group, int head_dim, int64_t num_keys,
                 float scale, const ForEachKv& for_each_kv, float* scores,
                 float* out) {
  for_each_kv([&](int64_t j, const float* key, const float*) {
    for (int h = 0; h < group; ++h) {
      scores[h * num_keys + j] = Dot(q + h * head_dim, key, head_dim) * scale;
    }
  });
  for (int h = 0; h < group; ++h) {
    float* head_scores = scores + h * num_keys;
    float max_score = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < num_keys; ++j) {
      if (head_scores[j] > max_score) max_score = head_scores[j];
    }
    float total = 0.0f;
    for (int64_t j = 0; j < num_keys; ++j) {
      head_scores[j] = SoftmaxExp(head_scores[j] - max_score);
      total += head_scores[j];
    }
    const float inv_total = 1.0f / total;
    for (int64_t j = 0; j < num_keys; ++j) head_scores[j] *= inv_total;
  }
  for (int i = 0; i < group * head_dim; ++i) out[i] = 0.0f;
  for_each_kv([&](int64_t j, const float*, const float* value) {
    for (int h = 0; h < group; ++h) {
      AddScaled(out + h * head_dim, value, scores[h * num_keys + j], head_dim);
    }
  });
}

}  // namespace flowkv::cluster::kernels

#endif  // FLOWKV_TOOLS_CLUSTER_MODEL_MODEL_KERNELS_H_
