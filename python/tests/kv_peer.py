# SPDX-License-Identifier: Apache-2.0
"""The sending process of the two-process tests: a vLLM FlashAttention pool
(one region per layer, filled with conftest.layer_values) that connects to
the receiver at --address, exchanges pools and sends one request
(SRC_BLOCKS -> DST_BLOCKS, NUM_TOKENS tokens) as "req-1".

    kv_peer.py --address 127.0.0.1:PORT --transport shm|tcp
               [--pool tensors|shared_host] [--path-policy POLICY]
               [--staging-ring-bytes N] [--staging-slot-bytes N] [--report]
               [--cxx-request-ids HEX,HEX,...] [--hnd-views]

--pool tensors (default): torch tensors registered as engine regions;
shared_host: a flowkv.shared_host_pool. --report prints, before "sent",
"path <KvPath name>" once the pools are exchanged and "stats <json of
KvTransfer.stats()>" after the send. --cxx-request-ids sends the request
once per id instead, each id the bytes of its hex string, through the C++
call (flowkv._flowkv._bench.send_as_cxx, as a C or C++ sender would: any
bytes), one after the other, each acknowledged before the next.
--hnd-views registers the layers as vLLM hands HND caches to connectors:
views [2, N, T, H, D] (permute(0, 1, 3, 2, 4)) of memory in [2, N, H, T, D]
order, with the layout vllm_flash_attn(geometry, BlockOrder.HND).

Prints "sent" once the send completed (the receiver acknowledged it), then
waits for a line on stdin before it exits (so the receiver decides when the
sender goes away). Exits 1 with the error on stderr on failure.
"""

import argparse
import json
import sys

import torch

import flowkv
from conftest import (DST_BLOCKS, GEOMETRY, KV_STATS_FIELDS, NUM_TOKENS,
                      OPTIONS_TIMEOUT_S, SRC_BLOCKS, engine_options,
                      layer_values, vllm_shape)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--transport", required=True)
    parser.add_argument("--pool", choices=["tensors", "shared_host"],
                        default="tensors")
    parser.add_argument("--path-policy", default="auto")
    parser.add_argument("--staging-ring-bytes", type=int)
    parser.add_argument("--staging-slot-bytes", type=int)
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--cxx-request-ids")
    parser.add_argument("--hnd-views", action="store_true")
    args = parser.parse_args()

    order = flowkv.BlockOrder.HND if args.hnd_views else flowkv.BlockOrder.NHD
    layout = flowkv.KvLayout.vllm_flash_attn(flowkv.KvGeometry(**GEOMETRY),
                                             order)
    options = {"path_policy": args.path_policy}
    if args.staging_ring_bytes is not None:
        options["staging_ring_bytes"] = args.staging_ring_bytes
    if args.staging_slot_bytes is not None:
        options["staging_slot_bytes"] = args.staging_slot_bytes
    engine = flowkv.TransferEngine(**engine_options(args.transport, "prefill"))
    layers = range(GEOMETRY["num_layers"])
    if args.pool == "shared_host":
        pool = flowkv.shared_host_pool(layout)
        for l in layers:
            values = layer_values(l, vllm_shape())
            region = torch.from_numpy(pool.regions[l]).view(torch.float16)
            region[:values.numel()].view(vllm_shape()).copy_(values)
        kv = flowkv.KvTransfer(engine, layout, pool=pool, **options)
    else:
        tensors = [layer_values(l, vllm_shape()) for l in layers]
        if args.hnd_views:
            # The same values, stored HND, handed out as NHD views.
            tensors = [t.permute(0, 1, 3, 2, 4).contiguous()
                       .permute(0, 1, 3, 2, 4) for t in tensors]
            assert not any(t.is_contiguous() for t in tensors)
        kv = flowkv.KvTransfer(engine, layout, tensors, **options)
    peer = engine.connect(args.address)
    kv.announce_pool(peer)
    kv.wait_for_peer_pool(peer, OPTIONS_TIMEOUT_S)
    if args.report:
        print(f"path {kv.peer_path(peer).name}", flush=True)
    if args.cxx_request_ids is not None:
        for hex_id in args.cxx_request_ids.split(","):
            flowkv._flowkv._bench.send_as_cxx(kv, bytes.fromhex(hex_id), peer,
                                              SRC_BLOCKS, DST_BLOCKS,
                                              NUM_TOKENS)
        print("sent", flush=True)
        sys.stdin.readline()
        return 0
    handle = kv.send("req-1", peer, SRC_BLOCKS, DST_BLOCKS, NUM_TOKENS,
                     payload=b"aux-data")
    handle.result(timeout=3 * OPTIONS_TIMEOUT_S)
    if args.report:
        stats = kv.stats()
        print("stats " + json.dumps({f: getattr(stats, f)
                                     for f in KV_STATS_FIELDS}), flush=True)
    print("sent", flush=True)
    sys.stdin.readline()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except flowkv.Error as e:
        print(f"kv_peer: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
