// SPDX-License-Identifier: Apache-2.0
// What every fuzz target shares: FuzzInput, a reader that turns the fuzzer's
// bytes into integers, choices and strings (past the end it gives zeros and
// empty strings, so every input is a valid run), and FUZZ_CHECK, which
// reports a broken property and aborts (libFuzzer and the replay driver both
// treat the abort as a failure of that input).
//
// The targets build two ways: with libFuzzer (-fsanitize=fuzzer, clang only,
// FLOWKV_BUILD_FUZZERS=ON) and with tests/fuzz/replay_main.cc, which runs
// the committed corpus and regression inputs once under ctest.

#ifndef FLOWKV_TESTS_FUZZ_FUZZ_INPUT_H_
#define FLOWKV_TESTS_FUZZ_FUZZ_INPUT_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

// Aborts with the failed condition and a message when `cond` is false.
#define FUZZ_CHECK(cond, ...)                                          \
  do {                                                                 \
    if (!(cond)) {                                                     \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: ", __FILE__, \
                   __LINE__, #cond);                                   \
      std::fprintf(stderr, "%s\n",                                     \
                   ::flowkv::fuzz::FuzzMessage(__VA_ARGS__).c_str());  \
      std::abort();                                                    \
    }                                                                  \
  } while (0)

namespace flowkv::fuzz {

// FUZZ_CHECK's optional message.
inline std::string FuzzMessage() { return ""; }
inline std::string FuzzMessage(std::string message) { return message; }

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t remaining() const { return size_ - pos_; }
  bool empty() const { return pos_ >= size_; }

  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(Bits(2)); }
  uint32_t U32() { return static_cast<uint32_t>(Bits(4)); }
  uint64_t U64() { return Bits(8); }
  bool Bool() { return (U8() & 1) != 0; }

  // A value in [lo, hi] (REQUIRES lo <= hi), from as few bytes as the range
  // needs.
  uint64_t Range(uint64_t lo, uint64_t hi) {
    const uint64_t span = hi - lo;
    if (span == 0) return lo;
    int bytes = 1;
    while (bytes < 8 && (span >> (8 * bytes)) != 0) ++bytes;
    const uint64_t v = Bits(bytes);
    return span == ~uint64_t{0} ? v : lo + v % (span + 1);
  }

  // Up to `max` bytes: a length byte then the bytes.
  std::string Bytes(size_t max) {
    const size_t n = static_cast<size_t>(Range(0, max));
    std::string out;
    while (out.size() < n && !empty()) out.push_back(static_cast<char>(U8()));
    return out;
  }

  // Everything not read yet.
  std::string_view Rest() {
    std::string_view rest(reinterpret_cast<const char*>(data_) + pos_,
                          remaining());
    pos_ = size_;
    return rest;
  }

 private:
  uint64_t Bits(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= uint64_t{U8()} << (8 * i);
    return v;
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace flowkv::fuzz

#endif  // FLOWKV_TESTS_FUZZ_FUZZ_INPUT_H_
