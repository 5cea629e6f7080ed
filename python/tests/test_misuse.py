# SPDX-License-Identifier: Apache-2.0
"""The Python surface under misuse: every call after close(), request ids
that are not UTF-8, integers out of range, tensors resized after
registration, permuted views, unfinished handles, calls from several
threads. Each misuse raises a flowkv.Error (never crashes, never TypeError)
and loses nothing."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

import flowkv
from conftest import (GEOMETRY, OPTIONS_TIMEOUT_S,
                      assert_block_major_holds_request, engine_options,
                      receive_request_from_peer, start_peer)


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


# ---- Calls after close ------------------------------------------------------

ENGINE_CALLS = {
    "register_memory": lambda e: e.register_memory(bytearray(64)),
    "allocate_memory": lambda e: e.allocate_memory(64),
    "deregister_memory": lambda e: e.deregister_memory(1),
    "regions": lambda e: e.regions(),
    "listen": lambda e: e.listen("127.0.0.1:0"),
    "connect": lambda e: e.connect("127.0.0.1:1"),
    "local_metadata": lambda e: e.local_metadata(),
    "add_peer": lambda e: e.add_peer(b"metadata"),
    "disconnect": lambda e: e.disconnect(1),
    "peers": lambda e: e.peers(),
    "get_peer": lambda e: e.get_peer(1),
    "write": lambda e: e.write(1, [(0, 0, 0, 0, 8)]),
    "read": lambda e: e.read(1, [(0, 0, 0, 0, 8)]),
    "send": lambda e: e.send(1, b"message"),
    "take_notifications": lambda e: e.take_notifications(wait=0.01),
    "stats": lambda e: e.stats(),
    "name": lambda e: e.name,
    "supports_cuda_memory": lambda e: e.supports_cuda_memory,
    "ucx_info": lambda e: e.ucx_info,
}
# What stays usable on a closed engine.
ENGINE_AFTER_CLOSE_OK = {"close", "closed", "validate_metadata"}


def test_the_after_close_table_covers_every_engine_method():
    public = {n for n in dir(flowkv.TransferEngine) if not n.startswith("_")}
    assert public == set(ENGINE_CALLS) | ENGINE_AFTER_CLOSE_OK


@pytest.mark.parametrize("how", ["close", "with"])
@pytest.mark.parametrize("call", sorted(ENGINE_CALLS))
def test_engine_methods_after_close_raise_failed_precondition(call, how):
    if how == "close":
        engine = flowkv.TransferEngine(**engine_options("tcp"))
        engine.close()
    else:
        with flowkv.TransferEngine(**engine_options("tcp")) as engine:
            pass
    assert engine.closed
    with pytest.raises(flowkv.FailedPreconditionError, match="closed"):
        ENGINE_CALLS[call](engine)
    engine.close()  # idempotent
    with pytest.raises(flowkv.FailedPreconditionError):
        flowkv.KvTransfer(engine, block_major(), [pool_for(block_major())])


KV_CALLS = {
    "send": lambda kv: kv.send("r", 1, [0], [0], 1),
    "fetch": lambda kv: kv.fetch("r", 1, [0], [0], 1),
    "poll": lambda kv: kv.poll(),
    "take_results": lambda kv: kv.take_results(),
    "expect": lambda kv: kv.expect("r", 1.0),
    "forget": lambda kv: kv.forget("r"),
    "announce_pool": lambda kv: kv.announce_pool(1),
    "wait_for_peer_pool": lambda kv: kv.wait_for_peer_pool(1, 0.0),
    "peer_pool": lambda kv: kv.peer_pool(1),
    "peer_path": lambda kv: kv.peer_path(1),
    "add_peer_pool": lambda kv: kv.add_peer_pool(1, block_major(), [0]),
    "layers_arrived": lambda kv: kv.layers_arrived("r"),
    "stats": lambda kv: kv.stats(),
    "layout": lambda kv: kv.layout,
}


def test_the_after_close_table_covers_every_kv_transfer_method():
    public = {n for n in dir(flowkv.KvTransfer) if not n.startswith("_")}
    assert public == set(KV_CALLS) | {"close"}


@pytest.mark.parametrize("call", sorted(KV_CALLS))
def test_kv_transfer_methods_after_its_close_raise_failed_precondition(
        engine, call):
    layout = block_major()
    kv = flowkv.KvTransfer(engine, layout, [pool_for(layout)])
    kv.close()
    with pytest.raises(flowkv.FailedPreconditionError, match="closed"):
        KV_CALLS[call](kv)
    kv.close()  # idempotent


def test_kv_transfer_keeps_its_engine_after_the_engine_object_closed():
    # The KvTransfer holds the engine (docs/python.md, "Lifetimes"): closing
    # the TransferEngine object ends that object's use only.
    layout = block_major()
    engine = flowkv.TransferEngine(**engine_options("tcp"))
    kv = flowkv.KvTransfer(engine, layout, [pool_for(layout)])
    engine.close()
    with pytest.raises(flowkv.FailedPreconditionError):
        engine.stats()
    assert kv.stats().requests_active == 0
    assert not kv.poll()
    handle = kv.send("r", 12345, [0], [0], 1)
    assert handle.wait(OPTIONS_TIMEOUT_S)
    assert isinstance(handle.status, flowkv.Error)
    kv.close()
    with pytest.raises(flowkv.FailedPreconditionError):
        kv.stats()


def test_close_while_other_threads_call_the_engine():
    engine = flowkv.TransferEngine(**engine_options("tcp"))
    started = [threading.Event() for _ in range(4)]
    errors = []

    def caller(i):
        calls = [lambda: engine.take_notifications(wait=0.005),
                 engine.stats, engine.peers, engine.regions,
                 lambda: engine.send(1, b"x")]
        while True:
            for call in calls:
                try:
                    call()
                except flowkv.FailedPreconditionError:
                    return
                except BaseException as e:  # noqa: BLE001
                    errors.append(e)
                    return
                started[i].set()

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for s in started:
        assert s.wait(OPTIONS_TIMEOUT_S)
    engine.close()
    for t in threads:
        t.join(OPTIONS_TIMEOUT_S)
        assert not t.is_alive()
    assert errors == []


def test_kv_transfer_close_while_other_threads_call_it(engine):
    # close() used to destroy the KvTransfer under a poll() running on
    # another thread (GIL released): a crash. The call now finishes on the
    # object it started with; the next one raises.
    layout = block_major()
    for _ in range(20):
        kv = flowkv.KvTransfer(engine, layout, [pool_for(layout)])
        started = [threading.Event() for _ in range(3)]
        outcomes = []

        def caller(i):
            while True:
                try:
                    started[i].set()
                    kv.poll(wait=0.05)
                    kv.stats()
                    kv.send("r", 1, [0], [1], 1)
                except flowkv.FailedPreconditionError:
                    outcomes.append("closed")
                    return
                except BaseException as e:  # noqa: BLE001
                    outcomes.append(e)
                    return

        threads = [threading.Thread(target=caller, args=(i,))
                   for i in range(3)]
        for t in threads:
            t.start()
        for s in started:
            assert s.wait(OPTIONS_TIMEOUT_S)
        kv.close()
        for t in threads:
            t.join(OPTIONS_TIMEOUT_S)
            assert not t.is_alive()
        assert outcomes == ["closed"] * 3
        for region in kv.regions:
            engine.deregister_memory(region)


# ---- Request ids --------------------------------------------------------------

BAD_REQUEST_IDS = [b"\xff\xfe", "\udcff", 7, None]


@pytest.mark.parametrize("request_id", BAD_REQUEST_IDS,
                         ids=["not-utf8", "lone-surrogate", "int", "none"])
def test_request_ids_are_utf8_text(engine, request_id):
    layout = block_major()
    kv = flowkv.KvTransfer(engine, layout, [pool_for(layout)])
    calls = [lambda: kv.send(request_id, 1, [0], [0], 1),
             lambda: kv.fetch(request_id, 1, [0], [0], 1),
             lambda: kv.expect(request_id, 1.0),
             lambda: kv.forget(request_id),
             lambda: kv.layers_arrived(request_id)]
    for call in calls:
        with pytest.raises(flowkv.InvalidArgumentError, match="request_id"):
            call()
    assert kv.stats().requests_active == 0
    # UTF-8 bytes and text are the same id.
    kv.expect("réq".encode(), 30.0)
    assert kv.stats().requests_active == 1
    kv.forget("réq")
    assert kv.stats().requests_active == 0
    kv.close()


def test_an_id_that_is_not_utf8_loses_no_other_result_of_a_poll():
    # A C++ sender (any bytes) sends three requests; the second id is not
    # UTF-8. The polls report all three, the odd one as bytes.
    layout = block_major()
    pool = pool_for(layout)
    engine = flowkv.TransferEngine(**engine_options("tcp", "decode"))
    kv = flowkv.KvTransfer(engine, layout, [pool])
    address = engine.listen("127.0.0.1:0")
    ids = [b"ok-1", b"\xff\xfe-odd", b"ok-2"]
    sender = start_peer("--address", address, "--transport", "tcp",
                        "--cxx-request-ids", ",".join(i.hex() for i in ids))
    finished, failed = [], []
    try:
        # The receiver polls (pools are exchanged through polls); a poll
        # that raised on the odd id would lose what it took with it.
        deadline = time.monotonic() + 3 * OPTIONS_TIMEOUT_S
        while len(finished) + len(failed) < 3 and sender.poll() is None \
                and time.monotonic() < deadline:
            result = kv.poll(wait=0.1)
            finished += result.finished
            failed += result.failed
        assert sender.stdout.readline().strip() == "sent"
    finally:
        out, err = sender.communicate("bye\n", timeout=3 * OPTIONS_TIMEOUT_S)
    assert sender.returncode == 0, err
    assert failed == []
    assert [i for i, _ in finished] == ["ok-1", b"\xff\xfe-odd", "ok-2"]
    assert_block_major_holds_request(pool)
    kv.close()
    engine.close()


# ---- Integers out of range ------------------------------------------------


def _cases():
    """(name, argument named in the message, call(value)); each call gets
    -1, 2**32 and 2**64."""
    geometry_fields = ["num_layers", "num_blocks", "block_tokens", "kv_heads",
                       "head_dim", "dtype_bytes", "num_parts"]
    layout = block_major()
    allocator = flowkv.BlockAllocator(16)
    geometry = flowkv.KvGeometry(**GEOMETRY)
    op = flowkv.TransferOp(0, 0, 0, 0, 8)
    cluster = flowkv.ClusterView()
    cases = [
        ("BlockAllocator", "num_blocks", lambda v: flowkv.BlockAllocator(v)),
        ("BlockAllocator.growth", "growth_slack_blocks",
         lambda v: flowkv.BlockAllocator(8, growth_slack_blocks=v)),
        ("allocate", "n", lambda v: allocator.allocate(v)),
        ("allocate.after", "after.first",
         lambda v: allocator.allocate(1, after=(v, 1))),
        ("extend", "n", lambda v: allocator.extend(flowkv.BlockList(), v)),
        ("ref_count", "block", lambda v: allocator.ref_count(v)),
        ("free", "blocks[0]", lambda v: allocator.free([v])),
        ("BlockList", "blocks[0]", lambda v: flowkv.BlockList([v])),
        ("BlockList.from_runs", "runs[0]: first",
         lambda v: flowkv.BlockList.from_runs([(v, 1)])),
        ("BlockList.append", "append: count",
         lambda v: flowkv.BlockList().append(0, v)),
        ("TransferOp", "src_region", lambda v: flowkv.TransferOp(v, 0, 0, 0, 1)),
        ("TransferOp.length", "length", lambda v: setattr(op, "length", v)),
        ("KvTensor", "offset", lambda v: flowkv.KvTensor(offset=v)),
        ("element_address", "layer",
         lambda v: layout.element_address(v, 0, 0)),
        ("element_address.block", "block",
         lambda v: layout.element_address(0, 0, v)),
        ("plan_transfer", "num_tokens",
         lambda v: flowkv.plan_transfer(layout, [0], layout, [1], v)),
        ("plan_transfer.layer_end", "layer_end",
         lambda v: flowkv.plan_transfer(layout, [0], layout, [1], 1,
                                        layer_end=v)),
        ("ClusterView.find", "id", lambda v: cluster.find(v)),
        ("ClusterView.set_role", "cycles",
         lambda v: cluster.set_role(0, flowkv.NodeRole.PREFILL, v)),
        ("ClusterView.link", "src", lambda v: cluster.link(v, 0)),
        ("NodeInfo", "id", lambda v: flowkv.NodeInfo(id=v)),
        ("RequestInfo", "input_tokens",
         lambda v: flowkv.RequestInfo(input_tokens=v)),
        ("SimRequest", "input_tokens",
         lambda v: flowkv.sim.SimRequest(0, 0.0, v, 1)),
    ]
    for field in geometry_fields:
        cases.append((f"KvGeometry.{field}", field,
                      lambda v, f=field: flowkv.KvGeometry(**{f: v})))
        cases.append((f"KvGeometry.{field}=", field,
                      lambda v, f=field: setattr(geometry, f, v)))
    return cases


def _engine_cases():
    """As _cases, on an engine (and a KvTransfer on it): (name, argument,
    call(engine, kv, value))."""
    cases = [
        ("allocate_memory", "length", lambda e, kv, v: e.allocate_memory(v)),
        ("deregister_memory", "region",
         lambda e, kv, v: e.deregister_memory(v)),
        ("disconnect", "peer", lambda e, kv, v: e.disconnect(v)),
        ("get_peer", "peer", lambda e, kv, v: e.get_peer(v)),
        ("write.peer", "peer", lambda e, kv, v: e.write(v, [])),
        ("write.ops", "ops[0]: src_offset",
         lambda e, kv, v: e.write(1, [(0, v, 0, 0, 8)])),
        ("read.ops", "ops[0]: dst_region",
         lambda e, kv, v: e.read(1, [(0, 0, v, 0, 8)])),
        ("send.peer", "peer", lambda e, kv, v: e.send(v, b"x")),
        ("TransferEngine", "max_window_bytes",
         lambda e, kv, v: flowkv.TransferEngine(max_window_bytes=v).close()),
        ("KvTransfer.regions", "regions[0]",
         lambda e, kv, v: flowkv.KvTransfer(e, block_major(), [v])),
        ("KvTransfer.max_tombstones", "max_tombstones",
         lambda e, kv, v: flowkv.KvTransfer(e, block_major(), [0],
                                            max_tombstones=v)),
        ("kv.send.peer", "peer", lambda e, kv, v: kv.send("r", v, [0], [0], 1)),
        ("kv.send.src_blocks", "blocks[0]",
         lambda e, kv, v: kv.send("r", 1, [v], [0], 1)),
        ("kv.fetch.num_tokens", "num_tokens",
         lambda e, kv, v: kv.fetch("r", 1, [0], [0], v)),
        ("kv.announce_pool", "peer", lambda e, kv, v: kv.announce_pool(v)),
        ("kv.peer_path", "peer", lambda e, kv, v: kv.peer_path(v)),
        ("kv.add_peer_pool", "peer_regions[0]",
         lambda e, kv, v: kv.add_peer_pool(1, block_major(), [v])),
    ]
    for field in ["num_tokens", "token_begin", "layer_begin", "layer_end",
                  "src_head_begin", "dst_head_begin", "num_heads",
                  "sender_rank", "num_senders"]:
        if field == "num_tokens":
            call = (lambda e, kv, v: kv.send("r", 1, [0], [0], v))
        else:
            call = (lambda e, kv, v, f=field:
                    kv.send("r", 1, [0], [0], 1, **{f: v}))
        cases.append((f"kv.send.{field}", field, call))
    return cases


OUT_OF_RANGE = [-1, 2**32, 2**64]


def _check(call, argument, value):
    """-1 and 2**64 fit no parameter: InvalidArgumentError naming the
    argument and its range. 2**32 fits 64-bit ones: then anything but a
    flowkv.Error escaping is a failure (TypeError in particular)."""
    try:
        result = call(value)
    except flowkv.Error as e:
        if value != 2**32:
            assert isinstance(e, flowkv.InvalidArgumentError), e
        if isinstance(e, flowkv.InvalidArgumentError) and "out of range" in str(e):
            assert argument in str(e), e
            assert "[0, " in str(e) or "[-" in str(e), e
        return
    assert value == 2**32, f"{argument}={value} was accepted"
    if isinstance(result, flowkv.TransferHandle):
        # Refusals of write / send come through the handle.
        assert result.wait(OPTIONS_TIMEOUT_S)


@pytest.mark.parametrize("value", OUT_OF_RANGE)
@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_integers_out_of_range_raise_invalid_argument(case, value):
    _, argument, call = case
    _check(call, argument, value)


@pytest.mark.parametrize("value", OUT_OF_RANGE)
@pytest.mark.parametrize("case", _engine_cases(), ids=lambda c: c[0])
def test_engine_integers_out_of_range_raise_invalid_argument(engine, case,
                                                             value):
    _, argument, call = case
    layout = block_major()
    kv = flowkv.KvTransfer(engine, layout, [pool_for(layout)])
    _check(lambda v: call(engine, kv, v), argument, value)
    kv.close()


@pytest.mark.parametrize("value", [1.5, "3", None, [1]])
def test_integer_arguments_of_other_types_raise_invalid_argument(value):
    with pytest.raises(flowkv.InvalidArgumentError, match="num_blocks"):
        flowkv.BlockAllocator(value)
    with pytest.raises(flowkv.InvalidArgumentError, match="num_blocks"):
        flowkv.KvGeometry(num_blocks=value)


def test_block_ids_stop_where_the_c_api_stops():
    last = 2**32 - 2
    assert flowkv.BlockList([last]).to_ids() == [last]
    for make in [lambda: flowkv.BlockList([last + 1]),
                 lambda: flowkv.BlockList.from_runs([(last, 2)]),
                 lambda: flowkv.BlockList().append(last + 1, 1)]:
        with pytest.raises(flowkv.InvalidArgumentError, match="last block id|range"):
            make()
    blocks = flowkv.BlockList([3, 4, 9])
    assert blocks[-1] == 9 and list(blocks) == [3, 4, 9]
    with pytest.raises(IndexError):
        blocks[3]


def test_timeouts_of_the_wrong_type_raise_invalid_argument(engine):
    layout = block_major()
    kv = flowkv.KvTransfer(engine, layout, [pool_for(layout)])
    with pytest.raises(flowkv.InvalidArgumentError, match="timeout"):
        kv.send("r", 1, [0], [0], 1, timeout="soon")
    with pytest.raises(flowkv.InvalidArgumentError, match="timeout"):
        engine.send(1, b"x", timeout=[1])
    kv.close()


def test_arguments_that_failed_a_cast_raise_invalid_argument(engine):
    # These raised RuntimeError ("Unable to cast Python instance ...").
    handle = engine.send(98765, b"x")
    calls = {"timeout": [lambda: handle.wait("soon"),
                         lambda: handle.result([1])],
             "notification": [lambda: engine.write(1, [], notification=12)],
             "now": [lambda: flowkv.ClusterView().report_load(
                 0, flowkv.NodeLoad(), now="today")],
             "workload": [lambda: flowkv.sim.simulate(workload=[1, 2])],
             "wait": [lambda: engine.take_notifications(wait=None)],
             "incomplete_request_timeout": [lambda: flowkv.KvTransfer(
                 engine, block_major(), [pool_for(block_major())],
                 incomplete_request_timeout="1")]}
    # (and TypeError before: seconds that are not numbers)
    layout = block_major()
    kv = flowkv.KvTransfer(engine, layout, [pool_for(layout)])
    calls["wait"].append(lambda: kv.poll(wait="0.1"))
    calls["timeout"] += [lambda: kv.expect("r", "1"),
                         lambda: kv.wait_for_peer_pool(1, None)]
    for argument, tries in calls.items():
        for call in tries:
            with pytest.raises(flowkv.InvalidArgumentError, match=argument):
                call()


# ---- Tensors resized after registration ----------------------------------------


def test_a_resized_tensor_is_refused_before_anything_is_posted():
    a = flowkv.TransferEngine(**engine_options("tcp", "a"))
    b = flowkv.TransferEngine(**engine_options("tcp", "b"))
    tensor = torch.zeros(4096, dtype=torch.uint8)
    local = a.register_memory(tensor)
    target = bytearray(4096)
    remote = b.register_memory(target)
    peer = a.connect(b.listen("127.0.0.1:0"))
    a.write(peer, [(local, 0, remote, 0, 64)]).result(OPTIONS_TIMEOUT_S)

    tensor.resize_(1 << 22)  # new storage; the registered bytes are freed
    tensor.fill_(7)
    with pytest.raises(flowkv.FailedPreconditionError, match="resize_"):
        a.write(peer, [(local, 0, remote, 0, 64)])
    with pytest.raises(flowkv.FailedPreconditionError, match="resize_"):
        a.read(peer, [(remote, 0, local, 0, 64)])
    assert a.stats().transfers_active == 0
    assert bytes(target[:64]) == bytes(64)
    # Registered again, it moves its new bytes.
    a.deregister_memory(local)
    local = a.register_memory(tensor)
    a.write(peer, [(local, 0, remote, 0, 64)]).result(OPTIONS_TIMEOUT_S)
    assert bytes(target[:64]) == bytes([7]) * 64
    a.close()
    b.close()


def test_kv_transfer_refuses_a_pool_tensor_resized_after_registration(engine):
    layout = block_major()
    pool = pool_for(layout)
    kv = flowkv.KvTransfer(engine, layout, [pool])
    pool.resize_(pool.numel() * 4)
    for call in [lambda: kv.send("r", 1, [0], [1], 1),
                 lambda: kv.fetch("r", 1, [0], [1], 1)]:
        with pytest.raises(flowkv.FailedPreconditionError, match="resize_"):
            call()
    assert kv.stats().requests_active == 0
    kv.close()


# ---- Permuted views ------------------------------------------------------------


def test_permuted_views_register_as_their_memory(engine):
    hnd = torch.arange(2 * 4 * 3 * 5 * 8, dtype=torch.float16).reshape(
        2, 4, 3, 5, 8)              # [2, N, H, T, D] in memory
    view = hnd.permute(0, 1, 3, 2, 4)  # [2, N, T, H, D], what vLLM hands out
    assert not view.is_contiguous()
    region = engine.register_memory(view)
    info = [r for r in engine.regions() if r.id == region][0]
    assert info.base == hnd.data_ptr() and info.length == hnd.numel() * 2
    transposed = np.zeros((6, 4), dtype=np.int32).T
    engine.register_memory(transposed)
    # Gaps, overlaps and negative strides are still refused.
    for bad in [hnd[:, ::2], hnd[:, :2], torch.zeros(4, 1).expand(4, 3),
                np.zeros(8)[::-1], np.zeros((4, 4))[:, :2]]:
        with pytest.raises(flowkv.InvalidArgumentError,
                           match="contiguous range"):
            engine.register_memory(bad)


def test_hnd_views_move_kv_across_processes(transport):
    # The sender registers vLLM's HND caches as the permuted views vLLM
    # gives connectors, with the HND layout; the receiver's block-major
    # pool gets the very tokens.
    receive_request_from_peer(transport, "--hnd-views")


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
