"""The sending process of the two-process tests: a vLLM FlashAttention pool
of torch tensors (one per layer, filled with conftest.layer_values) that
connects to the receiver at --address, exchanges pools and sends one request
(SRC_BLOCKS -> DST_BLOCKS, NUM_TOKENS tokens) as "req-1".

    kv_peer.py --address 127.0.0.1:PORT --transport shm|tcp

Prints "sent" once the send completed (the receiver acknowledged it), then
waits for a line on stdin before it exits (so the receiver decides when the
sender goes away). Exits 1 with the error on stderr on failure.
"""

import argparse
import sys

import torch

import flowkv
from conftest import (DST_BLOCKS, GEOMETRY, NUM_TOKENS, OPTIONS_TIMEOUT_S,
                      SRC_BLOCKS, engine_options, layer_values, vllm_shape)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--transport", required=True)
    args = parser.parse_args()

    layout = flowkv.KvLayout.vllm_flash_attn(flowkv.KvGeometry(**GEOMETRY))
    tensors = [layer_values(l, vllm_shape()) for l in range(GEOMETRY["num_layers"])]
    engine = flowkv.TransferEngine(**engine_options(args.transport, "prefill"))
    kv = flowkv.KvTransfer(engine, layout, tensors)
    peer = engine.connect(args.address)
    kv.announce_pool(peer)
    kv.wait_for_peer_pool(peer, OPTIONS_TIMEOUT_S)
    handle = kv.send("req-1", peer, SRC_BLOCKS, DST_BLOCKS, NUM_TOKENS,
                     payload=b"aux-data")
    handle.result(timeout=3 * OPTIONS_TIMEOUT_S)
    print("sent", flush=True)
    sys.stdin.readline()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except flowkv.Error as e:
        print(f"kv_peer: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
