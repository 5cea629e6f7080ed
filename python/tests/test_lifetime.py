# SPDX-License-Identifier: Apache-2.0
"""Lifetimes across the language boundary: an engine deleted while its
transfers are in flight, an interpreter that exits with live engines,
registered tensors Python tries to free, arrays of engine memory that
outlive the engine object, callbacks that raise."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import weakref

import numpy as np
import torch

import flowkv
from conftest import OPTIONS_TIMEOUT_S, child_env, engine_options

PIECE = 1 << 20


def pair():
    a = flowkv.TransferEngine(**engine_options("tcp", "a"))
    b = flowkv.TransferEngine(**engine_options("tcp", "b"))
    return a, b


def test_deleting_the_engine_with_transfers_in_flight():
    a, b = pair()
    src = np.ones(64 * PIECE, dtype=np.uint8)
    src_region = a.register_memory(src)
    dst = b.allocate_memory(64 * PIECE)
    peer = a.connect(b.listen("127.0.0.1:0"))
    calls = []
    lock = threading.Lock()

    def on_complete(error, stats):
        with lock:
            calls.append(error)

    ops = [(src_region, i * PIECE, dst.id, i * PIECE, PIECE) for i in range(64)]
    handles = [a.write(peer, ops, on_complete=on_complete) for _ in range(4)]
    engine_ref = weakref.ref(a)
    del a  # the only reference: the engine shuts down now
    gc.collect()
    assert engine_ref() is None
    for handle in handles:
        assert handle.wait(3 * OPTIONS_TIMEOUT_S)
        assert handle.status is None or isinstance(
            handle.status, (flowkv.CancelledError, flowkv.UnavailableError))
    with lock:
        assert len(calls) == len(handles)
    # The source buffer was released by the engine and is still ours.
    assert sys.getrefcount(src) == 2
    b.close()


def test_interpreter_exit_with_live_engines_and_transfers():
    script = textwrap.dedent("""
        import numpy as np, flowkv
        opts = dict(ucx_config={"TLS": "tcp", "NET_DEVICES": "lo"})
        a = flowkv.TransferEngine(name="a", **opts)
        b = flowkv.TransferEngine(name="b", **opts)
        src = np.ones(32 << 20, dtype=np.uint8)
        region = a.register_memory(src)
        dst = b.allocate_memory(32 << 20)
        view = dst.array[10:20]           # engine memory outliving close
        peer = a.connect(b.listen("127.0.0.1:0"))
        layout = flowkv.KvLayout.flowkv_block_major(flowkv.KvGeometry(
            num_layers=1, num_blocks=4, block_tokens=4, kv_heads=1,
            head_dim=4, dtype_bytes=2))
        kv = flowkv.KvTransfer(a, layout, [np.zeros(layout.total_bytes, np.uint8)])
        handles = [a.write(peer, [(region, 0, dst.id, 0, 32 << 20)],
                           on_complete=lambda e, s: print("done", e))
                   for _ in range(8)]
        print("exiting", flush=True)
        # no cleanup: atexit and finalization must cope
    """)
    result = subprocess.run([sys.executable, "-c", script], env=child_env(),
                            capture_output=True, text=True,
                            timeout=6 * OPTIONS_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert "exiting" in result.stdout


def test_registered_tensor_stays_valid_after_python_drops_it():
    a, b = pair()
    tensor = torch.full((1 << 16,), 7, dtype=torch.uint8)
    tensor_ref = weakref.ref(tensor)
    region = a.register_memory(tensor)
    back = b.allocate_memory(1 << 16)
    peer = b.connect(a.listen("127.0.0.1:0"))
    del tensor
    gc.collect()
    assert tensor_ref() is not None  # the engine holds it
    # The memory is still valid: the peer reads it.
    b.read(peer, [(region, 0, back.id, 0, 1 << 16)]).result(OPTIONS_TIMEOUT_S)
    assert (back.array == 7).all()
    a.deregister_memory(region)
    gc.collect()
    assert tensor_ref() is None  # released on deregistration
    a.close()
    b.close()


def test_allocated_array_keeps_engine_memory_alive():
    engine = flowkv.TransferEngine(**engine_options("tcp"))
    memory = engine.allocate_memory(4096)
    array = memory.array
    with_region = memory.id
    del memory
    with __import__("pytest").raises(flowkv.FailedPreconditionError):
        engine.deregister_memory(with_region)
    engine.close()
    assert engine.closed
    array[:] = 3  # still valid: the array holds the engine
    assert int(array.sum()) == 3 * 4096
    del array
    gc.collect()


def test_handle_outlives_engine_and_raising_callback_is_reported():
    a, b = pair()
    src = np.arange(4096, dtype=np.uint8)
    region = a.register_memory(src)
    dst = b.allocate_memory(4096)
    peer = a.connect(b.listen("127.0.0.1:0"))
    reported = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda info: reported.append(info.exc_type)
    try:
        def boom(error, stats):
            raise RuntimeError("callback failure")
        a.write(peer, [(region, 0, dst.id, 0, 4096)],
                on_complete=boom).result(OPTIONS_TIMEOUT_S)
        # The progress thread survived: the next transfer completes.
        handle = a.write(peer, [(region, 0, dst.id, 0, 4096)])
        handle.result(OPTIONS_TIMEOUT_S)
    finally:
        sys.unraisablehook = old_hook
    assert RuntimeError in reported
    assert np.array_equal(dst.array, src)
    a.close()
    b.close()
    assert handle.done and handle.status is None


def test_callback_that_drops_the_last_engine_reference():
    a, b = pair()
    src = np.arange(4096, dtype=np.uint8)
    region = a.register_memory(src)
    dst = b.allocate_memory(4096)
    peer = a.connect(b.listen("127.0.0.1:0"))
    holder = {"engine": a}
    engine_ref = weakref.ref(a)
    dropped = threading.Event()

    def drop(error, stats):
        holder.clear()  # the last reference goes on the engine's thread
        dropped.set()

    handle = a.write(peer, [(region, 0, dst.id, 0, 4096)], on_complete=drop)
    del a
    assert dropped.wait(3 * OPTIONS_TIMEOUT_S)
    assert handle.wait(3 * OPTIONS_TIMEOUT_S)
    gc.collect()
    assert engine_ref() is None
    b.close()
