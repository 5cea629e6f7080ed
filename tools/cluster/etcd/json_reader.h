// SPDX-License-Identifier: Apache-2.0
// JsonValue: a small JSON reader for the replies of etcd's v3 JSON gateway
// (and nothing bigger): objects, arrays, strings (with \u escapes, as UTF-8),
// numbers kept as their text, true/false/null. Bounded: documents deeper than
// kMaxJsonDepth or longer than the caller's limit are refused.
//
//   absl::StatusOr<JsonValue> v = ParseJson(R"({"ID":"42","TTL":"5"})");
//   absl::StatusOr<int64_t> id = v->Get("ID").AsInt();   // 42
//
// Thread safety: a JsonValue is immutable; const methods are thread-safe.
#ifndef FLOWKV_TOOLS_CLUSTER_ETCD_JSON_READER_H_
#define FLOWKV_TOOLS_CLUSTER_ETCD_JSON_READER_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace flowkv::cluster {

inline constexpr int kMaxJsonDepth = 32;

class JsonValue {
 public:
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };

  JsonValue() = default;

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::kNull; }

  // The member `key` of an object; a null value when this is not an object
  // or has no such member (gRPC's gateway omits fields equal to zero).
  const JsonValue& Get(std::string_view key) const;
  // The elements of an array (empty for any other kind).
  const std::vector<JsonValue>& Items() const { return items_; }

  // A string's text. InvalidArgument for other kinds.
  absl::StatusOr<std::string> AsString() const;
  // An integer written as a number or, as the gateway writes int64 fields, as
  // a decimal string. A null value (an omitted field) reads as 0.
  // InvalidArgument for anything else or a value outside int64.
  absl::StatusOr<int64_t> AsInt() const;
  bool AsBool() const { return kind_ == Kind::kBool && bool_; }

 private:
  friend class JsonParser;
  Kind kind_ = Kind::kNull;
  bool bool_ = false;
  std::string text_;  // string contents, or a number's text
  std::vector<JsonValue> items_;
  std::map<std::string, JsonValue, std::less<>> members_;
};

// Parses one JSON document (surrounding whitespace allowed).
// InvalidArgument, naming the offset, for anything that is not JSON.
absl::StatusOr<JsonValue> ParseJson(std::string_view text);

// `text` as a JSON string literal, quotes included.
std::string JsonQuote(std::string_view text);

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_ETCD_JSON_READER_H_
