// SPDX-License-Identifier: Apache-2.0
// ModelConfig: the shape of flowkv-cluster's model (a small decoder-only
// transformer run on the CPU), and the KV cache pools a node must create to
// hold its keys and values.
//
// The model: a byte-level vocabulary (tokens 0..255 are bytes, token 256 is
// end-of-sequence), `layers` blocks of RMSNorm -> grouped-query attention
// with rotary position embeddings -> residual, RMSNorm -> SwiGLU MLP ->
// residual, a final RMSNorm and an output projection to the vocabulary.
// Every weight comes from `seed` (the same seed gives the same model on
// every machine). The KV cache holds float32 keys (after RoPE) and values:
// `dtype_bytes` 4, two parts (K, V), `kv_heads` heads of `head_dim` values.
//
//   flowkv::cluster::ModelConfig config;          // 8 x 512, 8 q / 2 kv heads
//   absl::StatusOr<flowkv::KvLayout> layout = flowkv::cluster::MakeKvLayout(
//       config, flowkv::cluster::KvPreset::kSglangMha,
//       /*num_blocks=*/1024, /*block_tokens=*/16);
//
// Thread safety: plain values and pure functions (thread-safe).

#ifndef FLOWKV_TOOLS_CLUSTER_MODEL_MODEL_CONFIG_H_
#define FLOWKV_TOOLS_CLUSTER_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "flowkv/kv_layout.h"

namespace flowkv::cluster {

// How prefill's matrix products run (decode always runs the loops: see
// model.h, "Exactness"). Each gives the same results run to run
// (single-threaded, fixed summation order); the two differ from each other
// in the last bits, so a cluster and its colocated reference must use the
// same one.
enum class MatmulBackend : uint8_t {
  // BLAS when this build has it (BlasAvailable()), else kLoops.
  kAuto = 0,
  // OpenBLAS cblas_sgemm / cblas_sgemv, forced to one thread.
  kBlas = 1,
  // Plain C++ loops.
  kLoops = 2,
};

// True when this build links a BLAS (CMake FLOWKV_WITH_BLAS found one).
bool BlasAvailable();

// "blas" or "loops": the backend kAuto resolves to in this build, or the
// name of `backend` otherwise.
std::string_view MatmulBackendName(MatmulBackend backend);

struct ModelConfig {
  // Default: 8 layers, d_model 512, 8 query heads and 2 KV heads of 64
  // (grouped-query attention, 4 query heads per KV head), SwiGLU hidden
  // size 1408.
  int layers = 8;
  int d_model = 512;
  int q_heads = 8;
  int kv_heads = 2;
  int head_dim = 64;
  int ffn_dim = 1408;
  // Default: 257, bytes 0..255 and eos_token.
  int vocab = 257;
  int eos_token = 256;
  // The most positions a request may use (prompt + generated tokens).
  // Default: 4096.
  int max_context = 4096;
  // Default: 0x5eed. Every weight is a function of the seed alone.
  uint64_t seed = 0x5eed;
  // RoPE base. Default: 10000.
  double rope_theta = 10000.0;
  // Added to the mean square in RMSNorm. Default: 1e-5.
  float norm_eps = 1e-5f;
  // Default: kAuto.
  MatmulBackend backend = MatmulBackend::kAuto;
};

// OK for a usable config; InvalidArgument naming the field otherwise: a
// size <= 0, q_heads * head_dim != d_model, q_heads not a multiple of
// kv_heads, an odd head_dim (RoPE rotates pairs), vocab < 257 (the bytes and
// one more) or eos_token not in [256, vocab), max_context over 1 << 20,
// weights and RoPE tables over 1 << 30 floats (4 GiB), rope_theta <= 1,
// norm_eps <= 0.
// FailedPrecondition when kBlas is asked of a build without BLAS.
absl::Status ValidateConfig(const ModelConfig& config);

// Bytes of one K or V element in the pool: float32.
inline constexpr uint32_t kKvDtypeBytes = 4;

// The KV geometry of this model in a pool of `num_blocks` blocks of
// `block_tokens` tokens: num_layers = layers, kv_heads, head_dim,
// dtype_bytes 4, num_parts 2.
KvGeometry ModelKvGeometry(const ModelConfig& config, uint32_t num_blocks,
                           uint32_t block_tokens);

// OK when `layout` can hold this model's KV: its num_layers, num_parts,
// kv_heads, head_dim and dtype_bytes are those of ModelKvGeometry (any
// order, block size and pool size). InvalidArgument naming the field and
// both values otherwise.
absl::Status CheckModelLayout(const ModelConfig& config,
                              const KvLayout& layout);

// The pool layouts a node may pick (the KvLayout presets with two parts).
enum class KvPreset : uint8_t {
  kFlowKvBlockMajor = 0,  // KvLayout::FlowKvBlockMajor (NHD)
  kVllmFlashAttn = 1,     // KvLayout::VllmFlashAttn (NHD)
  kVllmFlashInfer = 2,    // KvLayout::VllmFlashInfer (NHD)
  kSglangMha = 3,         // KvLayout::SglangMha
  kTrtllmBlockPool = 4,   // KvLayout::TrtllmBlockPool
};

// "flowkv_block_major", "vllm_flash_attn", "vllm_flash_infer", "sglang_mha",
// "trtllm_block_pool".
std::string_view KvPresetName(KvPreset preset);
// The inverse of KvPresetName. InvalidArgument listing the names otherwise.
absl::StatusOr<KvPreset> ParseKvPreset(std::string_view name);

// The layout of a pool for this model: `preset` over ModelKvGeometry(config,
// num_blocks, block_tokens). InvalidArgument for an invalid config or a
// size the preset rejects (e.g. 0 blocks).
absl::StatusOr<KvLayout> MakeKvLayout(const ModelConfig& config,
                                      KvPreset preset, uint32_t num_blocks,
                                      uint32_t block_tokens);

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_MODEL_MODEL_CONFIG_H_
