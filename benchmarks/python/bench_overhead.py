# SPDX-License-Identifier: Apache-2.0
"""What the Python bindings add per call, measured against the C++ calls in
the same process and run.

Two engines in this process (shared memory, or tcp with --transport tcp)
with a KvTransfer each; a round is one small request (one block) sent by
the sender, waited for, and polled on the receiver:

    h = sender.send(id, peer, src, dst, tokens); h.result(); receiver.poll()

The same round runs as a C++ loop (flowkv._flowkv._bench.kv_round_loop), so
the difference per round is the cost of the Python calls (send, result,
poll: three calls and the objects they make). The round includes two
thread hand-offs and a network round trip, so on a loaded machine its noise
can exceed the difference; the per-call figures isolate it: a send() that
the engine refuses before the network (a peer id it does not know, so the
whole argument conversion, planning refusal and handle path runs) plus a
zero wait() on its handle, and an empty poll(), each against the same call
in a C++ loop.

    PYTHONPATH=build/python UCX_NET_DEVICES=lo \\
        /usr/bin/python3 benchmarks/python/bench_overhead.py [--iterations N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import flowkv
from flowkv._flowkv import _bench

TRANSPORTS = {"shm": "posix,cma,self,tcp", "tcp": "tcp"}


def make_pair(transport: str):
    geometry = flowkv.KvGeometry(num_layers=2, num_blocks=8, block_tokens=16,
                                 kv_heads=2, head_dim=64, dtype_bytes=2)
    layout = flowkv.KvLayout.flowkv_block_major(geometry)
    options = dict(ucx_config={"TLS": TRANSPORTS[transport],
                               "NET_DEVICES": "lo"},
                   ucx_peer_error_handling=transport != "shm")
    receiver_engine = flowkv.TransferEngine(name="receiver", **options)
    sender_engine = flowkv.TransferEngine(name="sender", **options)
    receiver = flowkv.KvTransfer(receiver_engine, layout,
                                 [np.zeros(layout.total_bytes, np.uint8)])
    sender = flowkv.KvTransfer(sender_engine, layout,
                               [np.ones(layout.total_bytes, np.uint8)])
    peer = sender_engine.connect(receiver_engine.listen("127.0.0.1:0"))
    sender.announce_pool(peer)
    receiver.poll(wait=1.0)  # takes the descriptor and answers
    sender.wait_for_peer_pool(peer, 10.0)
    return (sender_engine, receiver_engine), sender, receiver, peer, layout


def python_rounds(sender, receiver, peer, src, dst, tokens, n: int,
                  tag: str) -> float:
    start = time.perf_counter()
    for i in range(n):
        sender.send(f"{tag}-{i}", peer, src, dst, tokens).result()
        polled = receiver.poll()
        deadline = time.monotonic() + 10.0
        while not polled.finished and not polled.failed:
            if time.monotonic() > deadline:
                raise flowkv.DeadlineExceededError(f"{tag}-{i} did not finish")
            polled = receiver.poll(0.001)
        if polled.failed:
            raise polled.failed[0][1]
    return time.perf_counter() - start


def python_send_calls(kv, peer, src, dst, tokens, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        kv.send("call", peer, src, dst, tokens).wait(0)
    return time.perf_counter() - start


def python_polls(kv, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        kv.poll()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--transport", choices=sorted(TRANSPORTS),
                        default="shm")
    args = parser.parse_args()

    engines, sender, receiver, peer, layout = make_pair(args.transport)
    src = flowkv.BlockList([1])
    dst = flowkv.BlockList([2])
    tokens = layout.geometry.block_tokens
    n = args.iterations

    # Warm-up of both paths.
    python_rounds(sender, receiver, peer, src, dst, tokens, 200, "warm")
    _bench.kv_round_loop(sender, receiver, peer, src, dst, tokens, 200,
                         "cxx-warm")

    unknown_peer = 1 << 40
    py_round, cxx_round, py_poll, cxx_poll = [], [], [], []
    py_send, cxx_send = [], []
    for r in range(args.repeats):
        py_round.append(python_rounds(sender, receiver, peer, src, dst,
                                      tokens, n, f"py{r}") / n)
        cxx_round.append(_bench.kv_round_loop(sender, receiver, peer, src,
                                              dst, tokens, n, f"cxx{r}") / n)
        py_send.append(python_send_calls(sender, unknown_peer, src, dst,
                                         tokens, n) / n)
        cxx_send.append(_bench.send_call_loop(sender, unknown_peer, src, dst,
                                              tokens, n) / n)
        py_poll.append(python_polls(receiver, n) / n)
        cxx_poll.append(_bench.poll_loop(receiver, n) / n)

    us = 1e6
    med = statistics.median
    round_py, round_cxx = med(py_round) * us, med(cxx_round) * us
    poll_py, poll_cxx = med(py_poll) * us, med(cxx_poll) * us
    send_py, send_cxx = med(py_send) * us, med(cxx_send) * us
    print(f"transport {args.transport}, {n} iterations x {args.repeats} "
          f"repeats (medians), {layout.block_bytes} B per send")
    print(f"send+result+poll round: python {round_py:8.2f} us, "
          f"C++ {round_cxx:8.2f} us, python adds {round_py - round_cxx:6.2f} us "
          f"per round ({(round_py - round_cxx) / 3:5.2f} us per call)")
    print(f"send() + wait(0):       python {send_py:8.2f} us, "
          f"C++ {send_cxx:8.2f} us, python adds {send_py - send_cxx:6.2f} us "
          f"per call")
    print(f"empty poll():           python {poll_py:8.2f} us, "
          f"C++ {poll_cxx:8.2f} us, python adds {poll_py - poll_cxx:6.2f} us "
          f"per call")
    sender.close()
    receiver.close()
    for engine in engines:
        engine.close()


if __name__ == "__main__":
    main()
