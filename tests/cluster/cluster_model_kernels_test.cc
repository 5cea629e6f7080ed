// SPDX-License-Identifier: Apache-2.0
// Unit checks of flowkv-cluster's model kernels (tools/cluster/model/
// model_kernels.h): RMSNorm, RoPE, SwiGLU, the matrix products against a
// double-precision product, attention of one head, and the exactness
// properties the disaggregated runs rely on (results independent of
// addresses, alignment and batch rows).

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "tools/cluster/model/model_config.h"
#include "tools/cluster/model/model_kernels.h"

namespace flowkv::cluster {
namespace {

using kernels::FloatBuffer;

std::vector<float> RandomFloats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> values(n);
  for (float& v : values) v = dist(rng);
  return values;
}

bool BitEqual(const float* a, const float* b, size_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

TEST_CASE("RmsNorm scales to unit root mean square times the weight",
          "[cluster_model]") {
  const int n = 37;
  const std::vector<float> x = RandomFloats(n, 1, 3.0f);
  const std::vector<float> w = RandomFloats(n, 2);
  std::vector<float> y(n);
  kernels::RmsNorm(x.data(), w.data(), n, 1e-5f, y.data());
  double mean_square = 0;
  for (float v : x) mean_square += double{v} * v;
  mean_square /= n;
  const double inv = 1.0 / std::sqrt(mean_square + 1e-5);
  for (int i = 0; i < n; ++i) {
    CHECK(y[i] == Approx(x[i] * inv * w[i]).epsilon(1e-5).margin(1e-6));
  }
}

TEST_CASE(
    "RoPE rotates pairs: identity at position 0, norms kept, scores "
    "depend on the relative position only",
    "[cluster_model]") {
  const int head_dim = 16;
  const int half = head_dim / 2;
  auto tables = [&](int pos) {
    std::vector<float> cos_row(half), sin_row(half);
    for (int i = 0; i < half; ++i) {
      const double angle = pos * std::pow(10000.0, -2.0 * i / head_dim);
      cos_row[i] = static_cast<float>(std::cos(angle));
      sin_row[i] = static_cast<float>(std::sin(angle));
    }
    return std::pair(cos_row, sin_row);
  };
  const std::vector<float> q = RandomFloats(head_dim, 3);
  const std::vector<float> k = RandomFloats(head_dim, 4);

  std::vector<float> at0 = q;
  auto [c0, s0] = tables(0);
  kernels::ApplyRope(at0.data(), head_dim, c0.data(), s0.data());
  CHECK(at0 == q);

  auto rotated_dot = [&](int m, int n) {
    std::vector<float> qm = q, kn = k;
    auto [cm, sm] = tables(m);
    auto [cn, sn] = tables(n);
    kernels::ApplyRope(qm.data(), head_dim, cm.data(), sm.data());
    kernels::ApplyRope(kn.data(), head_dim, cn.data(), sn.data());
    double norm_q = 0, norm_qm = 0;
    for (int i = 0; i < head_dim; ++i) {
      norm_q += double{q[i]} * q[i];
      norm_qm += double{qm[i]} * qm[i];
    }
    CHECK(norm_qm == Approx(norm_q).epsilon(1e-5));
    return kernels::Dot(qm.data(), kn.data(), head_dim);
  };
  CHECK(rotated_dot(7, 3) == Approx(rotated_dot(104, 100)).epsilon(1e-4));
  CHECK(rotated_dot(5, 5) == Approx(rotated_dot(0, 0)).epsilon(1e-4));
  // A pair (i, i + half) turns by pos * theta^(-2i/d): pair 0 by pos rad.
  std::vector<float> unit(head_dim, 0.0f);
  unit[0] = 1.0f;
  auto [c1, s1] = tables(1);
  kernels::ApplyRope(unit.data(), head_dim, c1.data(), s1.data());
  CHECK(unit[0] == Approx(std::cos(1.0)));
  CHECK(unit[half] == Approx(std::sin(1.0)));
}

TEST_CASE("SwiGLU is silu(gate) * up", "[cluster_model]") {
  const std::vector<float> gate = {0.0f, 1.0f, -2.0f, 20.0f, -30.0f};
  const std::vector<float> up = {5.0f, 2.0f, 1.0f, 0.5f, 3.0f};
  std::vector<float> out(gate.size());
  kernels::SwiGlu(gate.data(), up.data(), static_cast<int>(gate.size()),
                  out.data());
  CHECK(out[0] == 0.0f);
  CHECK(out[1] == Approx(1.0 / (1.0 + std::exp(-1.0)) * 2.0));
  CHECK(out[2] == Approx(-2.0 / (1.0 + std::exp(2.0))));
  CHECK(out[3] == Approx(10.0).epsilon(1e-6));
  CHECK(std::abs(out[4]) < 1e-10);
}

TEST_CASE("MatMul matches a double product, for each backend",
          "[cluster_model]") {
  const int rows = 13, in = 70, out = 601;
  const std::vector<float> x = RandomFloats(static_cast<size_t>(rows) * in, 5);
  const std::vector<float> w = RandomFloats(static_cast<size_t>(in) * out, 6);
  std::vector<bool> backends = {false};
  if (BlasAvailable()) backends.push_back(true);
  for (bool use_blas : backends) {
    INFO("blas " << use_blas);
    std::vector<float> y(static_cast<size_t>(rows) * out);
    kernels::MatMul(use_blas, x.data(), rows, in, w.data(), out, y.data());
    for (int r = 0; r < rows; ++r) {
      for (int j = 0; j < out; ++j) {
        double want = 0;
        for (int k = 0; k < in; ++k) {
          want += double{x[static_cast<size_t>(r) * in + k]} *
                  w[static_cast<size_t>(k) * out + j];
        }
        REQUIRE(y[static_cast<size_t>(r) * out + j] ==
                Approx(want).margin(1e-4));
      }
    }
    // One row alone (the gemv path for BLAS) agrees within rounding.
    std::vector<float> y1(out);
    kernels::MatMul(use_blas, x.data() + 4 * in, 1, in, w.data(), out,
                    y1.data());
    for (int j = 0; j < out; ++j) {
      REQUIRE(y1[j] ==
              Approx(y[4 * static_cast<size_t>(out) + j]).margin(1e-4));
    }
  }
}

TEST_CASE(
    "The loop MatMul gives each row bit-identically alone or in a "
    "batch, at any address",
    "[cluster_model]") {
  const int rows = 9, in = 64, out = 130;
  const std::vector<float> x = RandomFloats(static_cast<size_t>(rows) * in, 7);
  const std::vector<float> w = RandomFloats(static_cast<size_t>(in) * out, 8);
  std::vector<float> batch(static_cast<size_t>(rows) * out);
  kernels::MatMul(false, x.data(), rows, in, w.data(), out, batch.data());
  for (int r = 0; r < rows; ++r) {
    // The row copied to an odd (unaligned) address.
    std::vector<float> shifted(in + 1);
    std::memcpy(shifted.data() + 1, x.data() + static_cast<size_t>(r) * in,
                sizeof(float) * in);
    std::vector<float> alone(out + 3);
    kernels::MatMul(false, shifted.data() + 1, 1, in, w.data(), out,
                    alone.data() + 3);
    REQUIRE(BitEqual(alone.data() + 3,
                     batch.data() + static_cast<size_t>(r) * out, out));
  }
}

TEST_CASE("Dot is bit-identical at any alignment and sums in eight lanes",
          "[cluster_model]") {
  for (int n : {1, 7, 8, 9, 64, 67}) {
    INFO("n " << n);
    const std::vector<float> a = RandomFloats(n, 9);
    const std::vector<float> b = RandomFloats(n, 10);
    const float aligned = kernels::Dot(a.data(), b.data(), n);
    for (int shift = 1; shift < 4; ++shift) {
      std::vector<float> a2(n + shift), b2(n + 2 * shift);
      std::memcpy(a2.data() + shift, a.data(), sizeof(float) * n);
      std::memcpy(b2.data() + 2 * shift, b.data(), sizeof(float) * n);
      const float moved =
          kernels::Dot(a2.data() + shift, b2.data() + 2 * shift, n);
      REQUIRE(std::memcmp(&aligned, &moved, sizeof(float)) == 0);
    }
    double want = 0;
    for (int i = 0; i < n; ++i) want += double{a[i]} * b[i];
    CHECK(aligned == Approx(want).margin(1e-5));
  }
}

TEST_CASE(
    "AttendGroup is softmax-weighted values per head, the same for a "
    "head alone or in its group",
    "[cluster_model]") {
  const int head_dim = 8;
  const int keys = 5;
  const int group = 3;
  const std::vector<float> q = RandomFloats(size_t{group} * head_dim, 11);
  const std::vector<float> k = RandomFloats(size_t{keys} * head_dim, 12);
  const std::vector<float> v = RandomFloats(size_t{keys} * head_dim, 13);
  const float scale = 0.35f;
  auto attend = [&](const float* queries, int heads,
                    const std::vector<float>& key_values) {
    std::vector<float> scores(static_cast<size_t>(heads) * keys);
    std::vector<float> out(static_cast<size_t>(heads) * head_dim);
    kernels::AttendGroup(
        queries, heads, head_dim, keys, scale,
        [&](const auto& f) {
          for (int j = 0; j < keys; ++j) {
            f(j, &key_values[j * head_dim], &v[j * head_dim]);
          }
        },
        scores.data(), out.data());
    return out;
  };
  const std::vector<float> out = attend(q.data(), group, k);
  for (int h = 0; h < group; ++h) {
    std::vector<double> p(keys);
    double total = 0;
    for (int j = 0; j < keys; ++j) {
      double s = 0;
      for (int i = 0; i < head_dim; ++i) {
        s += double{q[h * head_dim + i]} * k[j * head_dim + i];
      }
      p[j] = std::exp(s * scale);
      total += p[j];
    }
    for (int i = 0; i < head_dim; ++i) {
      double want = 0;
      for (int j = 0; j < keys; ++j) {
        want += p[j] / total * v[j * head_dim + i];
      }
      CHECK(out[h * head_dim + i] == Approx(want).margin(1e-6));
    }
    // The head alone: bit-identical.
    const std::vector<float> alone = attend(&q[h * head_dim], 1, k);
    CHECK(BitEqual(alone.data(), &out[h * head_dim], head_dim));
  }
  // Equal keys: the mean of the values.
  const std::vector<float> same_k(static_cast<size_t>(keys) * head_dim, 0.5f);
  const std::vector<float> mean = attend(q.data(), 1, same_k);
  for (int i = 0; i < head_dim; ++i) {
    double want = 0;
    for (int j = 0; j < keys; ++j) want += v[j * head_dim + i];
    CHECK(mean[i] == Approx(want / keys).margin(1e-6));
  }
}

TEST_CASE("Argmax picks the largest value, the lowest index on ties",
          "[cluster_model]") {
  const std::vector<float> values = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f};
  CHECK(kernels::Argmax(values.data(), 5) == 1);
  CHECK(kernels::Argmax(values.data(), 1) == 0);
}

}  // namespace
}  // namespace flowkv::cluster
