# SPDX-License-Identifier: Apache-2.0
"""The GIL is released while a call blocks: another Python thread runs
while the main thread waits in take_notifications / poll / wait, and
callbacks from the engine's thread take the GIL themselves."""

from __future__ import annotations

import threading

import numpy as np

import flowkv
from conftest import GEOMETRY, OPTIONS_TIMEOUT_S, engine_options


def test_blocking_calls_let_other_threads_run():
    a = flowkv.TransferEngine(**engine_options("tcp", "a"))
    b = flowkv.TransferEngine(**engine_options("tcp", "b"))
    peer = b.connect(a.listen("127.0.0.1:0"))
    go = threading.Event()

    def sender():
        go.wait()
        # Runs Python code (needs the GIL) while the main thread blocks.
        b.send(peer, b"from another thread").result(OPTIONS_TIMEOUT_S)

    thread = threading.Thread(target=sender)
    thread.start()
    go.set()
    # Returns as soon as the message arrives; it could not arrive if this
    # call held the GIL for its whole wait.
    notes = a.take_notifications(wait=3 * OPTIONS_TIMEOUT_S)
    thread.join()
    assert [n.data for n in notes] == [b"from another thread"]

    layout = flowkv.KvLayout.flowkv_block_major(flowkv.KvGeometry(**GEOMETRY))
    kv = flowkv.KvTransfer(a, layout, [np.zeros(layout.total_bytes, np.uint8)])
    thread = threading.Thread(target=sender)
    thread.start()
    result = kv.poll(wait=3 * OPTIONS_TIMEOUT_S)
    thread.join()
    assert [n.data for n in result.other] == [b"from another thread"]
    kv.close()
    a.close()
    b.close()


def test_completion_callbacks_run_with_the_gil_on_the_engine_thread():
    a = flowkv.TransferEngine(**engine_options("tcp", "a"))
    b = flowkv.TransferEngine(**engine_options("tcp", "b"))
    src = np.arange(256, dtype=np.uint8)
    region = a.register_memory(src)
    dst = b.allocate_memory(256)
    peer = a.connect(b.listen("127.0.0.1:0"))
    seen = []
    main = threading.get_ident()
    handles = [a.write(peer, [(region, 0, dst.id, 0, 256)],
                       on_complete=lambda e, s: seen.append(
                           (e, s.bytes, threading.get_ident() != main)))
               for _ in range(50)]
    for h in handles:
        h.result(OPTIONS_TIMEOUT_S)
    assert len(seen) == 50
    assert all(e is None and n == 256 for e, n, _ in seen)
    assert any(other_thread for _, _, other_thread in seen)
    a.close()
    b.close()
