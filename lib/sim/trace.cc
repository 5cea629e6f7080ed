// SPDX-License-Identifier: Apache-2.0
#include "flowkv/sim/trace.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"

namespace flowkv {
namespace {

absl::Status LineError(size_t line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", what));
}

// A cursor over one JSON line: just enough JSON for flat objects whose
// values are numbers, strings, literals or arrays of those.
class JsonCursor {
 public:
  explicit JsonCursor(absl::string_view s) : s_(s) {}

  void SkipSpace() {
    while (pos_ < s_.size() && absl::ascii_isspace(s_[pos_])) ++pos_;
  }
  bool AtEnd() {
    SkipSpace();
    return pos_ >= s_.size();
  }
  bool Consume(char c) {
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  char Peek() {
    SkipSpace();
    return pos_ < s_.size() ? s_[pos_] : '\0';
  }
  size_t column() const { return pos_ + 1; }

  // A string without escapes other than \" and \\ (keys of the trace).
  std::optional<std::string> String() {
    if (!Consume('"')) return std::nullopt;
    std::string out;
    while (pos_ < s_.size()) {
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (c == '\\') {
        if (pos_ >= s_.size()) return std::nullopt;
        out.push_back(s_[pos_++]);
      } else {
        out.push_back(c);
      }
    }
    return std::nullopt;
  }

  // A JSON number as text.
  std::optional<absl::string_view> Number() {
    SkipSpace();
    const size_t start = pos_;
    while (pos_ < s_.size() &&
           (absl::ascii_isdigit(s_[pos_]) || s_[pos_] == '-' ||
            s_[pos_] == '+' || s_[pos_] == '.' || s_[pos_] == 'e' ||
            s_[pos_] == 'E')) {
      ++pos_;
    }
    if (pos_ == start) return std::nullopt;
    return s_.substr(start, pos_ - start);
  }

  // Skips any scalar or array value; false when malformed.
  bool SkipValue(int depth = 0) {
    const char c = Peek();
    if (c == '"') return String().has_value();
    if (c == '[') {
      if (depth > 8) return false;
      Consume('[');
      if (Consume(']')) return true;
      do {
        if (!SkipValue(depth + 1)) return false;
      } while (Consume(','));
      return Consume(']');
    }
    for (absl::string_view lit : {"true", "false", "null"}) {
      SkipSpace();
      if (s_.substr(pos_, lit.size()) == lit) {
        pos_ += lit.size();
        return true;
      }
    }
    std::optional<absl::string_view> n = Number();
    double ignored;
    return n.has_value() && absl::SimpleAtod(*n, &ignored);
  }

 private:
  absl::string_view s_;
  size_t pos_ = 0;
};

// Parses a non-negative integer field value (JSON number without fraction).
bool ParseCount(absl::string_view text, int64_t* out) {
  return absl::SimpleAtoi(text, out) && *out >= 0;
}

// Parses "hash_ids": an array of non-negative integers (at most 2^64 - 1).
absl::Status ParseHashIds(JsonCursor& c, size_t line_no,
                          std::vector<uint64_t>* out) {
  out->clear();
  if (!c.Consume('[')) {
    return LineError(line_no, absl::StrCat("\"hash_ids\" must be an array, at "
                                           "column ",
                                           c.column()));
  }
  if (c.Consume(']')) return absl::OkStatus();
  do {
    std::optional<absl::string_view> num = c.Number();
    uint64_t v;
    if (!num.has_value() || !absl::SimpleAtoi(*num, &v) ||
        absl::StartsWith(*num, "-") || absl::StartsWith(*num, "+")) {
      return LineError(
          line_no,
          absl::StrCat("\"hash_ids\" must hold non-negative integers, got \"",
                       num.value_or(""), "\" at column ", c.column()));
    }
    out->push_back(v);
  } while (c.Consume(','));
  if (!c.Consume(']')) {
    return LineError(line_no, absl::StrCat("expected ',' or ']' in "
                                           "\"hash_ids\" at column ",
                                           c.column()));
  }
  return absl::OkStatus();
}

absl::Status ParseMooncakeLine(absl::string_view line, size_t line_no,
                               double* timestamp_ms, TraceRecord* record) {
  JsonCursor c(line);
  if (!c.Consume('{'))
    return LineError(line_no, "expected '{' (a JSON object)");
  std::optional<int64_t> ts, in, out;
  if (!c.Consume('}')) {
    do {
      std::optional<std::string> key = c.String();
      if (!key.has_value()) {
        return LineError(
            line_no,
            absl::StrCat("expected a quoted key at column ", c.column()));
      }
      if (!c.Consume(':')) {
        return LineError(line_no,
                         absl::StrCat("expected ':' after \"", *key, "\""));
      }
      std::optional<int64_t>* target = nullptr;
      if (*key == "timestamp") target = &ts;
      if (*key == "input_length") target = &in;
      if (*key == "output_length") target = &out;
      if (*key == "hash_ids") {
        if (absl::Status s = ParseHashIds(c, line_no, &record->hash_ids);
            !s.ok()) {
          return s;
        }
      } else if (target != nullptr) {
        std::optional<absl::string_view> num = c.Number();
        int64_t v;
        if (!num.has_value() || !ParseCount(*num, &v)) {
          return LineError(
              line_no, absl::StrCat("\"", *key,
                                    "\" must be a non-negative integer, got \"",
                                    num.value_or(""), "\""));
        }
        *target = v;
      } else if (!c.SkipValue()) {
        return LineError(line_no, absl::StrCat("malformed value of \"", *key,
                                               "\" at column ", c.column()));
      }
    } while (c.Consume(','));
    if (!c.Consume('}')) {
      return LineError(
          line_no, absl::StrCat("expected ',' or '}' at column ", c.column()));
    }
  }
  if (!c.AtEnd()) {
    return LineError(
        line_no, absl::StrCat("trailing characters at column ", c.column()));
  }
  for (const auto& [name, v] :
       {std::pair<const char*, const std::optional<int64_t>&>{"timestamp", ts},
        {"input_length", in},
        {"output_length", out}}) {
    if (!v.has_value()) {
      return LineError(line_no, absl::StrCat("missing field \"", name, "\""));
    }
  }
  constexpr int64_t kMaxTokens = std::numeric_limits<uint32_t>::max();
  if (*in < 1 || *in > kMaxTokens) {
    return LineError(line_no, absl::StrCat("input_length ", *in,
                                           " is not in [1, ", kMaxTokens, "]"));
  }
  if (*out < 1 || *out > kMaxTokens) {
    return LineError(line_no, absl::StrCat("output_length ", *out,
                                           " is not in [1, ", kMaxTokens, "]"));
  }
  *timestamp_ms = static_cast<double>(*ts);
  record->input_tokens = static_cast<uint32_t>(*in);
  record->output_tokens = static_cast<uint32_t>(*out);
  return absl::OkStatus();
}

// Calls `fn(line, line_no)` for every line (CRLF or LF ends).
template <typename Fn>
absl::Status ForEachLine(absl::string_view text, Fn fn) {
  size_t line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (absl::EndsWith(line, "\r")) line.remove_suffix(1);
    absl::Status s = fn(line, line_no);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status CheckOrder(size_t line_no, double previous, double current) {
  if (current < previous) {
    return LineError(
        line_no, absl::StrCat("timestamp goes backwards (", current,
                              " ms after the first record, previous ", previous,
                              " ms)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<TraceRecord>> ParseMooncakeTrace(
    std::string_view text_std) {
  const absl::string_view text(text_std.data(), text_std.size());
  std::vector<TraceRecord> records;
  double first = 0;
  double previous = 0;
  absl::Status s = ForEachLine(text, [&](absl::string_view line, size_t no) {
    if (absl::StripAsciiWhitespace(line).empty()) return absl::OkStatus();
    double ts;
    TraceRecord r;
    absl::Status st = ParseMooncakeLine(line, no, &ts, &r);
    if (!st.ok()) return st;
    if (records.empty()) first = ts;
    r.arrival_ms = ts - first;
    st = CheckOrder(no, previous, r.arrival_ms);
    if (!st.ok()) return st;
    previous = r.arrival_ms;
    records.push_back(r);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return records;
}

absl::StatusOr<std::vector<TraceRecord>> ParseAzureTrace(
    std::string_view text_std) {
  const absl::string_view text(text_std.data(), text_std.size());
  std::vector<TraceRecord> records;
  absl::Time first;
  double previous = 0;
  bool header = false;
  absl::Status s = ForEachLine(text, [&](absl::string_view line, size_t no) {
    if (!header) {
      const std::vector<absl::string_view> cols = absl::StrSplit(line, ',');
      if (cols.size() != 3 ||
          absl::StripAsciiWhitespace(cols[0]) != "TIMESTAMP" ||
          absl::StripAsciiWhitespace(cols[1]) != "ContextTokens" ||
          absl::StripAsciiWhitespace(cols[2]) != "GeneratedTokens") {
        return LineError(no,
                         "expected the header "
                         "\"TIMESTAMP,ContextTokens,GeneratedTokens\"");
      }
      header = true;
      return absl::OkStatus();
    }
    if (absl::StripAsciiWhitespace(line).empty()) return absl::OkStatus();
    const std::vector<absl::string_view> cols = absl::StrSplit(line, ',');
    if (cols.size() != 3) {
      return LineError(
          no,
          absl::StrCat("expected 3 comma-separated fields, got ", cols.size()));
    }
    absl::Time t;
    std::string err;
    if (!absl::ParseTime("%Y-%m-%d %H:%M:%E*S",
                         absl::StripAsciiWhitespace(cols[0]),
                         absl::UTCTimeZone(), &t, &err)) {
      return LineError(no,
                       absl::StrCat("bad TIMESTAMP \"", cols[0],
                                    "\" (want YYYY-MM-DD HH:MM:SS.fffffff)"));
    }
    int64_t in, out;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(cols[1]), &in) || in < 1 ||
        in > std::numeric_limits<uint32_t>::max()) {
      return LineError(no, absl::StrCat("ContextTokens \"", cols[1],
                                        "\" is not an integer in [1, 2^32)"));
    }
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(cols[2]), &out) ||
        out < 1 || out > std::numeric_limits<uint32_t>::max()) {
      return LineError(no, absl::StrCat("GeneratedTokens \"", cols[2],
                                        "\" is not an integer in [1, 2^32)"));
    }
    if (records.empty()) first = t;
    TraceRecord r;
    r.arrival_ms = absl::ToDoubleMilliseconds(t - first);
    r.input_tokens = static_cast<uint32_t>(in);
    r.output_tokens = static_cast<uint32_t>(out);
    absl::Status st = CheckOrder(no, previous, r.arrival_ms);
    if (!st.ok()) return st;
    previous = r.arrival_ms;
    records.push_back(r);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  if (!header) return LineError(1, "empty file: expected the CSV header");
  return records;
}

absl::StatusOr<std::vector<TraceRecord>> ParseTrace(std::string_view text,
                                                    TraceFormat format) {
  return format == TraceFormat::kMooncakeJsonl ? ParseMooncakeTrace(text)
                                               : ParseAzureTrace(text);
}

absl::StatusOr<std::vector<TraceRecord>> ReadTraceFile(
    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open trace ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  TraceFormat format;
  if (absl::EndsWithIgnoreCase(path, ".jsonl") ||
      absl::EndsWithIgnoreCase(path, ".json")) {
    format = TraceFormat::kMooncakeJsonl;
  } else if (absl::EndsWithIgnoreCase(path, ".csv")) {
    format = TraceFormat::kAzureCsv;
  } else {
    const absl::string_view head =
        absl::StripLeadingAsciiWhitespace(absl::string_view(text));
    format = !head.empty() && head[0] == '{' ? TraceFormat::kMooncakeJsonl
                                             : TraceFormat::kAzureCsv;
  }
  absl::StatusOr<std::vector<TraceRecord>> records = ParseTrace(text, format);
  if (!records.ok()) {
    return absl::Status(records.status().code(),
                        absl::StrCat(path, ": ", records.status().message()));
  }
  return records;
}

}  // namespace flowkv
