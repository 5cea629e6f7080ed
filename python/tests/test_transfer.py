# SPDX-License-Identifier: Apache-2.0
"""Bytes that arrive: KV moved between torch tensors of different layouts by
two processes (vLLM FlashAttention layer-major -> FlowKV block-major), over
shared memory and over tcp, and raw engine writes / reads / messages within
one process."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import flowkv
from conftest import (DST_BLOCKS, GEOMETRY, NUM_TOKENS, OPTIONS_TIMEOUT_S,
                      SRC_BLOCKS, engine_options, layer_values,
                      receive_request_from_peer, vllm_shape)


def test_kv_moves_from_vllm_layout_to_block_major_across_processes(transport):
    receive_request_from_peer(transport)


def connected_pair(transport):
    a = flowkv.TransferEngine(**engine_options(transport, "a"))
    b = flowkv.TransferEngine(**engine_options(transport, "b"))
    return a, b


def test_write_read_and_messages_between_engines(transport):
    a, b = connected_pair(transport)
    src = np.arange(1 << 16, dtype=np.uint8)
    src_region = a.register_memory(src)
    dst = b.allocate_memory(1 << 16)
    peer = a.connect(b.listen("127.0.0.1:0"))

    done = []
    handle = a.write(peer, [flowkv.TransferOp(src_region, 0, dst.id, 100, 1000),
                            (src_region, 5000, dst.id, 9000, 3000)],
                     notification=b"note", on_complete=lambda e, s: done.append(e))
    assert handle.wait(3 * OPTIONS_TIMEOUT_S)
    handle.result()
    assert handle.status is None and done == [None]
    assert handle.stats.ops == 2 and handle.stats.bytes == 4000
    assert np.array_equal(dst.array[100:1100], src[0:1000])
    assert np.array_equal(dst.array[9000:12000], src[5000:8000])

    notes = b.take_notifications(wait=OPTIONS_TIMEOUT_S)
    assert [(n.kind, n.data) for n in notes] == [
        (flowkv.NotificationKind.TRANSFER, b"note")]

    # Read back from b's memory into a fresh local buffer.
    back = np.zeros(3000, dtype=np.uint8)
    back_region = a.register_memory(back)
    # A region registered after connecting is known to peers that connect
    # later only; reading into local memory needs only the peer's region.
    a.read(peer, [(dst.id, 9000, back_region, 0, 3000)]).result(OPTIONS_TIMEOUT_S)
    assert np.array_equal(back, src[5000:8000])

    a.send(peer, b"hello").result(OPTIONS_TIMEOUT_S)
    messages = b.take_notifications(wait=OPTIONS_TIMEOUT_S)
    assert [(n.kind, n.data) for n in messages] == [
        (flowkv.NotificationKind.MESSAGE, b"hello")]
    a.close()
    b.close()


def test_metadata_exchange_connects_without_a_listener():
    a, b = connected_pair("tcp")
    metadata = b.local_metadata()
    flowkv.TransferEngine.validate_metadata(metadata)
    peer = a.add_peer(metadata)
    assert a.get_peer(peer).name == "b"
    assert [p.id for p in a.peers() if p.connected] == [peer]
    a.disconnect(peer)
    assert not a.get_peer(peer).connected


def test_fetch_pulls_kv_and_releases_it_on_the_source(transport):
    geometry = flowkv.KvGeometry(**GEOMETRY)
    src_layout = flowkv.KvLayout.vllm_flash_attn(geometry)
    dst_layout = flowkv.KvLayout.flowkv_block_major(geometry)
    tensors = [layer_values(l, vllm_shape()) for l in range(GEOMETRY["num_layers"])]
    pool = torch.zeros(dst_layout.total_bytes // 2, dtype=torch.float16)
    with flowkv.TransferEngine(**engine_options(transport, "prefill")) as p, \
            flowkv.TransferEngine(**engine_options(transport, "decode")) as d:
        prefill = flowkv.KvTransfer(p, src_layout, tensors)
        decode = flowkv.KvTransfer(d, dst_layout, [pool])
        peer = d.connect(p.listen("127.0.0.1:0"))
        decode.announce_pool(peer)
        prefill.poll(wait=OPTIONS_TIMEOUT_S)  # takes the descriptor, answers
        decode.wait_for_peer_pool(peer, OPTIONS_TIMEOUT_S)
        assert decode.peer_pool(peer) == src_layout

        decode.fetch("req-f", peer, SRC_BLOCKS, DST_BLOCKS,
                     NUM_TOKENS).result(3 * OPTIONS_TIMEOUT_S)
        assert decode.poll().finished == [("req-f", b"")]
        released = []
        deadline = time.monotonic() + 3 * OPTIONS_TIMEOUT_S
        while not released and time.monotonic() < deadline:
            released += prefill.poll(wait=0.1).released
        assert [(r, e) for r, _, e in released] == [("req-f", None)]
        assert decode.layers_arrived("req-f") == GEOMETRY["num_layers"]

        T = GEOMETRY["block_tokens"]
        dst = pool.view(GEOMETRY["num_blocks"], GEOMETRY["num_layers"], 2, T,
                        GEOMETRY["kv_heads"], GEOMETRY["head_dim"])
        for layer, src in enumerate(tensors):
            for i, (s, b) in enumerate(zip(SRC_BLOCKS, DST_BLOCKS)):
                tokens = min(T, NUM_TOKENS - i * T)
                assert torch.equal(dst[b, layer, :, :tokens],
                                   src[:, s, :tokens])
        prefill.close()
        decode.close()
