#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The live-cluster experiments of docs/cluster.md with flowkv-cluster: on the
# load-shift workload, every policy at the same node count and the
# colocated baseline; on the long-prompt trace (Mooncake conversation),
# disaggregated against colocated. Prints markdown tables and leaves one JSON
# per run in OUT_DIR (for scripts/plot-cluster.py).
#
#   scripts/run-cluster-experiments.sh [BUILD_DIR] [OUT_DIR]
#
# BUILD_DIR defaults to build/, OUT_DIR to BUILD_DIR/cluster-results.
# Environment knobs (defaults in brackets): NODES_P [2], NODES_D [2],
# SHIFT [shift:6], SHIFT_RATE [3], SHIFT_REQUESTS [48], TRACE_REQUESTS [40],
# TRACE_SCALE [1], FLAGS [""] (more flowkv-cluster flags, e.g.
# "--layers=8 --d_model=256 --pin_cores").
# The figures are wall-clock measurements: run on an otherwise idle machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
out="${2:-$build/cluster-results}"
bin="$build/bin/flowkv-cluster"
[[ -x "$bin" ]] || { echo "no $bin: build the flowkv-cluster target first" >&2; exit 1; }
mkdir -p "$out"
export UCX_NET_DEVICES="${UCX_NET_DEVICES:-lo}"
export UCX_TLS="${UCX_TLS:-tcp}"

exec python3 - "$bin" "$out" "$root/data/traces" <<'PY'
import json, os, shlex, subprocess, sys

binary, out, traces = sys.argv[1:4]
env = os.environ
p, d = env.get("NODES_P", "2"), env.get("NODES_D", "2")
model = shlex.split(env.get("FLAGS", ""))

def run(name, *args):
    path = os.path.join(out, name + ".json")
    cmd = [binary, f"--prefill={p}", f"--decode={d}", f"--json={path}",
           *model, *args]
    print("$ " + " ".join(shlex.quote(c) for c in cmd[:1] + cmd[1:]),
          file=sys.stderr)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    with open(path) as f:
        return json.load(f)

def row(name, j):
    t, e, tp = j["ttft_ms"], j["e2e_ms"], j["tpot_ms"]
    return (f"| {name} | {j['requests_finished']}/{j['requests']} | "
            f"{'yes' if j['exact'] else 'NO'} | {t['mean']:.0f} | {t['p50']:.0f} | "
            f"{t['p99']:.0f} | {tp['mean']:.1f} | {tp['p99']:.1f} | {e['mean']:.0f} | "
            f"{j['throughput_tok_s']:.0f} | {j['role_switches']} | "
            f"{j['bytes_moved'] / 1e6:.1f} | {j['transfer_ms']['mean']:.1f} |")

header = ("| run | finished | exact | TTFT mean ms | p50 | p99 | TPOT mean ms | "
          "p99 | e2e mean ms | out tok/s | role switches | MB moved | "
          "transfer mean ms |\n|---|---:|:-:|---:|---:|---:|---:|---:|---:|"
          "---:|---:|---:|---:|")

shift = env.get("SHIFT", "shift:6")
common = [f"--workload={shift}", f"--rate={env.get('SHIFT_RATE', '3')}",
          f"--requests={env.get('SHIFT_REQUESTS', '48')}"]
print(f"## Load shift ({shift}), {p}P + {d}D against {int(p) + int(d)} "
      "colocated nodes\n")
print(header)
for policy in ["load_aware", "round_robin", "least_loaded", "kv_cost"]:
    print(row(policy, run(f"shift_{policy}", f"--policy={policy}", *common)))
print(row("colocated", run("shift_colocated", "--colocated",
                           "--policy=least_loaded", *common)))

trace = os.path.join(traces, "conversation_trace.jsonl")
targs = [f"--trace={trace}", f"--requests={env.get('TRACE_REQUESTS', '40')}",
         f"--time_scale={env.get('TRACE_SCALE', '1')}"]
print(f"\n## Long prompts (Mooncake conversation trace), {p}P + {d}D against "
      f"{int(p) + int(d)} colocated nodes\n")
print(header)
print(row("load_aware", run("trace_load_aware", "--policy=load_aware", *targs)))
print(row("colocated", run("trace_colocated", "--colocated",
                           "--policy=least_loaded", *targs)))
PY
