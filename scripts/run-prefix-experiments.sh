#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Reproduces the prefix-cache routing table of docs/scheduler.md ("Prefix-
# aware placement: kv_aware vs prefix_cost") with flowkv-sim: every policy
# on the Mooncake conversation trace (first 4000 requests) with each node's
# prefix cache modelled (--prefix_cache), at 4P4D (time scale 0.5) and 2P6D
# (time scale 0.25, the same load per prefill node), with fixed roles
# (--rebalance_ms 0: placement alone) and with role rebalancing (default).
#
#   scripts/run-prefix-experiments.sh [BUILD_DIR] [TRACES_DIR]
#
# Needs python3. Deterministic: the same build prints the same table.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
traces="${2:-$root/data/traces}"
sim="$build/bin/flowkv-sim"
[[ -x "$sim" ]] || { echo "no $sim: build the flowkv-sim target first" >&2; exit 1; }

exec python3 - "$sim" "$traces" <<'PY'
import json, os, subprocess, sys

sim, traces = sys.argv[1], sys.argv[2]
trace = os.path.join(traces, "conversation_trace.jsonl")
policies = ["round_robin", "least_loaded", "kv_cost", "load_aware",
            "prefix_cost", "kv_aware"]

def run(*args):
    cmd = [sim, "--json", "--progress=false", "--prefix_cache", "--trace",
           trace, "--requests", "4000", *args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    return json.loads(out.stdout)

def s(ms):
    return f"{ms / 1000:.2f}"

print("| cluster | roles | policy | P hit rate | D hit rate | mean TTFT s | "
      "p99 TTFT s | mean e2e s | p99 e2e s | vs prefix_cost mean TTFT |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
for cluster, ts in [("p:a100x4,d:a100x4", "0.5"), ("p:a100x2,d:a100x6", "0.25")]:
    for roles, extra in [("fixed", ["--rebalance_ms", "0"]), ("rebalanced", [])]:
        res = {p: run("--cluster", cluster, "--policy", p, "--time-scale", ts,
                      *extra) for p in policies}
        base = res["prefix_cost"]["mean_ttft_ms"]
        for p in policies:
            d = res[p]
            print(f"| {cluster} (x{ts}) | {roles} | {p} | "
                  f"{100 * d['prefix_hit_rate']:.1f} % | "
                  f"{100 * d['decode_prefix_hit_rate']:.1f} % | "
                  f"{s(d['mean_ttft_ms'])} | {s(d['p99_ttft_ms'])} | "
                  f"{s(d['mean_e2e_ms'])} | {s(d['p99_e2e_ms'])} | "
                  f"{100 * (d['mean_ttft_ms'] - base) / base:+.1f} % |")
PY
