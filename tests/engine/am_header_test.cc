// SPDX-License-Identifier: Apache-2.0
// The active-message headers (lib/engine/wireup/am_header.h): their bytes,
// byte by byte as the header specifies, round trips, and refusal of any
// other length.

#include "lib/engine/wireup/am_header.h"

#include <array>
#include <cstdint>
#include <string>

#include <catch2/catch.hpp>

#include "absl/status/status.h"
#include "absl/strings/match.h"

namespace flowkv::internal {
namespace {

absl::Span<const uint8_t> Span(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

template <size_t N>
std::string AsString(const std::array<uint8_t, N>& bytes) {
  return std::string(bytes.begin(), bytes.end());
}

TEST_CASE("AmHeader: little-endian conn_id then transfer_id", "[am_header]") {
  const AmHeader header{.conn_id = 0x0102030405060708ull,
                        .transfer_id = 0x1112131415161718ull};
  const std::string bytes = AsString(EncodeAmHeader(header));
  REQUIRE(bytes.size() == kAmHeaderBytes);
  CHECK(bytes == std::string("\x08\x07\x06\x05\x04\x03\x02\x01"
                             "\x18\x17\x16\x15\x14\x13\x12\x11",
                             16));
  auto parsed = ParseAmHeader(Span(bytes));
  REQUIRE(parsed.ok());
  CHECK(*parsed == header);
}

TEST_CASE("DataHeader: 52 bytes in the documented order", "[am_header]") {
  const DataHeader header{.conn_id = 0xa1,
                          .transfer_id = 0xa2,
                          .region = 0xa3,
                          .code = 0xa4,
                          .offset = 0xa5,
                          .length = 0xa6,
                          .reply_region = 0xa7,
                          .reply_offset = 0xa8};
  const std::string bytes = AsString(EncodeDataHeader(header));
  REQUIRE(bytes.size() == kDataHeaderBytes);
  // Each field's low byte at its offset, the rest zero.
  const std::pair<size_t, uint8_t> fields[] = {
      {0, 0xa1},  {8, 0xa2},  {16, 0xa3}, {20, 0xa4},
      {24, 0xa5}, {32, 0xa6}, {40, 0xa7}, {44, 0xa8}};
  std::string expected(kDataHeaderBytes, '\0');
  for (const auto& [offset, value] : fields) {
    expected[offset] = static_cast<char>(value);
  }
  CHECK(bytes == expected);
  auto parsed = ParseDataHeader(Span(bytes));
  REQUIRE(parsed.ok());
  CHECK(*parsed == header);

  const DataHeader full{.conn_id = ~0ull,
                        .transfer_id = 1ull << 63,
                        .region = ~0u,
                        .code = 16,
                        .offset = 0x0123456789abcdefull,
                        .length = 1ull << 40,
                        .reply_region = 7,
                        .reply_offset = ~0ull - 1};
  auto back = ParseDataHeader(Span(AsString(EncodeDataHeader(full))));
  REQUIRE(back.ok());
  CHECK(*back == full);
}

TEST_CASE("AckRefusal: code then message, round trip and refusals",
          "[am_header]") {
  const std::string bytes =
      EncodeAckRefusal(absl::FailedPreconditionError("done"));
  CHECK(bytes == std::string("\x09\0\0\0\x04\0\0\0done", 12));
  absl::Status refusal;
  REQUIRE(ParseAckRefusal(Span(bytes), &refusal).ok());
  CHECK(refusal == absl::FailedPreconditionError("done"));
  // A long message is cut to the limit.
  REQUIRE(ParseAckRefusal(Span(EncodeAckRefusal(absl::InternalError(std::string(
                              kMaxAckRefusalMessageBytes + 9, 'm')))),
                          &refusal)
              .ok());
  CHECK(refusal.message().size() == kMaxAckRefusalMessageBytes);
  // OK, unknown codes, truncation and trailing bytes are refused.
  for (const std::string& bad : {std::string("\0\0\0\0\0\0\0\0", 8),
                                 std::string("\x11\0\0\0\0\0\0\0", 8),
                                 bytes.substr(0, 10), bytes + "x"}) {
    CHECK(ParseAckRefusal(Span(bad), &refusal).code() ==
          absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("Headers of any other length are refused", "[am_header]") {
  const std::string am =
      AsString(EncodeAmHeader({.conn_id = 1, .transfer_id = 2}));
  const std::string data =
      AsString(EncodeDataHeader({.conn_id = 1, .length = 8}));
  for (size_t n = 0; n < data.size() + 8; ++n) {
    const std::string bytes = (data + std::string(8, 'x')).substr(0, n);
    auto parsed_am = ParseAmHeader(Span(bytes));
    auto parsed_data = ParseDataHeader(Span(bytes));
    CHECK(parsed_am.ok() == (n == kAmHeaderBytes));
    CHECK(parsed_data.ok() == (n == kDataHeaderBytes));
    if (!parsed_am.ok()) {
      CHECK(parsed_am.status().code() == absl::StatusCode::kInvalidArgument);
      CHECK(absl::StartsWith(parsed_am.status().message(), "AmHeader: "));
    }
    if (!parsed_data.ok()) {
      CHECK(parsed_data.status().code() == absl::StatusCode::kInvalidArgument);
      CHECK(absl::StartsWith(parsed_data.status().message(), "DataHeader: "));
    }
  }
  // A data header is no AmHeader and the other way round.
  CHECK(!ParseAmHeader(Span(data)).ok());
  CHECK(!ParseDataHeader(Span(am)).ok());
}

TEST_CASE("The data path's ids carry a DataHeader", "[am_header]") {
  int data_path = 0;
  for (unsigned id : kAllAmIds) data_path += CarriesDataHeader(id) ? 1 : 0;
  CHECK(data_path == 3);
  CHECK(CarriesDataHeader(kAmData));
  CHECK(CarriesDataHeader(kAmReadRequest));
  CHECK(CarriesDataHeader(kAmReadData));
  CHECK(!CarriesDataHeader(kAmNotify));
}

}  // namespace
}  // namespace flowkv::internal
