# SPDX-License-Identifier: Apache-2.0
"""The Python surface under misuse: unfinished handles."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

import flowkv
from conftest import (DST_BLOCKS, GEOMETRY, NUM_TOKENS, OPTIONS_TIMEOUT_S,
                      SRC_BLOCKS, assert_block_major_holds_request,
                      engine_options, start_peer)


@pytest.fixture
def engine():
    e = flowkv.TransferEngine(**engine_options("tcp"),
                              max_registered_bytes=64 << 20)
    yield e
    e.close()


def block_major():
    return flowkv.KvLayout.flowkv_block_major(flowkv.KvGeometry(**GEOMETRY))


def pool_for(layout):
    return torch.zeros(layout.total_bytes // 2, dtype=torch.float16)


# ---- Handles -----------------------------------------------------------------


def test_status_of_an_unfinished_handle_is_none():
    a = flowkv.TransferEngine(**engine_options("tcp", "a"))
    b = flowkv.TransferEngine(**engine_options("tcp", "b"))
    source = bytearray(b"x" * 64)
    target = bytearray(64)
    local = a.register_memory(source)
    remote = b.register_memory(target)
    peer_ab = a.connect(b.listen("127.0.0.1:0"))
    deadline = time.monotonic() + OPTIONS_TIMEOUT_S
    peers = []
    while not peers and time.monotonic() < deadline:
        peers = [p.id for p in b.peers() if p.connected]
    assert peers
    # Park b's progress thread in a callback: a's acknowledged write then
    # cannot finish until it is let go.
    entered, gate = threading.Event(), threading.Event()

    def park(error, stats):
        entered.set()
        gate.wait(OPTIONS_TIMEOUT_S)

    b.send(peers[0], b"park", on_complete=park)
    assert entered.wait(OPTIONS_TIMEOUT_S)
    handle = a.write(peer_ab, [(local, 0, remote, 0, 64)],
                     notification=b"n", acknowledged=True)
    try:
        assert not handle.done
        assert handle.status is None
    finally:
        gate.set()
    handle.result(OPTIONS_TIMEOUT_S)
    assert handle.status is None
    failed = a.send(98765, b"x")
    assert failed.wait(OPTIONS_TIMEOUT_S)
    assert isinstance(failed.status, flowkv.Error)
    a.close()
    b.close()
