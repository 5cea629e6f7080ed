// SPDX-License-Identifier: Apache-2.0
// The cluster file flowkv-cluster writes and flowkv-sim reads
// (tools/sim/cluster_file.h): a written file parses back to the same values
// and nodes, and malformed text (unknown, repeated or missing keys, bad
// numbers, no node, too many) is an InvalidArgument naming the problem. The
// link fit of a run's transfers (FitLink) recovers a known line and falls
// back to the mean for one size.
#include "tools/sim/cluster_file.h"

#include <string>

#include <catch2/catch.hpp>

#include "tools/cluster/sim_compare.h"

namespace flowkv::sim_tools {
namespace {

ClusterFile Example() {
  ClusterFile f;
  f.type.name = "cpu";
  f.type.memory_bytes = f.type.kv_capacity_bytes = 1 << 21;
  f.type.cost = {
      .a = 0.1, .b = 0.005, .c = 9e-5, .t0 = 0, .k = 1.5e-4, .e = 0.016};
  f.link = {
      .bandwidth_bytes_per_s = 1.25e9, .call_overhead_ms = 0, .fixed_ms = 0.4};
  f.geometry = {.num_layers = 2,
                .num_blocks = 1,
                .block_tokens = 16,
                .kv_heads = 2,
                .head_dim = 16,
                .dtype_bytes = 4,
                .num_parts = 2};
  f.prefill_nodes = 2;
  f.decode_nodes = 3;
  return f;
}

TEST_CASE("cluster file: written, read back the same", "[cluster][sim]") {
  const ClusterFile f = Example();
  absl::StatusOr<ClusterFile> back = ParseClusterFile(FormatClusterFile(f));
  REQUIRE(back.ok());
  CHECK(back->type.name == "cpu");
  CHECK(back->type.kv_capacity_bytes == f.type.kv_capacity_bytes);
  CHECK(back->type.cost.c == f.type.cost.c);
  CHECK(back->type.cost.e == f.type.cost.e);
  CHECK(back->link.bandwidth_bytes_per_s == f.link.bandwidth_bytes_per_s);
  CHECK(back->link.fixed_ms == f.link.fixed_ms);
  CHECK(back->geometry == f.geometry);
  const std::vector<SimNodeSpec> nodes = back->Nodes();
  REQUIRE(nodes.size() == 5);
  CHECK(nodes[1].role == NodeRole::kPrefill);
  CHECK(nodes[2].role == NodeRole::kDecode);
  CHECK(nodes[4].type.cost.b == f.type.cost.b);
}

TEST_CASE("cluster file: malformed text is refused", "[cluster][sim]") {
  const std::string good = FormatClusterFile(Example());
  auto without = [&](const std::string& key) {
    std::string text = good;
    const size_t at = text.find("\n" + key + " =");
    REQUIRE(at != std::string::npos);
    text.erase(at + 1, text.find('\n', at + 1) - at);
    return text;
  };
  auto with = [&](const std::string& key, const std::string& value) {
    return without(key) + key + " = " + value + "\n";
  };
  const std::vector<std::string> bad = {
      "",
      "garbage",
      good + "unknown_key = 1\n",
      good + "link_fixed_ms = 1\n",
      without("decode_ms"),
      with("prefill_ms", "1 2"),
      with("prefill_ms", "1 2 3 4"),
      with("decode_ms", "1 -2 3"),
      with("decode_ms", "1 nan 3"),
      with("link_bandwidth_bytes_per_s", "0"),
      with("link_fixed_ms", "inf"),
      with("kv_geometry", "2 16 2 16 4"),
      with("kv_geometry", "2 16 0 16 4 2"),
      with("kv_geometry", "2 16.5 2 16 4 2"),
      with("node_type", "a b"),
      with("node_type", ""),
      with("prefill_nodes", "-1"),
      with("prefill_nodes", "5000"),
      with("decode_nodes", "x"),
      without("prefill_nodes") + "prefill_nodes = 0\n" +
          std::string("decode_nodes = 0\n"),
  };
  for (const std::string& text : bad) {
    INFO(text);
    absl::StatusOr<ClusterFile> f = ParseClusterFile(text);
    CHECK(f.status().code() == absl::StatusCode::kInvalidArgument);
  }
  // All node counts 0.
  std::string none = without("prefill_nodes");
  none = none.substr(0, none.find("decode_nodes")) + "hybrid_nodes = 0\n";
  none += "prefill_nodes = 0\ndecode_nodes = 0\n";
  CHECK_FALSE(ParseClusterFile(none).ok());
  CHECK(ReadClusterFile("/nonexistent/flowkv.cluster").status().code() ==
        absl::StatusCode::kNotFound);
  // Comments and blank lines are fine.
  CHECK(ParseClusterFile("# x\n\n" + good + "  # end\n").ok());
}

TEST_CASE("FitLink: a known line, one size, no transfer", "[cluster][sim]") {
  std::vector<cluster::RequestRecord> records;
  for (int i = 1; i <= 6; ++i) {
    cluster::RequestRecord r;
    r.finished = true;
    r.kv_bytes = static_cast<uint64_t>(i) * 100000;
    r.transfer_ms = 0.5 + static_cast<double>(r.kv_bytes) / 1e9 * 1e3;
    records.push_back(r);
  }
  LinkModel link = cluster::FitLink(records);
  CHECK(link.fixed_ms == Approx(0.5));
  CHECK(link.bandwidth_bytes_per_s == Approx(1e9));
  for (auto& r : records) r.kv_bytes = 1000, r.transfer_ms = 2;
  link = cluster::FitLink(records);
  CHECK(link.fixed_ms == Approx(2));
  CHECK(link.bandwidth_bytes_per_s >= 1e15);
  link = cluster::FitLink({});
  CHECK(link.fixed_ms == LinkModel{}.fixed_ms);
}

}  // namespace
}  // namespace flowkv::sim_tools
