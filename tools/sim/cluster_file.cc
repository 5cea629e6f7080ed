// SPDX-License-Identifier: Apache-2.0
// The cluster file's text codec (see cluster_file.h).
#include "tools/sim/cluster_file.h"

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "fmt/core.h"

namespace flowkv::sim_tools {

namespace {
constexpr uint32_t kMaxNodes = 4096;

const char* const kKeys[] = {"node_type",
                             "memory_bytes",
                             "kv_capacity_bytes",
                             "prefill_ms",
                             "decode_ms",
                             "link_bandwidth_bytes_per_s",
                             "link_call_overhead_ms",
                             "link_fixed_ms",
                             "kv_geometry",
                             "prefill_nodes",
                             "decode_nodes",
                             "hybrid_nodes"};

absl::Status Bad(const std::string& what) {
  return absl::InvalidArgumentError("cluster file: " + what);
}

// `count` finite numbers >= 0, separated by blanks.
absl::StatusOr<std::vector<double>> Numbers(const std::string& key,
                                            const std::string& value,
                                            size_t count) {
  std::vector<double> out;
  for (absl::string_view part :
       absl::StrSplit(value, absl::ByAnyChar(" \t"), absl::SkipEmpty())) {
    double v;
    if (!absl::SimpleAtod(part, &v) || !std::isfinite(v) || v < 0) {
      return Bad(absl::StrCat(key, ": \"", std::string(part),
                              "\" is not a finite number >= 0"));
    }
    out.push_back(v);
  }
  if (out.size() != count) {
    return Bad(
        absl::StrCat(key, " wants ", count, " number(s), got \"", value, "\""));
  }
  return out;
}
}  // namespace

std::vector<SimNodeSpec> ClusterFile::Nodes() const {
  std::vector<SimNodeSpec> nodes;
  for (uint32_t i = 0; i < prefill_nodes; ++i)
    nodes.push_back({NodeRole::kPrefill, type});
  for (uint32_t i = 0; i < decode_nodes; ++i)
    nodes.push_back({NodeRole::kDecode, type});
  for (uint32_t i = 0; i < hybrid_nodes; ++i)
    nodes.push_back({NodeRole::kHybrid, type});
  return nodes;
}

std::string FormatClusterFile(const ClusterFile& f) {
  const NodeCostModel& c = f.type.cost;
  return fmt::format(
      "# flowkv cluster file (docs/cluster.md): flowkv-sim --cluster_file\n"
      "node_type = {}\nmemory_bytes = {:.17g}\nkv_capacity_bytes = {:.17g}\n"
      "prefill_ms = {:.17g} {:.17g} {:.17g}\n"
      "decode_ms = {:.17g} {:.17g} {:.17g}\n"
      "link_bandwidth_bytes_per_s = {:.17g}\nlink_call_overhead_ms = {:.17g}\n"
      "link_fixed_ms = {:.17g}\n"
      "kv_geometry = {} {} {} {} {} {}\n"
      "prefill_nodes = {}\ndecode_nodes = {}\nhybrid_nodes = {}\n",
      f.type.name, f.type.memory_bytes, f.type.kv_capacity_bytes, c.a, c.b, c.c,
      c.t0, c.k, c.e, f.link.bandwidth_bytes_per_s, f.link.call_overhead_ms,
      f.link.fixed_ms, f.geometry.num_layers, f.geometry.block_tokens,
      f.geometry.kv_heads, f.geometry.head_dim, f.geometry.dtype_bytes,
      f.geometry.num_parts, f.prefill_nodes, f.decode_nodes, f.hybrid_nodes);
}

absl::StatusOr<ClusterFile> ParseClusterFile(std::string_view text) {
  std::map<std::string, std::string> values;
  int line_no = 0;
  for (absl::string_view line :
       absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_no;
    line = line.substr(0, line.find('#'));
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos) {
      return Bad(absl::StrCat("line ", line_no, ": no '='"));
    }
    const std::string key(absl::StripAsciiWhitespace(line.substr(0, eq)));
    const std::string value(absl::StripAsciiWhitespace(line.substr(eq + 1)));
    bool known = false;
    for (const char* k : kKeys) known |= key == k;
    if (!known) {
      return Bad(absl::StrCat("line ", line_no, ": unknown key \"", key, "\""));
    }
    if (!values.emplace(key, value).second) {
      return Bad(absl::StrCat("line ", line_no, ": \"", key, "\" again"));
    }
  }
  for (const char* k : kKeys) {
    if (values.count(k) == 0) return Bad(absl::StrCat("no \"", k, "\""));
  }
  ClusterFile f;
  f.type.name = values["node_type"];
  if (f.type.name.empty() ||
      f.type.name.find_first_of(" \t,:") != std::string::npos) {
    return Bad("node_type must be a non-empty name without blanks, ',' or ':'");
  }
  struct Scalar {
    const char* key;
    double* out;
  };
  for (const Scalar& s :
       {Scalar{"memory_bytes", &f.type.memory_bytes},
        Scalar{"kv_capacity_bytes", &f.type.kv_capacity_bytes},
        Scalar{"link_bandwidth_bytes_per_s", &f.link.bandwidth_bytes_per_s},
        Scalar{"link_call_overhead_ms", &f.link.call_overhead_ms},
        Scalar{"link_fixed_ms", &f.link.fixed_ms}}) {
    auto v = Numbers(s.key, values[s.key], 1);
    if (!v.ok()) return v.status();
    *s.out = (*v)[0];
  }
  if (!(f.link.bandwidth_bytes_per_s > 0)) {
    return Bad("link_bandwidth_bytes_per_s must be > 0");
  }
  auto prefill = Numbers("prefill_ms", values["prefill_ms"], 3);
  if (!prefill.ok()) return prefill.status();
  auto decode = Numbers("decode_ms", values["decode_ms"], 3);
  if (!decode.ok()) return decode.status();
  NodeCostModel& c = f.type.cost;
  c.a = (*prefill)[0], c.b = (*prefill)[1], c.c = (*prefill)[2];
  c.t0 = (*decode)[0], c.k = (*decode)[1], c.e = (*decode)[2];
  auto geometry = Numbers("kv_geometry", values["kv_geometry"], 6);
  if (!geometry.ok()) return geometry.status();
  for (double v : *geometry) {
    if (v < 1 || v > (1 << 20) || v != std::floor(v)) {
      return Bad("kv_geometry wants 6 whole numbers between 1 and 2^20");
    }
  }
  KvGeometry& g = f.geometry;
  g.num_layers = static_cast<uint32_t>((*geometry)[0]);
  g.block_tokens = static_cast<uint32_t>((*geometry)[1]);
  g.kv_heads = static_cast<uint32_t>((*geometry)[2]);
  g.head_dim = static_cast<uint32_t>((*geometry)[3]);
  g.dtype_bytes = static_cast<uint32_t>((*geometry)[4]);
  g.num_parts = static_cast<uint32_t>((*geometry)[5]);
  g.num_blocks = 1;
  uint64_t total = 0;
  struct Count {
    const char* key;
    uint32_t* out;
  };
  for (const Count& n : {Count{"prefill_nodes", &f.prefill_nodes},
                         Count{"decode_nodes", &f.decode_nodes},
                         Count{"hybrid_nodes", &f.hybrid_nodes}}) {
    if (!absl::SimpleAtoi(values[n.key], n.out) || *n.out > kMaxNodes) {
      return Bad(absl::StrCat(n.key, " must be a whole number <= ", kMaxNodes));
    }
    total += *n.out;
  }
  if (total == 0 || total > kMaxNodes) {
    return Bad(
        absl::StrCat("the cluster must have 1 to ", kMaxNodes, " nodes"));
  }
  return f;
}

absl::StatusOr<ClusterFile> ReadClusterFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("cannot read cluster file " + path);
  std::stringstream text;
  text << in.rdbuf();
  return ParseClusterFile(text.str());
}

absl::Status WriteClusterFile(const std::string& path,
                              const ClusterFile& file) {
  std::ofstream out(path);
  out << FormatClusterFile(file);
  out.close();
  if (!out) return absl::UnavailableError("cannot write " + path);
  return absl::OkStatus();
}

}  // namespace flowkv::sim_tools
