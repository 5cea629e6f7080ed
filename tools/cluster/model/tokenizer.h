// SPDX-License-Identifier: Apache-2.0
// The byte-level tokenizer of flowkv-cluster's model: token i < 256 is the
// byte i; tokens from 256 on are special (256: end of sequence).
//
//   std::vector<int> prompt = flowkv::cluster::EncodeBytes("hello");
//   absl::StatusOr<std::string> text = flowkv::cluster::DecodeBytes(tokens);
//
// Thread safety: pure functions (thread-safe).

#ifndef FLOWKV_TOOLS_CLUSTER_MODEL_TOKENIZER_H_
#define FLOWKV_TOOLS_CLUSTER_MODEL_TOKENIZER_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace flowkv::cluster {

// Tokens 0..255: the bytes.
inline constexpr int kByteTokens = 256;

// One token per byte of `text`.
std::vector<int> EncodeBytes(std::string_view text);

// The bytes of `tokens`, skipping special tokens in [256, vocab).
// InvalidArgument naming the index for a token < 0 or >= vocab.
absl::StatusOr<std::string> DecodeBytes(absl::Span<const int> tokens,
                                        int vocab = 257);

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_MODEL_TOKENIZER_H_
