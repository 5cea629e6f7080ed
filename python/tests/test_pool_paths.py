# SPDX-License-Identifier: Apache-2.0
"""KvTransfer over PoolMemory (host_pool, shared_host_pool, cuda_pool) and
the paths bytes take: two processes move a request vLLM FlashAttention
(layer-major) -> FlowKV block-major over a forced staging ring of many small
slots and over IPC between shared host pools, byte-exact; each side names
its path (peer_path); and bad input raises the right exception class."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
import time
import weakref

import numpy as np
import pytest
import torch

import flowkv
from conftest import (DST_BLOCKS, GEOMETRY, KV_STATS_FIELDS, NUM_TOKENS,
                      OPTIONS_TIMEOUT_S, SRC_BLOCKS,
                      assert_block_major_holds_request, child_env,
                      engine_options, start_peer)

# A small ring of many slots: a request of NUM_TOKENS tokens fills ~30 slots
# through a ring of 4 slots, so slots are reused under credit flow control.
SMALL_RING = dict(staging_ring_bytes=4096, staging_slot_bytes=1024)


def block_major_layout() -> flowkv.KvLayout:
    return flowkv.KvLayout.flowkv_block_major(flowkv.KvGeometry(**GEOMETRY))


def request_bytes_bounds(layout: flowkv.KvLayout):
    """The bytes a request of NUM_TOKENS tokens in DST_BLOCKS moves: at
    least its tokens', at most its whole blocks' (the last is partial)."""
    return NUM_TOKENS * layout.bytes_per_token, \
        len(DST_BLOCKS) * layout.block_bytes


def receive_from_peer(engine, kv, *peer_args):
    """Starts kv_peer.py --report with `peer_args` against `engine`, polls
    `kv` until the request finished or failed, and returns (finished, failed,
    the sender's path, the sender's stats, this side's path to the sender,
    this side's stats once its ring is free again)."""
    address = engine.listen("127.0.0.1:0")
    sender = start_peer("--address", address, "--report", *peer_args)
    finished, failed = [], []
    try:
        deadline = time.monotonic() + 3 * OPTIONS_TIMEOUT_S
        while not finished and not failed and sender.poll() is None \
                and time.monotonic() < deadline:
            result = kv.poll(wait=0.1)
            finished += result.finished
            failed += result.failed
        lines = [sender.stdout.readline().strip() for _ in range(3)]
        assert lines[0].startswith("path ") and lines[2] == "sent", lines
        sender_path = lines[0].split()[1]
        sender_stats = json.loads(lines[1][len("stats "):])
        peers = [p.id for p in engine.peers() if p.connected]
        assert len(peers) == 1
        path = kv.peer_path(peers[0])
        # The staging worker returns slots after the slots' credits went.
        deadline = time.monotonic() + 3 * OPTIONS_TIMEOUT_S
        stats = kv.stats()
        while stats.ring_slots_free != stats.ring_slots \
                and time.monotonic() < deadline:
            kv.poll(wait=0.01)
            stats = kv.stats()
    finally:
        _, err = sender.communicate("bye\n", timeout=3 * OPTIONS_TIMEOUT_S)
    assert sender.returncode == 0, err
    return finished, failed, sender_path, sender_stats, path, stats


def shared_region(pool: flowkv.PoolMemory, region: int = 0) -> torch.Tensor:
    return torch.from_numpy(pool.regions[region]).view(torch.float16)


@pytest.mark.parametrize("receiver", ["shared_host_pool", "tensor"])
def test_forced_staging_moves_kv_through_many_slots_across_processes(
        transport, receiver):
    layout = block_major_layout()
    engine = flowkv.TransferEngine(**engine_options(transport, "decode"))
    if receiver == "shared_host_pool":
        pool = flowkv.shared_host_pool(layout)
        data = shared_region(pool)
        kv = flowkv.KvTransfer(engine, layout, pool=pool,
                               path_policy="force_staging", **SMALL_RING)
    else:
        data = torch.zeros(layout.total_bytes // 2, dtype=torch.float16)
        kv = flowkv.KvTransfer(engine, layout, [data],
                               path_policy=flowkv.KvPathPolicy.FORCE_STAGING,
                               **SMALL_RING)
    finished, failed, sender_path, sent, path, got = receive_from_peer(
        engine, kv, "--transport", transport, "--pool", "shared_host",
        "--path-policy", "force_staging",
        "--staging-ring-bytes", str(SMALL_RING["staging_ring_bytes"]),
        "--staging-slot-bytes", str(SMALL_RING["staging_slot_bytes"]))
    assert failed == []
    assert finished == [("req-1", b"aux-data")]
    assert sender_path == "STAGING"
    assert path == flowkv.KvPath.STAGING
    assert_block_major_holds_request(data)

    slots = SMALL_RING["staging_ring_bytes"] // SMALL_RING["staging_slot_bytes"]
    least, most = request_bytes_bounds(layout)
    assert least <= sent["staged_bytes_sent"] <= most
    assert got.staged_bytes_received == sent["staged_bytes_sent"]
    assert got.staged_slots_received == sent["staged_slots_sent"]
    assert got.staged_slots_received > 2 * slots  # the ring was reused
    assert sent["ipc_copies"] == 0 and got.ipc_copies == 0
    assert got.slots_refused == 0
    assert got.ring_slots == slots and sent["ring_slots"] == slots
    assert 0 < got.ring_slots_max_in_use <= slots
    assert 0 < sent["ring_slots_max_in_use"] <= slots
    assert got.ring_slots_free == slots
    kv.close()
    engine.close()


def test_shared_host_pools_move_kv_over_ipc_across_processes(transport):
    layout = block_major_layout()
    engine = flowkv.TransferEngine(**engine_options(transport, "decode"))
    pool = flowkv.shared_host_pool(layout)
    kv = flowkv.KvTransfer(engine, layout, pool=pool, **SMALL_RING)
    finished, failed, sender_path, sent, path, got = receive_from_peer(
        engine, kv, "--transport", transport, "--pool", "shared_host")
    assert failed == []
    assert finished == [("req-1", b"aux-data")]
    assert sender_path == "IPC"
    assert path == flowkv.KvPath.IPC
    assert_block_major_holds_request(shared_region(pool))
    assert sent["ipc_copies"] > 0
    assert sent["staged_slots_sent"] == 0
    assert got.staged_slots_received == 0
    kv.close()
    engine.close()


# ---- In one process: two engines, pools exchanged by descriptors ----

def exchange(a_engine, a, b_engine, b):
    """Connects a to b and exchanges their pools (a announces, b answers).
    Returns (a's id of b, b's id of a)."""
    ab = a_engine.connect(b_engine.listen("127.0.0.1:0"))
    a.announce_pool(ab)
    ba = None
    deadline = time.monotonic() + 3 * OPTIONS_TIMEOUT_S
    while ba is None and time.monotonic() < deadline:
        b.poll(wait=0.01)
        for p in b_engine.peers():
            try:
                b.peer_pool(p.id)
                ba = p.id
            except flowkv.NotFoundError:
                pass
    assert ba is not None
    a.wait_for_peer_pool(ab, OPTIONS_TIMEOUT_S)
    return ab, ba


def poll_until_failed(kv, request_id):
    deadline = time.monotonic() + 3 * OPTIONS_TIMEOUT_S
    while time.monotonic() < deadline:
        for rid, error in kv.poll(wait=0.01).failed:
            if rid == request_id:
                return error
    return None


@pytest.fixture
def engines():
    made = [flowkv.TransferEngine(**engine_options("tcp", name))
            for name in ("a", "b")]
    yield made
    for e in made:
        e.close()


def test_force_ipc_fails_where_ipc_cannot_reach(engines):
    a_engine, b_engine = engines
    layout = block_major_layout()
    a = flowkv.KvTransfer(a_engine, layout,
                          pool=flowkv.shared_host_pool(layout),
                          path_policy="force_ipc", **SMALL_RING)
    tensor = torch.zeros(layout.total_bytes // 2, dtype=torch.float16)
    b = flowkv.KvTransfer(b_engine, layout, [tensor],
                          path_policy="force_staging", **SMALL_RING)
    with pytest.raises(flowkv.FailedPreconditionError):
        a.peer_path(12345)  # no pool known
    ab, ba = exchange(a_engine, a, b_engine, b)
    with pytest.raises(flowkv.FailedPreconditionError, match="kForceIpc"):
        a.peer_path(ab)
    handle = a.send("no-path", ab, SRC_BLOCKS, DST_BLOCKS, NUM_TOKENS)
    with pytest.raises(flowkv.FailedPreconditionError):
        handle.result(3 * OPTIONS_TIMEOUT_S)
    # The other side stages: a's pool has a ring.
    assert b.peer_path(ba) == flowkv.KvPath.STAGING
    a.close()
    b.close()


class FakeEvent:
    """Stands for a torch.cuda.Event: an object with `cuda_event`."""

    def __init__(self, handle: int) -> None:
        self.cuda_event = handle


def test_a_ready_event_with_a_host_pool_fails_the_send(engines):
    a_engine, b_engine = engines
    layout = block_major_layout()
    a_pool = flowkv.shared_host_pool(layout)
    a = flowkv.KvTransfer(a_engine, layout, pool=a_pool,
                          path_policy="force_staging", **SMALL_RING)
    b = flowkv.KvTransfer(b_engine, layout,
                          pool=flowkv.host_pool([np.zeros(layout.total_bytes,
                                                          np.uint8)]),
                          **SMALL_RING)
    ab, ba = exchange(a_engine, a, b_engine, b)
    assert a.peer_path(ab) == flowkv.KvPath.STAGING
    assert b.peer_path(ba) == flowkv.KvPath.STAGING  # a host_pool cannot share

    event = FakeEvent(0x1234)
    held = weakref.ref(event)
    handle = a.send("event", ab, SRC_BLOCKS, DST_BLOCKS, NUM_TOKENS,
                    ready_event=event)
    del event
    with pytest.raises(flowkv.InvalidArgumentError):
        handle.result(3 * OPTIONS_TIMEOUT_S)
    assert isinstance(poll_until_failed(b, "event"), flowkv.InvalidArgumentError)
    a.poll()  # drops the events of finished sends
    gc.collect()
    assert held() is None

    # A raw cudaEvent_t (int) is refused the same way.
    with pytest.raises(flowkv.InvalidArgumentError):
        a.send("raw", ab, SRC_BLOCKS, DST_BLOCKS, NUM_TOKENS,
               ready_event=0x1234).result(3 * OPTIONS_TIMEOUT_S)
    # Refused before anything is sent: never recorded, not an event.
    for bad in (FakeEvent(0), 0, "event", 1.5, FakeEvent(-1)):
        with pytest.raises(flowkv.InvalidArgumentError):
            a.send("bad", ab, SRC_BLOCKS, DST_BLOCKS, NUM_TOKENS,
                   ready_event=bad)

    # The KvTransfer still works: the same request without an event.
    a_data = shared_region(a_pool)
    a_data.copy_(torch.arange(a_data.numel()).to(torch.float16))
    a.send("ok", ab, SRC_BLOCKS, DST_BLOCKS,
           NUM_TOKENS).result(3 * OPTIONS_TIMEOUT_S)
    finished = []
    deadline = time.monotonic() + 3 * OPTIONS_TIMEOUT_S
    while not finished and time.monotonic() < deadline:
        finished += b.poll(wait=0.01).finished
    assert finished == [("ok", b"")]
    a.close()
    b.close()


def test_fetch_over_staging_is_unimplemented(engines):
    a_engine, b_engine = engines
    layout = block_major_layout()
    a = flowkv.KvTransfer(a_engine, layout,
                          pool=flowkv.shared_host_pool(layout),
                          path_policy="force_staging", **SMALL_RING)
    b = flowkv.KvTransfer(b_engine, layout,
                          pool=flowkv.shared_host_pool(layout),
                          path_policy="force_staging", **SMALL_RING)
    ab, _ = exchange(a_engine, a, b_engine, b)
    with pytest.raises(flowkv.UnimplementedError):
        a.fetch("pull", ab, SRC_BLOCKS, DST_BLOCKS,
                NUM_TOKENS).result(3 * OPTIONS_TIMEOUT_S)
    a.close()
    b.close()


# ---- Creating pools and KvTransfers ----

def test_bad_staging_options_and_pools_are_refused(engines):
    engine = engines[0]
    layout = block_major_layout()
    pool = flowkv.shared_host_pool(layout)
    with pytest.raises(flowkv.InvalidArgumentError):
        flowkv.KvTransfer(engine, layout, pool=pool, staging_slot_bytes=0)
    with pytest.raises(flowkv.InvalidArgumentError, match="ring_bytes"):
        flowkv.KvTransfer(engine, layout, pool=pool, staging_ring_bytes=4096,
                          staging_slot_bytes=8192)
    with pytest.raises(flowkv.InvalidArgumentError, match="path_policy"):
        flowkv.KvTransfer(engine, layout, pool=pool, path_policy="sometimes")
    with pytest.raises(flowkv.InvalidArgumentError, match="pool"):
        flowkv.KvTransfer(engine, layout, pool=object())
    with pytest.raises(flowkv.InvalidArgumentError, match="both"):
        flowkv.KvTransfer(engine, layout, [torch.zeros(layout.total_bytes // 2,
                                                       dtype=torch.float16)],
                          pool=pool)
    with pytest.raises(flowkv.InvalidArgumentError):  # too small
        flowkv.KvTransfer(engine, layout,
                          pool=flowkv.shared_host_pool([layout.total_bytes - 1]))
    with pytest.raises(flowkv.InvalidArgumentError):  # another region count
        flowkv.KvTransfer(engine, layout, pool=flowkv.shared_host_pool(
            [layout.total_bytes, 4096]))
    # The regions form with bad staging options leaves nothing registered.
    before = engine.stats().registered_bytes
    with pytest.raises(flowkv.InvalidArgumentError):
        flowkv.KvTransfer(engine, layout,
                          [torch.zeros(layout.total_bytes // 2,
                                       dtype=torch.float16)],
                          path_policy="force_staging", staging_slot_bytes=0)
    assert engine.stats().registered_bytes == before
    # Valid options work, in both forms.
    flowkv.KvTransfer(engine, layout, pool=pool, **SMALL_RING).close()
    flowkv.KvTransfer(engine, layout, pool, **SMALL_RING).close()


def test_pool_factories_refuse_bad_buffers():
    with pytest.raises(flowkv.InvalidArgumentError):
        flowkv.host_pool([])
    with pytest.raises(flowkv.InvalidArgumentError, match=r"buffers\[1\]"):
        flowkv.host_pool([bytearray(16), b"read-only"])
    with pytest.raises(flowkv.InvalidArgumentError):
        flowkv.host_pool([np.zeros(0, np.uint8)])
    with pytest.raises(flowkv.InvalidArgumentError):
        flowkv.host_pool(["text"])
    with pytest.raises(flowkv.InvalidArgumentError):
        flowkv.host_pool([torch.zeros(8, 8)[:, ::2]])  # gaps
    for bad in ([], [0], [16, 0], "x", [-1]):
        with pytest.raises(flowkv.InvalidArgumentError):
            flowkv.shared_host_pool(bad)
    with pytest.raises(flowkv.InvalidArgumentError, match="host memory"):
        flowkv.cuda_pool([torch.zeros(16)])
    with pytest.raises(flowkv.InvalidArgumentError):
        flowkv.cuda_pool([])


def test_pools_expose_and_hold_their_memory():
    layout = block_major_layout()
    shared = flowkv.shared_host_pool([4096, 100])
    assert shared.kind == flowkv.MemoryKind.HOST
    assert shared.num_regions == 2 and shared.shareable
    assert [shared.region_bytes(r) for r in range(2)] == [4096, 100]
    with pytest.raises(flowkv.InvalidArgumentError):
        shared.region_bytes(2)
    arrays = shared.regions
    assert [a.nbytes for a in arrays] == [4096, 100]
    assert arrays[0].ctypes.data == shared.region_address(0)
    arrays[0][:] = 7
    torch.from_numpy(arrays[1])[:] = 9
    del shared
    gc.collect()
    # The arrays keep the shared memory mapped after the pool object went.
    assert int(arrays[0].sum()) == 7 * 4096 and int(arrays[1].sum()) == 9 * 100

    assert flowkv.shared_host_pool(layout).region_bytes(0) == layout.total_bytes

    tensor = torch.zeros(1024)
    held = weakref.ref(tensor)
    array = np.zeros(64, np.uint8)
    host = flowkv.host_pool([tensor, array])
    assert not host.shareable
    assert host.regions[0] is tensor and host.regions[1] is array
    assert host.region_address(0) == tensor.data_ptr()
    assert host.region_bytes(0) == 4096
    del tensor
    gc.collect()
    assert held() is not None  # the pool holds its buffers
    del host
    gc.collect()
    assert held() is None


def test_interpreter_exit_with_staged_sends_in_flight():
    script = textwrap.dedent("""
        import time, torch, flowkv
        opts = dict(ucx_config={"TLS": "tcp", "NET_DEVICES": "lo"})
        a = flowkv.TransferEngine(name="a", **opts)
        b = flowkv.TransferEngine(name="b", **opts)
        layout = flowkv.KvLayout.flowkv_block_major(flowkv.KvGeometry(
            num_layers=4, num_blocks=256, block_tokens=16, kv_heads=8,
            head_dim=128, dtype_bytes=2))
        ring = dict(staging_ring_bytes=1 << 20, staging_slot_bytes=64 << 10)
        tensor = torch.ones(layout.total_bytes // 2, dtype=torch.float16)
        ka = flowkv.KvTransfer(a, layout, pool=flowkv.host_pool([tensor]),
                               **ring)
        kb = flowkv.KvTransfer(b, layout, pool=flowkv.shared_host_pool(layout),
                               **ring)
        del tensor                        # the pool holds it
        peer = a.connect(b.listen("127.0.0.1:0"))
        ka.announce_pool(peer)
        deadline = time.monotonic() + 30
        known = False
        while not known and time.monotonic() < deadline:
            kb.poll(wait=0.01)            # takes a's descriptor, answers
            for p in b.peers():
                try:
                    kb.peer_pool(p.id)
                    known = True
                except flowkv.NotFoundError:
                    pass
        ka.wait_for_peer_pool(peer, 10.0)
        print(ka.peer_path(peer).name, flush=True)
        blocks = list(range(256))
        handles = [ka.send(f"r{i}", peer, blocks, blocks, 256 * 16)
                   for i in range(4)]
        print("exiting", flush=True)
        # no cleanup: atexit and finalization must cope
    """)
    result = subprocess.run([sys.executable, "-c", script], env=child_env(),
                            capture_output=True, text=True,
                            timeout=6 * OPTIONS_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["STAGING", "exiting"], result.stderr


class FakeCudaTensor:
    """Looks like a contiguous torch CUDA tensor on cuda:`index` (no memory
    behind it): reaches CudaPoolMemory::Create without a GPU."""

    def __init__(self, index: int = 0) -> None:
        self.device = type("Device", (), {"type": "cuda", "index": index})()

    def data_ptr(self) -> int:
        return 0x7F0000000000

    def is_contiguous(self) -> bool:
        return True

    def numel(self) -> int:
        return 1024

    def element_size(self) -> int:
        return 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_pool_without_a_gpu_or_cuda_build():
    with pytest.raises(flowkv.InvalidArgumentError, match=r"tensors\[1\]"):
        flowkv.cuda_pool([FakeCudaTensor(0), FakeCudaTensor(1)])
    with pytest.raises(flowkv.InvalidArgumentError, match="device"):
        flowkv.cuda_pool([FakeCudaTensor()], device="cuda")
    expected = (flowkv.FailedPreconditionError if flowkv.HAS_CUDA_POOL
                else flowkv.UnimplementedError)
    with pytest.raises(expected):
        flowkv.cuda_pool([FakeCudaTensor()])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.skipif(not flowkv.HAS_CUDA_POOL, reason="built without CUDA")
def test_cuda_pools_stage_after_the_ready_event(engines):
    a_engine, b_engine = engines
    src_layout = flowkv.KvLayout.vllm_flash_attn(flowkv.KvGeometry(**GEOMETRY))
    layout = block_major_layout()
    from conftest import layer_values, vllm_shape
    src = [torch.zeros(vllm_shape(), dtype=torch.float16, device="cuda")
           for _ in range(GEOMETRY["num_layers"])]
    dst = torch.zeros(layout.total_bytes // 2, dtype=torch.float16,
                      device="cuda")
    a = flowkv.KvTransfer(a_engine, src_layout,
                          pool=flowkv.cuda_pool(src, share=False), **SMALL_RING)
    b = flowkv.KvTransfer(b_engine, layout,
                          pool=flowkv.cuda_pool([dst], share=False),
                          **SMALL_RING)
    ab, ba = exchange(a_engine, a, b_engine, b)
    assert a.peer_path(ab) == flowkv.KvPath.STAGING
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for l, t in enumerate(src):
            t.copy_(layer_values(l, vllm_shape()).cuda(), non_blocking=True)
        ready = torch.cuda.Event()
        ready.record(stream)
    a.send("req-1", ab, SRC_BLOCKS, DST_BLOCKS, NUM_TOKENS, payload=b"aux-data",
           ready_event=ready).result(3 * OPTIONS_TIMEOUT_S)
    finished = []
    deadline = time.monotonic() + 3 * OPTIONS_TIMEOUT_S
    while not finished and time.monotonic() < deadline:
        finished += b.poll(wait=0.01).finished
    assert finished == [("req-1", b"aux-data")]
    torch.cuda.synchronize()
    assert_block_major_holds_request(dst.cpu())
    a.close()
    b.close()
