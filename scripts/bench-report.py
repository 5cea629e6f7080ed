#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Runs the benchmarks that carry a same-run comparison and writes their
Markdown tables into README.md, between the markers

    <!-- bench-report:begin -->
    <!-- bench-report:end -->

so the figures there are never older than the code (`make bench-report`).
Each table's flowkv figure and its baseline come from one run of one
benchmark binary (Google Benchmark's JSON output). Python 3 standard
library only.

    scripts/bench-report.py [--build build] [--readme README.md]
                            [--print] [--only NAME ...]

--print writes the section to stdout instead of README.md; --only runs only
the named reports (register, transfer, latency, allocator). About three
minutes on the 2-core development VM.
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile

BEGIN = "<!-- bench-report:begin -->"
END = "<!-- bench-report:end -->"

SHM = "posix,cma,self,tcp"
# Benchmarks that reported an error: their cells say "error", the section
# lists them, and the script exits 1 (after writing the tables it has).
ERRORS = []
TRANSPORTS = [("shared memory", SHM), ("tcp", "tcp")]


def run(build, binary, flt, tls=None, min_time=None, repetitions=None):
    """Runs one benchmark binary; returns its JSON 'benchmarks' list. With
    `repetitions`, only the aggregates (names ending in _median, _mean...)."""
    path = os.path.join(build, "bin", binary)
    if not os.access(path, os.X_OK):
        sys.exit(f"bench-report: {path} is missing; build it first "
                 f"(cmake --build {build} --target {binary})")
    env = dict(os.environ, UCX_NET_DEVICES="lo")
    if tls:
        env["UCX_TLS"] = tls
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [path, f"--benchmark_filter={flt}",
               f"--benchmark_out={out.name}", "--benchmark_out_format=json"]
        if min_time:
            cmd.append(f"--benchmark_min_time={min_time}")
        if repetitions:
            cmd += [f"--benchmark_repetitions={repetitions}",
                    "--benchmark_report_aggregates_only=true"]
        print(f"bench-report: {' '.join(cmd)}"
              + (f"  (UCX_TLS={tls})" if tls else ""), file=sys.stderr)
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        with open(out.name) as f:
            data = json.load(f)
    for b in data["benchmarks"]:
        if b.get("error_occurred"):
            ERRORS.append(f"`{b['name']}` ({'UCX_TLS=' + tls if tls else ''}"
                          f"): {b.get('error_message')}")
    return data["benchmarks"]


class Failed(dict):
    """A benchmark that reported an error: every figure reads as NaN."""

    def __getitem__(self, key):
        return float("nan") if key not in ("name", "time_unit") else (
            dict.get(self, key, "ms"))


def find(benchmarks, pattern):
    """The one benchmark whose name matches `pattern` (a regex)."""
    hits = [b for b in benchmarks if re.search(pattern, b["name"])]
    if len(hits) != 1:
        sys.exit(f"bench-report: {len(hits)} results match {pattern!r}")
    if hits[0].get("error_occurred"):
        return Failed(name=hits[0]["name"])
    return hits[0]


def ms(b):
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
    return b["real_time"] * scale


def fmt(x, digits=3):
    """A figure with `digits` significant digits and thousands separators."""
    if x != x:
        return "error"
    if x == 0:
        return "0"
    if abs(x) >= 10 ** (digits - 1):
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def table(header, rows):
    align = ["---" if i == 0 else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def register_report(build):
    # Medians of 5 repetitions: one registration is a round trip to the
    # engine's progress thread, which a loaded machine may deschedule.
    bs = run(build, "register_benchmark", "BM_Register/", tls=SHM,
             repetitions=5)
    sizes = sorted({int(re.search(r"gib:(\d+)", b["name"]).group(1))
                    for b in bs})
    rows = []
    for gib in sizes:
        flowkv = ms(find(bs, rf"^BM_Register/flowkv/gib:{gib}/.*_median$"))
        bare = ms(find(bs, rf"^BM_Register/ucp_mem_map/gib:{gib}/.*_median$"))
        par = ms(find(bs, rf"^BM_Register/ucp_mem_map_parallel/gib:{gib}/"
                          r".*_median$"))
        rows.append([str(gib), fmt(flowkv), fmt(bare), fmt(par),
                     fmt(flowkv / bare)])
    return ("### Registration (`build/bin/register_benchmark`)\n\n"
            "`RegisterMemory` of a touched host region against a bare "
            "`ucp_mem_map` of the same bytes, and `ucp_mem_map` split over 4 "
            "threads (UCX_TLS=" + SHM + "; medians of 5 repetitions).\n\n"
            + table(["GiB", "RegisterMemory ms", "ucp_mem_map ms",
                     "ucp_mem_map, 4 threads ms",
                     "RegisterMemory / ucp_mem_map"], rows))


def transfer_report(build):
    rows = []
    for name, tls in TRANSPORTS:
        bs = run(build, "transfer_benchmark",
                 "^BM_Transfer/(blockwise|flowkv|raw|memcpy)/1024/16/",
                 tls=tls)
        get = {m: find(bs, rf"^BM_Transfer/{m}/1024/16/")
               for m in ("blockwise", "flowkv", "raw", "memcpy")}
        rows.append([
            name, fmt(get["blockwise"]["calls"]), fmt(ms(get["blockwise"])),
            fmt(get["flowkv"]["calls"]), fmt(ms(get["flowkv"])),
            fmt(get["flowkv"]["GBps"]), fmt(get["raw"]["GBps"]),
            fmt(get["memcpy"]["GBps"]),
            fmt(ms(get["blockwise"]) / ms(get["flowkv"]))])
    return ("### Transfer (`build/bin/transfer_benchmark`)\n\n"
            "1k tokens of Llama-3.1-8B (128 MiB), 16-token blocks, two "
            "engines over loopback; `blockwise` is one op per (layer, K|V, "
            "block), `raw` one put of the same bytes, `memcpy` one local "
            "copy.\n\n"
            + table(["transport", "blockwise calls", "blockwise ms",
                     "flowkv calls", "flowkv ms", "flowkv GB/s", "raw GB/s",
                     "memcpy GB/s", "blockwise / flowkv"], rows))


def latency_report(build):
    rows = []
    for name, tls in TRANSPORTS:
        bs = run(build, "write_latency_benchmark",
                 "^BM_WriteLatency/(flowkv|raw)/(4096|32768)/", tls=tls)
        for size in (4096, 32768):
            f = find(bs, rf"^BM_WriteLatency/flowkv/{size}/")
            r = find(bs, rf"^BM_WriteLatency/raw/{size}/")
            rows.append([name, f"{size:,}", fmt(f["median_us"]),
                         fmt(f["p99_us"]), fmt(r["median_us"]),
                         fmt(r["p99_us"]),
                         fmt(f["median_us"] / r["median_us"])])
    return ("### Small transfers (`build/bin/write_latency_benchmark`)\n\n"
            "One `Write` plus notification between two processes, until the "
            "receiver holds the notification; `raw` is UCX put + flush + "
            "active message between the same processes.\n\n"
            + table(["transport", "bytes", "flowkv median µs",
                     "flowkv p99 µs", "raw median µs", "raw p99 µs",
                     "flowkv / raw (median)"], rows))


def allocator_report(build):
    bs = run(build, "block_allocator_benchmark",
             "^BM_Churn/(flowkv/occupancy:(50|90)/slack:32|"
             "freelist/occupancy:(50|90))$", min_time="0.2")
    rows = []
    for occ in (50, 90):
        f = find(bs, rf"^BM_Churn/flowkv/occupancy:{occ}/slack:32$")
        r = find(bs, rf"^BM_Churn/freelist/occupancy:{occ}$")
        rows.append([f"{occ} %", fmt(f["runs_per_request"]),
                     fmt(r["runs_per_request"]), fmt(f["ns_per_op"] * 1e9),
                     fmt(r["ns_per_op"] * 1e9)])
    return ("### Allocator (`build/bin/block_allocator_benchmark`)\n\n"
            "LongBench-like churn on a 128k-block pool; `freelist` is the "
            "vLLM-style LIFO of block ids.\n\n"
            + table(["occupancy", "flowkv runs/request",
                     "freelist runs/request", "flowkv ns/op",
                     "freelist ns/op"], rows))


REPORTS = {
    "register": register_report,
    "transfer": transfer_report,
    "latency": latency_report,
    "allocator": allocator_report,
}


def header(root):
    def git(*args):
        return subprocess.run(["git", "-C", root, *args], capture_output=True,
                              text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    load = os.getloadavg()[0]
    today = datetime.date.today().isoformat()
    return (f"Generated by `make bench-report` on {today} at commit "
            f"{commit}: {os.cpu_count()} CPUs, load average {load:.1f} when "
            "it started (a loaded machine inflates times and p99s). Every "
            "row's flowkv figure and its baseline come from the same run.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default="build")
    parser.add_argument("--readme", default="README.md")
    parser.add_argument("--print", action="store_true", dest="to_stdout")
    parser.add_argument("--only", nargs="+", choices=sorted(REPORTS))
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    names = args.only or list(REPORTS)
    parts = [header(root)] + [REPORTS[n](args.build) for n in names]
    if ERRORS:
        parts.append("Benchmarks that failed in this run:\n\n"
                     + "\n".join(f"* {e}" for e in ERRORS))
    section = "\n\n".join(parts)
    if args.to_stdout:
        print(section)
        sys.exit(1 if ERRORS else 0)
    with open(args.readme) as f:
        text = f.read()
    begin, end = text.find(BEGIN), text.find(END)
    if begin < 0 or end < begin:
        sys.exit(f"bench-report: {args.readme} has no {BEGIN} ... {END}")
    text = text[:begin + len(BEGIN)] + "\n" + section + "\n" + text[end:]
    with open(args.readme, "w") as f:
        f.write(text)
    print(f"bench-report: wrote {len(names)} table(s) into {args.readme}",
          file=sys.stderr)
    if ERRORS:
        sys.exit(f"bench-report: {len(ERRORS)} benchmark(s) failed")


if __name__ == "__main__":
    main()
