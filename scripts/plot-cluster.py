#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Draws the figures of docs/cluster.md from flowkv-cluster --json files.

    scripts/plot-cluster.py OUT_DIR RUN.json [RUN.json ...]

Writes, as PNG:
  ttft_cdf_<prefix>.png   TTFT CDFs, one line per run, grouped by the part of
                          each file name before the first '_' (e.g. shift_*,
                          trace_*);
  nodes_<run>.png         for each run, each node's role and prefill queue
                          over time (the router's samples of NodeLoad).
Needs Debian's python3-matplotlib.
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROLE_LEVEL = {"prefill": 2, "hybrid": 1, "decode": 0}


def load(path):
    with open(path) as f:
        return json.load(f)


def ttft_cdfs(out, runs):
    groups = {}
    for name, run in runs:
        groups.setdefault(name.split("_", 1)[0], []).append((name, run))
    for prefix, members in groups.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, run in members:
            ttft = sorted(r["ttft_ms"] for r in run["per_request"]
                          if r["finished"])
            if not ttft:
                continue
            ys = [(i + 1) / len(ttft) for i in range(len(ttft))]
            ax.step(ttft, ys, where="post",
                    label=f"{run['policy']} (mean {run['ttft_ms']['mean']:.0f} ms)")
        ax.set_xscale("log")
        ax.set_xlabel("TTFT (ms, log scale)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"TTFT CDF: {prefix}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"ttft_cdf_{prefix}.png"), dpi=120)
        plt.close(fig)


def node_timelines(out, name, run):
    samples = run.get("node_samples", [])
    nodes = sorted({s["node"] for s in samples})
    if not nodes:
        return
    fig, axes = plt.subplots(len(nodes), 1, figsize=(7, 1.6 * len(nodes)),
                             sharex=True, squeeze=False)
    for ax, node in zip(axes[:, 0], nodes):
        mine = [s for s in samples if s["node"] == node]
        t = [s["t_ms"] / 1000 for s in mine]
        ax.plot(t, [s["queued_prefill_tokens"] for s in mine], color="C0",
                label="queued prefill tokens")
        ax.set_ylabel(f"node {node}", fontsize=8)
        role = ax.twinx()
        role.step(t, [ROLE_LEVEL[s["role"]] for s in mine], where="post",
                  color="C3", label="role")
        role.set_yticks([0, 1, 2], ["decode", "hybrid", "prefill"], fontsize=7)
        role.set_ylim(-0.3, 2.3)
    axes[0, 0].set_title(f"{name}: prefill queue (blue) and role (red)")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"nodes_{name}.png"), dpi=110)
    plt.close(fig)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    runs = []
    for path in sys.argv[2:]:
        name = os.path.splitext(os.path.basename(path))[0]
        runs.append((name, load(path)))
    ttft_cdfs(out, runs)
    for name, run in runs:
        node_timelines(out, name, run)


if __name__ == "__main__":
    main()
