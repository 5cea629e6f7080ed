// SPDX-License-Identifier: Apache-2.0
// The byte-level tokenizer (tokenizer.h).

#include "tools/cluster/model/tokenizer.h"

#include "absl/strings/str_format.h"

namespace flowkv::cluster {

std::vector<int> EncodeBytes(std::string_view text) {
  std::vector<int> tokens;
  tokens.reserve(text.size());
  for (char c : text) tokens.push_back(static_cast<unsigned char>(c));
  return tokens;
}

absl::StatusOr<std::string> DecodeBytes(absl::Span<const int> tokens,
                                        int vocab) {
  std::string text;
  text.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int token = tokens[i];
    if (token < 0 || token >= vocab) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "DecodeBytes: tokens[%u] = %d is outside the vocabulary [0, %d)", i,
          token, vocab));
    }
    if (token < kByteTokens) text.push_back(static_cast<char>(token));
  }
  return text;
}

}  // namespace flowkv::cluster
