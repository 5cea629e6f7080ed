#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Reproduces the experiment tables of docs/simulator.md with flowkv-sim.
#
#   scripts/run-sim-experiments.sh [BUILD_DIR] [TRACES_DIR]
#
# BUILD_DIR defaults to build/, TRACES_DIR to data/traces (relative to
# the repository root). Needs python3 (to read flowkv-sim --json output).
# Every run is deterministic: the same build prints the same tables.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
traces="${2:-$root/data/traces}"
sim="$build/bin/flowkv-sim"
[[ -x "$sim" ]] || { echo "no $sim: build the flowkv-sim target first" >&2; exit 1; }

exec python3 - "$sim" "$traces" <<'PY'
import json, os, subprocess, sys

sim, traces = sys.argv[1], sys.argv[2]

def run(*args):
    cmd = [sim, "--json", "--progress=false", *args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    return json.loads(out.stdout)

def s(ms):
    return f"{ms / 1000:.2f}"

def pct(new, base):
    return f"{100 * (base - new) / base:+.1f} %"

print("## 1. KV transfer latency, 1P1D a100 (FlowKV Table 3 shape)\n")
print("| prompt tokens | flowkv calls | flowkv s | paper FlowKV s | error | "
      "blockwise calls | blockwise s |")
print("|---:|---:|---:|---:|---:|---:|---:|")
paper = {500: 0.0044, 1000: 0.0075, 4000: 0.0236, 8000: 0.0447, 10000: 0.0555}
for n, p in paper.items():
    common = ["--cluster", "p:a100x1,d:a100x1", "--policy", "round_robin",
              "--workload", f"synthetic:{n}:2", "--rate", "0.2",
              "--requests", "10"]
    f = run(*common, "--transfer", "flowkv")
    b = run(*common, "--transfer", "blockwise")
    fs = f["mean_transfer_ms"] / 1000
    print(f"| {n} | {f['transfer_calls'] // f['transfers']} | {fs:.4f} | {p} | "
          f"{100 * (fs - p) / p:+.1f} % | {b['transfer_calls'] // b['transfers']} | "
          f"{b['mean_transfer_ms'] / 1000:.3f} |")

print("\n## 2. Disaggregated (1P1D) vs colocated (hybrid:a100x2), mean e2e s\n")
print("| workload | rate req/s | 1P1D load_aware | 1P1D round_robin | "
      "colocated (prefill-first) | colocated (chunked) | "
      "1P1D load_aware vs colocated | TTFT s disagg / colo | "
      "TPOT ms disagg / colo |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
sweeps = {"gov_report": [0.25, 0.5, 0.75, 1.0, 1.25],
          "qmsum": [0.25, 0.5, 0.75, 1.0],
          "multi_news": [0.5, 1, 2, 3, 4]}
for wl, rates in sweeps.items():
    for rate in rates:
        common = ["--workload", wl, "--rate", str(rate), "--requests", "300",
                  "--seed", "1"]
        d = run("--cluster", "p:a100x1,d:a100x1", "--policy", "load_aware", *common)
        r = run("--cluster", "p:a100x1,d:a100x1", "--policy", "round_robin", *common)
        c = run("--cluster", "hybrid:a100x2", "--policy", "load_aware", *common)
        k = run("--cluster", "hybrid:a100x2", "--policy", "load_aware",
                "--batching", "chunked", *common)
        print(f"| {wl} | {rate} | {s(d['mean_e2e_ms'])} | {s(r['mean_e2e_ms'])} | "
              f"{s(c['mean_e2e_ms'])} | {s(k['mean_e2e_ms'])} | "
              f"{pct(d['mean_e2e_ms'], c['mean_e2e_ms'])} | "
              f"{s(d['mean_ttft_ms'])} / {s(c['mean_ttft_ms'])} | "
              f"{d['mean_tpot_ms']:.1f} / {c['mean_tpot_ms']:.1f} |")

print("\n## 3. Heterogeneous: prefill L20 + decode H20 vs the reverse, "
      "round_robin (fixed roles), mean e2e s\n")
print("| workload | rate req/s | p:l20,d:h20 | p:h20,d:l20 | "
      "decode-on-H20 gain | TPOT ms (l20->h20 / h20->l20) |")
print("|---|---:|---:|---:|---:|---:|")
for wl, rates in {"multi_news": [0.2, 0.4, 0.8], "gov_report": [0.1, 0.2, 0.3],
                  "hotpotqa": [0.1, 0.2, 0.3]}.items():
    for rate in rates:
        common = ["--policy", "round_robin", "--workload", wl, "--rate", str(rate),
                  "--requests", "300", "--seed", "1"]
        a = run("--cluster", "p:l20x1,d:h20x1", *common)
        b = run("--cluster", "p:h20x1,d:l20x1", *common)
        print(f"| {wl} | {rate} | {s(a['mean_e2e_ms'])} | {s(b['mean_e2e_ms'])} | "
              f"{pct(a['mean_e2e_ms'], b['mean_e2e_ms'])} | "
              f"{a['mean_tpot_ms']:.1f} / {b['mean_tpot_ms']:.1f} |")

print("\n## 4. Role switching: shift workload, p:a100x2,d:a100x2, 3 req/s, "
      "720 requests (4 phases of 60 s)\n")
print("| seed | policy | mean e2e s | p99 e2e s | mean TTFT s | mean TPOT ms | "
      "role switches | vs best fixed-role |")
print("|---:|---|---:|---:|---:|---:|---:|---:|")
for seed in [1, 2, 3]:
    res = {}
    for p in ["round_robin", "least_loaded", "kv_cost", "load_aware"]:
        res[p] = run("--cluster", "p:a100x2,d:a100x2", "--policy", p,
                     "--workload", "shift", "--rate", "3", "--requests", "720",
                     "--seed", str(seed))
    best = min(res[p]["mean_e2e_ms"] for p in ["round_robin", "least_loaded", "kv_cost"])
    for p, d in res.items():
        print(f"| {seed} | {p} | {s(d['mean_e2e_ms'])} | {s(d['p99_e2e_ms'])} | "
              f"{s(d['mean_ttft_ms'])} | {d['mean_tpot_ms']:.1f} | "
              f"{d['role_switches']} | {pct(d['mean_e2e_ms'], best)} |")

print("\n## 5. Trace replay on 8 nodes (p:a100x4,d:a100x4), first 4000 "
      "requests\n")
mooncake = os.path.join(traces, "conversation_trace.jsonl")
azure = os.path.join(traces, "AzureLLMInferenceTrace_conv.csv")
if not os.path.exists(mooncake):
    print(f"(skipped: no traces in {traces})")
    sys.exit(0)
print("| trace | time scale | policy | mean e2e s | p99 e2e s | mean TTFT s | "
      "p99 TTFT s | mean TPOT ms | SLO (2 s / 100 ms) | role switches |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
for path, name in [(mooncake, "mooncake conversation"), (azure, "azure conv")]:
    for ts in ([0.5, 1] if path == mooncake else [1, 8]):
        for p in ["round_robin", "least_loaded", "kv_cost", "load_aware"]:
            d = run("--cluster", "p:a100x4,d:a100x4", "--policy", p, "--trace",
                    path, "--time-scale", str(ts), "--requests", "4000")
            print(f"| {name} | {ts} | {p} | {s(d['mean_e2e_ms'])} | "
                  f"{s(d['p99_e2e_ms'])} | {s(d['mean_ttft_ms'])} | "
                  f"{s(d['p99_ttft_ms'])} | {d['mean_tpot_ms']:.1f} | "
                  f"{100 * d['slo_attainment']:.0f} % | {d['role_switches']} |")
PY
