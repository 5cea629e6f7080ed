// SPDX-License-Identifier: Apache-2.0
// The model's numerical kernels (model_kernels.h): the BLAS calls (when the
// build has OpenBLAS: FLOWKV_CLUSTER_HAVE_BLAS) and the loop versions.
// Nothing here may make a result depend on addresses, alignment or thread
// count (see "Exactness" in the header).

#include "tools/cluster/model/model_kernels.h"

#include <algorithm>
#include <cmath>
#include <mutex>

#include "tools/cluster/model/model_config.h"

#if FLOWKV_CLUSTER_HAVE_BLAS
#include <cblas.h>
#endif

// The loops (matrix product, dot product, scaled add) are compiled for AVX2
// too and picked at run time: the same multiplications and additions in the
// same order per element or lane (no FMA: C++20 mode compiles with
// -ffp-contract=off), only wider. Not under the sanitizers: the resolver of
// a target clone runs while the dynamic loader relocates the program, before
// ThreadSanitizer's run time starts, and its instrumented code crashes there.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
#define FLOWKV_CLUSTER_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FLOWKV_CLUSTER_CLONES
#endif

namespace flowkv::cluster {

bool BlasAvailable() { return FLOWKV_CLUSTER_HAVE_BLAS != 0; }

namespace kernels {
namespace {

// Rows of x per pass over a tile of w, and columns of y per tile: a tile of
// four rows of y stays in L1 while w streams through once per four rows.
constexpr int kRowBlock = 4;
constexpr int kColTile = 512;

FLOWKV_CLUSTER_CLONES
void MatMulLoops(const float* x, int rows, int in, const float* w, int out,
                 float* y) {
  for (int r0 = 0; r0 < rows; r0 += kRowBlock) {
    const int nr = std::min(kRowBlock, rows - r0);
    for (int j0 = 0; j0 < out; j0 += kColTile) {
      const int nj = std::min(kColTile, out - j0);
      for (int r = 0; r < nr; ++r) {
        std::fill_n(y + static_cast<size_t>(r0 + r) * out + j0, nj, 0.0f);
      }
      for (int k = 0; k < in; ++k) {
        const float* __restrict wk = w + static_cast<size_t>(k) * out + j0;
        for (int r = 0; r < nr; ++r) {
          const float xv = x[static_cast<size_t>(r0 + r) * in + k];
          float* __restrict yr = y + static_cast<size_t>(r0 + r) * out + j0;
          for (int j = 0; j < nj; ++j) yr[j] += xv * wk[j];
        }
      }
    }
  }
}

}  // namespace

void ForceSingleThreadedBlas() {
#if FLOWKV_CLUSTER_HAVE_BLAS
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
#endif
}

void MatMul(bool use_blas, const float* x, int rows, int in, const float* w,
            int out, float* y) {
#if FLOWKV_CLUSTER_HAVE_BLAS
  if (use_blas) {
    if (rows == 1) {
      cblas_sgemv(CblasRowMajor, CblasTrans, in, out, 1.0f, w, out, x, 1, 0.0f,
                  y, 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, out, in,
                  1.0f, x, in, w, out, 0.0f, y, out);
    }
    return;
  }
#else
  (void)use_blas;
#endif
  MatMulLoops(x, rows, in, w, out, y);
}

FLOWKV_CLUSTER_CLONES
float Dot(const float* a, const float* b, int n) {
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) lane[l] += a[i + l] * b[i + l];
  }
  for (int l = 0; i < n; ++i, ++l) lane[l] += a[i] * b[i];
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
         ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

void RmsNorm(const float* x, const float* weight, int n, float eps, float* y) {
  const float mean_square = Dot(x, x, n) / static_cast<float>(n);
  const float inv = 1.0f / std::sqrt(mean_square + eps);
  for (int i = 0; i < n; ++i) y[i] = x[i] * inv * weight[i];
}

void ApplyRope(float* vec, int head_dim, const float* cos_row,
               const float* sin_row) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    const float a = vec[i];
    const float b = vec[i + half];
    vec[i] = a * cos_row[i] - b * sin_row[i];
    vec[i + half] = a * sin_row[i] + b * cos_row[i];
  }
}

void SwiGlu(const float* gate, const float* up, int n, float* out) {
  for (int i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

FLOWKV_CLUSTER_CLONES
void AddScaled(float* out, const float* x, float scale, int n) {
  for (int i = 0; i < n; ++i) out[i] += scale * x[i];
}

int Argmax(const float* values, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i) {
    if (values[i] > values[best]) best = i;
  }
  return best;
}

float SoftmaxExp(float x) { return std::exp(x); }

}  // namespace kernels
}  // namespace flowkv::cluster
