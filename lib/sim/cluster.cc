// SPDX-License-Identifier: Apache-2.0
#include "flowkv/sim/cluster.h"

#include <array>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace flowkv {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
// Llama-3.1-8B BF16 weights.
constexpr double kWeightBytes = 16 * kGiB;

// An A100 cost model scaled by a prefill slowdown (compute bound: a, b, c)
// and decode slowdowns: memory bound (t0: weights, k: KV reads) and
// compute bound (e: per-request work).
NodeCostModel Scaled(double prefill, double decode_mem, double decode_compute) {
  NodeCostModel a100;
  NodeCostModel m = a100;
  m.a = a100.a * prefill;
  m.b = a100.b * prefill;
  m.c = a100.c * prefill;
  m.t0 = a100.t0 * decode_mem;
  m.k = a100.k * decode_mem;
  m.e = a100.e * decode_compute;
  return m;
}

NodeType MakeType(std::string name, double memory_gib, NodeCostModel cost) {
  NodeType t;
  t.name = std::move(name);
  t.memory_bytes = memory_gib * kGiB;
  t.kv_capacity_bytes = t.memory_bytes - kWeightBytes;
  t.cost = cost;
  return t;
}

const std::vector<NodeType>& Types() {
  // A100 80 GB: 312 TFLOPS BF16 dense, 2.04 TB/s (the calibration in
  //   docs/design.md).
  // H100 80 GB: docs/design.md's 2.5x prefill, 1.5x decode.
  // L20 48 GB: 119.5 TFLOPS BF16 dense (312/119.5 = 2.61x slower compute),
  //   864 GB/s GDDR6 (2039/864 = 2.36x slower memory).
  // H20 96 GB: 148 TFLOPS BF16 dense (2.11x slower compute), 4.0 TB/s HBM3
  //   (2039/4000 = 0.51x: decode reads are ~2x faster).
  static const std::vector<NodeType> types = {
      MakeType("a100", 80, NodeCostModel{}),
      MakeType("h100", 80, Scaled(1 / 2.5, 1 / 1.5, 1 / 1.5)),
      MakeType("l20", 48, Scaled(312 / 119.5, 2039.0 / 864, 312 / 119.5)),
      MakeType("h20", 96, Scaled(312 / 148.0, 2039.0 / 4000, 312 / 148.0)),
  };
  return types;
}

std::string KnownTypes() {
  std::vector<std::string> names;
  for (const NodeType& t : Types()) names.push_back(t.name);
  return absl::StrJoin(names, ", ");
}

}  // namespace

absl::Span<const NodeType> NodeTypes() { return Types(); }

absl::StatusOr<NodeType> FindNodeType(std::string_view name_std) {
  const absl::string_view name(name_std.data(), name_std.size());
  const std::string lower = absl::AsciiStrToLower(name);
  for (const NodeType& t : Types()) {
    if (t.name == lower) return t;
  }
  return absl::NotFoundError(
      absl::StrCat("unknown node type \"", name, "\"; known: ", KnownTypes()));
}

absl::StatusOr<std::vector<SimNodeSpec>> ParseClusterSpec(
    std::string_view spec_std) {
  const absl::string_view spec(spec_std.data(), spec_std.size());
  std::vector<SimNodeSpec> nodes;
  if (absl::StripAsciiWhitespace(spec).empty()) {
    return absl::InvalidArgumentError(
        "cluster spec is empty; want ROLE:TYPE[xN],... e.g. "
        "p:a100x1,d:a100x1");
  }
  for (absl::string_view group : absl::StrSplit(spec, ',')) {
    group = absl::StripAsciiWhitespace(group);
    const std::vector<absl::string_view> parts = absl::StrSplit(group, ':');
    if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cluster group \"", group, "\": want ROLE:TYPE[xN], e.g. p:a100x2"));
    }
    const std::string role_name = absl::AsciiStrToLower(parts[0]);
    NodeRole role;
    if (role_name == "p" || role_name == "prefill") {
      role = NodeRole::kPrefill;
    } else if (role_name == "d" || role_name == "decode") {
      role = NodeRole::kDecode;
    } else if (role_name == "h" || role_name == "hybrid") {
      role = NodeRole::kHybrid;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("cluster group \"", group, "\": unknown role \"",
                       parts[0], "\"; known: p, d, hybrid"));
    }
    absl::string_view type_name = parts[1];
    uint32_t count = 1;
    const size_t x = type_name.rfind('x');
    if (x != absl::string_view::npos) {
      absl::string_view count_text = type_name.substr(x + 1);
      if (!absl::SimpleAtoi(count_text, &count) || count < 1 || count > 4096) {
        return absl::InvalidArgumentError(
            absl::StrCat("cluster group \"", group, "\": count \"", count_text,
                         "\" is not in [1, 4096]"));
      }
      type_name = type_name.substr(0, x);
    }
    absl::StatusOr<NodeType> type =
        FindNodeType(std::string_view(type_name.data(), type_name.size()));
    if (!type.ok()) return type.status();
    for (uint32_t i = 0; i < count; ++i) nodes.push_back({role, *type});
    if (nodes.size() > 4096) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cluster spec has ", nodes.size(), " nodes; at most 4096"));
    }
  }
  return nodes;
}

std::string ClusterSpecString(absl::Span<const SimNodeSpec> nodes) {
  std::vector<std::string> groups;
  size_t i = 0;
  while (i < nodes.size()) {
    size_t j = i;
    while (j < nodes.size() && nodes[j].role == nodes[i].role &&
           nodes[j].type.name == nodes[i].type.name) {
      ++j;
    }
    const char* role = nodes[i].role == NodeRole::kPrefill  ? "p"
                       : nodes[i].role == NodeRole::kDecode ? "d"
                                                            : "hybrid";
    groups.push_back(absl::StrCat(role, ":", nodes[i].type.name, "x", j - i));
    i = j;
  }
  return absl::StrJoin(groups, ",");
}

}  // namespace flowkv
