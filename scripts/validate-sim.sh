#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Validates flowkv-sim against the live cluster (docs/cluster.md, "The
# simulator against the cluster"): for each policy, one flowkv-cluster run
# on the same workload and cluster shape with --compare-sim (the simulator
# fed the same requests, the cost model calibrated on this machine and the
# link fitted to the run's own KV transfers) and --cluster-file (the
# measured cluster, for flowkv-sim --cluster-file). The first run calibrates
# the model; the others take its cost model (--cost-from), so every policy
# is simulated with one calibration. Prints a markdown table:
# measured and simulated mean TTFT and mean end-to-end latency, the error,
# and whether the simulator ranks the policies in the measured order.
#
#   scripts/validate-sim.sh [BUILD_DIR] [OUT_DIR]
#
# BUILD_DIR defaults to build/, OUT_DIR to BUILD_DIR/sim-validation.
# Environment knobs (defaults in brackets): POLICIES
# [round_robin,least_loaded,load_aware], NODES_P [2], NODES_D [2],
# WORKLOAD [shift:6], RATE [3], REQUESTS [48], FLAGS [""] (more
# flowkv-cluster flags). Wall-clock measurements: run on an idle machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
out="${2:-$build/sim-validation}"
bin="$build/bin/flowkv-cluster"
[[ -x "$bin" ]] || { echo "no $bin: build the flowkv-cluster target first" >&2; exit 1; }
mkdir -p "$out"
export UCX_NET_DEVICES="${UCX_NET_DEVICES:-lo}"
export UCX_TLS="${UCX_TLS:-tcp}"

exec python3 - "$bin" "$out" <<'PY'
import json, os, shlex, subprocess, sys

binary, out = sys.argv[1:3]
env = os.environ
policies = env.get("POLICIES", "round_robin,least_loaded,load_aware").split(",")
p, d = env.get("NODES_P", "2"), env.get("NODES_D", "2")
workload = env.get("WORKLOAD", "shift:6")
rate, requests = env.get("RATE", "3"), env.get("REQUESTS", "48")
extra = shlex.split(env.get("FLAGS", ""))

rows = []
first_file = None
for policy in policies:
    path = os.path.join(out, policy + ".json")
    cluster_file = os.path.join(out, policy + ".cluster")
    cmd = [binary, f"--prefill={p}", f"--decode={d}", f"--policy={policy}",
           f"--workload={workload}", f"--rate={rate}", f"--requests={requests}",
           "--compare-sim", f"--cluster-file={cluster_file}", f"--json={path}",
           *extra]
    if first_file:
        cmd.append(f"--cost-from={first_file}")
    print("$ " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    first_file = first_file or cluster_file
    with open(path) as f:
        j = json.load(f)
    if not j["exact"] or j["requests_finished"] != j["requests"]:
        sys.exit(f"{policy}: not every request finished exactly")
    rows.append((policy, j["ttft_ms"]["mean"], j["sim"]["ttft_ms"]["mean"],
                 j["e2e_ms"]["mean"], j["sim"]["e2e_ms"]["mean"]))

def err(sim, meas):
    return 100.0 * (sim - meas) / meas if meas > 0 else float("nan")

print(f"workload {workload}, rate {rate}/s, {requests} requests, {p}P + {d}D\n")
print("| policy | TTFT measured ms | TTFT simulated ms | error | "
      "e2e measured ms | e2e simulated ms | error |")
print("|---|---:|---:|---:|---:|---:|---:|")
worst = 0.0
for pol, mt, st, me, se in rows:
    worst = max(worst, abs(err(st, mt)), abs(err(se, me)))
    print(f"| {pol} | {mt:.1f} | {st:.1f} | {err(st, mt):+.0f} % | "
          f"{me:.1f} | {se:.1f} | {err(se, me):+.0f} % |")

def order(i):
    return [r[0] for r in sorted(rows, key=lambda r: r[i])]

print()
for name, m, s in (("TTFT", 1, 2), ("e2e", 3, 4)):
    same = order(m) == order(s)
    ties = [f"{a[0]}~{b[0]}" for a, b in zip(sorted(rows, key=lambda r: r[s]),
                                             sorted(rows, key=lambda r: r[s])[1:])
            if abs(a[s] - b[s]) <= 0.01 * max(a[s], b[s])]
    print(f"rank by mean {name}: measured {' < '.join(order(m))}; "
          f"simulated {' < '.join(order(s))}: "
          f"{'same order' if same else 'DIFFERENT order'}"
          + (f" (simulated within 1 %: {', '.join(ties)})" if ties else ""))
print(f"largest error {worst:.0f} % (target: within 20 %)")
PY
