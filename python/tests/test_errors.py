# SPDX-License-Identifier: Apache-2.0
"""Bad input raises the exception class of its status code, with the C++
message, and changes nothing: wrong dtypes, non-contiguous tensors,
read-only buffers, bad ids, unknown peers, oversize payloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import flowkv
from conftest import GEOMETRY, OPTIONS_TIMEOUT_S, engine_options


@pytest.fixture
def engine():
    e = flowkv.TransferEngine(**engine_options("tcp"))
    yield e
    e.close()


def test_error_classes_carry_the_status_code():
    assert issubclass(flowkv.InvalidArgumentError, flowkv.Error)
    assert issubclass(flowkv.InvalidArgumentError, ValueError)
    assert issubclass(flowkv.DeadlineExceededError, TimeoutError)
    with pytest.raises(flowkv.InvalidArgumentError) as info:
        flowkv.KvLayout.flowkv_block_major(flowkv.KvGeometry(num_layers=1))
    assert info.value.code == flowkv.StatusCode.INVALID_ARGUMENT
    assert "num_blocks" in str(info.value)
    for name, code in [("NotFoundError", "NOT_FOUND"),
                       ("UnavailableError", "UNAVAILABLE"),
                       ("CancelledError", "CANCELLED"),
                       ("FailedPreconditionError", "FAILED_PRECONDITION"),
                       ("OutOfRangeError", "OUT_OF_RANGE"),
                       ("ResourceExhaustedError", "RESOURCE_EXHAUSTED"),
                       ("AlreadyExistsError", "ALREADY_EXISTS"),
                       ("UnimplementedError", "UNIMPLEMENTED"),
                       ("InternalError", "INTERNAL")]:
        assert getattr(flowkv, name).code == getattr(flowkv.StatusCode, code)


def test_register_refuses_non_contiguous_and_read_only_memory(engine):
    before = engine.stats().registered_bytes
    array = np.zeros((64, 64), dtype=np.uint8)
    with pytest.raises(flowkv.InvalidArgumentError, match="contiguous range"):
        engine.register_memory(array[:, ::2])
    tensor = torch.zeros(64, 64)
    # (A transposed tensor covers its memory densely and registers:
    # test_misuse.py.)
    with pytest.raises(flowkv.InvalidArgumentError, match="contiguous range"):
        engine.register_memory(tensor[:, ::2])
    read_only = np.zeros(64, dtype=np.uint8)
    read_only.setflags(write=False)
    with pytest.raises(flowkv.InvalidArgumentError, match="read-only"):
        engine.register_memory(read_only)
    with pytest.raises(flowkv.InvalidArgumentError, match="read-only"):
        engine.register_memory(b"immutable bytes")
    with pytest.raises(flowkv.InvalidArgumentError, match="buffer protocol"):
        engine.register_memory(12345)
    with pytest.raises(flowkv.InvalidArgumentError):
        engine.register_memory(bytearray())
    assert engine.regions() == []
    assert engine.stats().registered_bytes == before


def test_pool_of_wrong_dtype_size_or_count_registers_nothing(engine):
    layout = flowkv.KvLayout.vllm_flash_attn(flowkv.KvGeometry(**GEOMETRY))
    shape = [2, GEOMETRY["num_blocks"], GEOMETRY["block_tokens"],
             GEOMETRY["kv_heads"], GEOMETRY["head_dim"]]
    good = [torch.zeros(shape, dtype=torch.float16)
            for _ in range(GEOMETRY["num_layers"])]
    with pytest.raises(flowkv.InvalidArgumentError, match="dtype_bytes"):
        flowkv.KvTransfer(engine, layout,
                          good[:-1] + [torch.zeros(shape, dtype=torch.float32)])
    with pytest.raises(flowkv.InvalidArgumentError, match="regions"):
        flowkv.KvTransfer(engine, layout, good[:-1])
    with pytest.raises(flowkv.InvalidArgumentError, match="bytes"):
        flowkv.KvTransfer(engine, layout, good[:-1] + [good[0][:1]])
    with pytest.raises(flowkv.InvalidArgumentError, match="contiguous"):
        flowkv.KvTransfer(engine, layout,
                          good[:-1] + [good[0][:, :, ::2]])
    assert engine.regions() == []
    with pytest.raises(flowkv.NotFoundError):
        flowkv.KvTransfer(engine, layout, list(range(100, 100 + len(good))))
    kv = flowkv.KvTransfer(engine, layout, good)
    assert len(engine.regions()) == len(good)
    kv.close()


def test_bad_ids_and_unknown_peers(engine):
    with pytest.raises(flowkv.NotFoundError):
        engine.deregister_memory(7)
    with pytest.raises(flowkv.NotFoundError):
        engine.get_peer(12345)
    with pytest.raises(flowkv.NotFoundError):
        engine.disconnect(12345)
    buffer = np.zeros(4096, dtype=np.uint8)
    region = engine.register_memory(buffer)
    handle = engine.write(12345, [(region, 0, 0, 0, 16)])
    assert handle.done
    assert isinstance(handle.status, flowkv.NotFoundError)
    with pytest.raises(flowkv.NotFoundError):
        handle.result()
    with pytest.raises(flowkv.InvalidArgumentError):
        engine.write(1, [("not", "an", "op")])
    with pytest.raises(flowkv.InvalidArgumentError, match="metadata|magic|short"):
        engine.add_peer(b"garbage")
    with pytest.raises(flowkv.InvalidArgumentError):
        engine.listen("not an address")
    with pytest.raises(flowkv.InvalidArgumentError, match="unknown option"):
        flowkv.TransferEngine(nmae="typo")
    assert engine.stats().transfers_active == 0


def test_kv_transfer_refuses_bad_requests_and_changes_nothing(engine):
    layout = flowkv.KvLayout.flowkv_block_major(flowkv.KvGeometry(**GEOMETRY))
    pool = torch.zeros(layout.total_bytes // 2, dtype=torch.float16)
    kv = flowkv.KvTransfer(engine, layout, [pool])
    stats = kv.stats()
    with pytest.raises(flowkv.Error) as unknown_peer:
        kv.send("r", 999, [0], [0], 8).result()
    assert isinstance(unknown_peer.value,
                      (flowkv.NotFoundError, flowkv.FailedPreconditionError))
    too_big = b"x" * (flowkv.MAX_KV_PAYLOAD_BYTES + 1)
    with pytest.raises(flowkv.InvalidArgumentError, match="payload"):
        kv.send("r", 999, [0], [0], 8, payload=too_big).result()
    with pytest.raises(flowkv.InvalidArgumentError):
        kv.send("", 999, [0], [0], 8).result()
    with pytest.raises(flowkv.InvalidArgumentError):
        kv.send("x" * (flowkv.MAX_KV_REQUEST_ID_BYTES + 1), 999, [0], [0],
                8).result()
    with pytest.raises(flowkv.InvalidArgumentError):
        kv.send("r", 999, [0], [0], 8, sender_rank=2, num_senders=2).result()
    with pytest.raises(flowkv.InvalidArgumentError):
        kv.send("r", 999, [-1], [0], 8)
    with pytest.raises(flowkv.InvalidArgumentError):
        kv.expect("", 1.0)
    with pytest.raises(flowkv.NotFoundError):
        kv.peer_pool(999)
    with pytest.raises(flowkv.NotFoundError):
        kv.add_peer_pool(999, layout, [0])
    after = kv.stats()
    assert (after.requests_active, after.results_pending) == (
        stats.requests_active, stats.results_pending)
    assert not kv.poll()
    assert torch.count_nonzero(pool) == 0
    kv.close()


def test_layout_and_allocator_errors_change_nothing():
    with pytest.raises(flowkv.InvalidArgumentError):
        flowkv.KvLayout.parse(b"\x00garbage")
    geometry = flowkv.KvGeometry(**GEOMETRY)
    with pytest.raises(flowkv.InvalidArgumentError):
        flowkv.KvLayout.mla(geometry)  # needs num_parts 1, kv_heads 1
    layout = flowkv.KvLayout.flowkv_block_major(geometry)
    with pytest.raises(flowkv.OutOfRangeError):
        layout.block_list_ranges([GEOMETRY["num_blocks"]])
    allocator = flowkv.BlockAllocator(16)
    blocks = allocator.allocate(4)
    before = allocator.stats()
    with pytest.raises(flowkv.ResourceExhaustedError):
        allocator.allocate(13)
    with pytest.raises(flowkv.InvalidArgumentError):
        allocator.free([15])
    with pytest.raises(flowkv.InvalidArgumentError):
        allocator.free([blocks[0], blocks[0]])
    after = allocator.stats()
    assert (after.free_blocks, after.live_lists) == (before.free_blocks,
                                                     before.live_lists)
    with pytest.raises(flowkv.NotFoundError, match="load_aware"):
        flowkv.Scheduler.create("no_such_policy")
    with pytest.raises(flowkv.InvalidArgumentError):
        flowkv.Scheduler.create("load_aware", {"no_such_param": 1.0})


def test_timeout_argument_must_be_a_number(engine):
    with pytest.raises(flowkv.InvalidArgumentError, match="NaN"):
        engine.take_notifications(wait=float("nan"))
