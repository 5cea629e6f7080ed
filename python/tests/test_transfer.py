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
                      SRC_BLOCKS, engine_options, layer_values, start_peer,
                      vllm_shape)


def test_kv_moves_from_vllm_layout_to_block_major_across_processes(transport):
    geometry = flowkv.KvGeometry(**GEOMETRY)
    layout = flowkv.KvLayout.flowkv_block_major(geometry)
    pool = torch.zeros(layout.total_bytes // 2, dtype=torch.float16)
    engine = flowkv.TransferEngine(**engine_options(transport, "decode"))
    kv = flowkv.KvTransfer(engine, layout, [pool])
    address = engine.listen("127.0.0.1:0")
    sender = start_peer("--address", address, "--transport", transport)
    finished, failed = [], []
    try:
        deadline = time.monotonic() + 3 * OPTIONS_TIMEOUT_S
        while not finished and not failed and sender.poll() is None \
                and time.monotonic() < deadline:
            result = kv.poll(wait=0.1)
            finished += result.finished
            failed += result.failed
        assert sender.stdout.readline().strip() == "sent"
    finally:
        out, err = sender.communicate("bye\n", timeout=3 * OPTIONS_TIMEOUT_S)
    assert sender.returncode == 0, err
    assert failed == []
    assert finished == [("req-1", b"aux-data")]

    g = GEOMETRY
    T = g["block_tokens"]
    dst = pool.view(g["num_blocks"], g["num_layers"], 2, T, g["kv_heads"],
                    g["head_dim"])
    for layer in range(g["num_layers"]):
        src = layer_values(layer, vllm_shape())
        for part in range(2):
            for i, (s, d) in enumerate(zip(SRC_BLOCKS, DST_BLOCKS)):
                tokens = min(T, NUM_TOKENS - i * T)
                assert torch.equal(dst[d, layer, part, :tokens],
                                   src[part, s, :tokens]), (layer, part, i)
    untouched = [b for b in range(g["num_blocks"]) if b not in DST_BLOCKS]
    assert torch.count_nonzero(dst[untouched]) == 0
    kv.close()
    engine.close()


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
