// SPDX-License-Identifier: Apache-2.0
// The recursive-descent parser behind ParseJson, and JsonQuote.
#include "tools/cluster/etcd/json_reader.h"

#include <charconv>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace flowkv::cluster {

namespace {
const JsonValue& NullValue() {
  static const JsonValue* const kNull = new JsonValue();
  return *kNull;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}
}  // namespace

class JsonParser {
 public:
  explicit JsonParser(std::string_view text) : text_(text) {}

  absl::StatusOr<JsonValue> Document() {
    JsonValue value;
    if (absl::Status s = Value(0, &value); !s.ok()) return s;
    SkipSpace();
    if (pos_ != text_.size()) return Error("trailing bytes after the document");
    return value;
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrFormat(
        "JSON: %s at offset %d of %d", what, pos_, text_.size()));
  }
  void SkipSpace() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\n' || text_[pos_] == '\r' ||
            text_[pos_] == '\t')) {
      ++pos_;
    }
  }
  bool Consume(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  absl::Status Value(int depth, JsonValue* out) {
    if (depth > kMaxJsonDepth) return Error("nesting deeper than the limit");
    SkipSpace();
    if (pos_ >= text_.size()) return Error("unexpected end");
    const char c = text_[pos_];
    if (c == '{') return Object(depth, out);
    if (c == '[') return Array(depth, out);
    if (c == '"') {
      out->kind_ = JsonValue::Kind::kString;
      return String(&out->text_);
    }
    if (Consume("true") || Consume("false")) {
      out->kind_ = JsonValue::Kind::kBool;
      out->bool_ = c == 't';
      return absl::OkStatus();
    }
    if (Consume("null")) return absl::OkStatus();
    return Number(out);
  }

  absl::Status Object(int depth, JsonValue* out) {
    out->kind_ = JsonValue::Kind::kObject;
    ++pos_;
    SkipSpace();
    if (Consume("}")) return absl::OkStatus();
    while (true) {
      SkipSpace();
      if (pos_ >= text_.size() || text_[pos_] != '"')
        return Error("expected a member name");
      std::string key;
      if (absl::Status s = String(&key); !s.ok()) return s;
      SkipSpace();
      if (!Consume(":")) return Error("expected ':'");
      JsonValue member;
      if (absl::Status s = Value(depth + 1, &member); !s.ok()) return s;
      out->members_.insert_or_assign(std::move(key), std::move(member));
      SkipSpace();
      if (Consume("}")) return absl::OkStatus();
      if (!Consume(",")) return Error("expected ',' or '}'");
    }
  }

  absl::Status Array(int depth, JsonValue* out) {
    out->kind_ = JsonValue::Kind::kArray;
    ++pos_;
    SkipSpace();
    if (Consume("]")) return absl::OkStatus();
    while (true) {
      JsonValue item;
      if (absl::Status s = Value(depth + 1, &item); !s.ok()) return s;
      out->items_.push_back(std::move(item));
      SkipSpace();
      if (Consume("]")) return absl::OkStatus();
      if (!Consume(",")) return Error("expected ',' or ']'");
    }
  }

  absl::Status Hex4(uint32_t* cp) {
    if (text_.size() - pos_ < 4) return Error("truncated \\u escape");
    *cp = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = text_[pos_++];
      *cp <<= 4;
      if (h >= '0' && h <= '9') {
        *cp |= h - '0';
      } else if (h >= 'a' && h <= 'f') {
        *cp |= h - 'a' + 10;
      } else if (h >= 'A' && h <= 'F') {
        *cp |= h - 'A' + 10;
      } else {
        return Error("bad hex digit in \\u escape");
      }
    }
    return absl::OkStatus();
  }

  absl::Status String(std::string* out) {
    ++pos_;  // the opening quote
    while (pos_ < text_.size()) {
      const char c = text_[pos_++];
      if (c == '"') return absl::OkStatus();
      if (static_cast<unsigned char>(c) < 0x20)
        return Error("control character in a string");
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      if (pos_ >= text_.size()) break;
      const char e = text_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out->push_back(e);
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          uint32_t cp = 0;
          if (absl::Status s = Hex4(&cp); !s.ok()) return s;
          if (cp >= 0xD800 && cp < 0xDC00) {
            uint32_t low = 0;
            if (!Consume("\\u")) return Error("lone high surrogate");
            if (absl::Status s = Hex4(&low); !s.ok()) return s;
            if (low < 0xDC00 || low >= 0xE000)
              return Error("bad low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            return Error("lone low surrogate");
          }
          AppendUtf8(cp, out);
          break;
        }
        default:
          return Error("bad escape");
      }
    }
    return Error("unterminated string");
  }

  absl::Status Number(JsonValue* out) {
    const size_t start = pos_;
    if (pos_ < text_.size() && text_[pos_] == '-') ++pos_;
    size_t digits = 0;
    while (pos_ < text_.size() &&
           (absl::ascii_isdigit(text_[pos_]) || text_[pos_] == '.' ||
            text_[pos_] == 'e' || text_[pos_] == 'E' || text_[pos_] == '+' ||
            text_[pos_] == '-')) {
      digits += absl::ascii_isdigit(text_[pos_]) ? 1 : 0;
      ++pos_;
    }
    if (digits == 0) {
      pos_ = start;
      return Error("expected a value");
    }
    out->kind_ = JsonValue::Kind::kNumber;
    out->text_ = std::string(text_.substr(start, pos_ - start));
    return absl::OkStatus();
  }

  std::string_view text_;
  size_t pos_ = 0;
};

const JsonValue& JsonValue::Get(std::string_view key) const {
  if (kind_ != Kind::kObject) return NullValue();
  auto it = members_.find(key);
  return it == members_.end() ? NullValue() : it->second;
}

absl::StatusOr<std::string> JsonValue::AsString() const {
  if (kind_ != Kind::kString)
    return absl::InvalidArgumentError("JSON: expected a string");
  return text_;
}

absl::StatusOr<int64_t> JsonValue::AsInt() const {
  if (kind_ == Kind::kNull) return 0;
  if (kind_ != Kind::kNumber && kind_ != Kind::kString) {
    return absl::InvalidArgumentError("JSON: expected an integer");
  }
  int64_t v = 0;
  const char* end = text_.data() + text_.size();
  auto [ptr, ec] = std::from_chars(text_.data(), end, v);
  if (ec != std::errc() || ptr != end) {
    return absl::InvalidArgumentError(
        absl::StrCat("JSON: not an int64: '", text_, "'"));
  }
  return v;
}

absl::StatusOr<JsonValue> ParseJson(std::string_view text) {
  return JsonParser(text).Document();
}

std::string JsonQuote(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
        } else {
          out.push_back(c);
        }
    }
  }
  out += "\"";
  return out;
}

}  // namespace flowkv::cluster
