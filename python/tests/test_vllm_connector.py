# SPDX-License-Identifier: Apache-2.0
# Drives examples/python/vllm_connector.py in vLLM's call order across two
# processes: this one is the decode instance (scheduler and worker halves),
# a spawned one the prefill instance. Checks that the prefill's layer-by-layer
# sends arrive byte for byte; that a request the prefill side aborts, or
# whose sends fail, is reported as a failed load with its blocks, and those
# blocks serve another request that then succeeds; that a request the decode
# side aborts keeps its blocks until its load ended; that a layer-wise load
# lets each layer be read as soon as it arrived; and that bad input is
# refused.
#
# Run: PYTHONPATH=<build>/python UCX_NET_DEVICES=lo /usr/bin/python3 -m pytest

import math
import multiprocessing
import os
import sys
import time

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "examples", "python"))

import vllm_connector as vc  # noqa: E402
from conftest import OPTIONS_TIMEOUT_S, engine_options  # noqa: E402
import vllm_stand_ins as vs  # noqa: E402

NUM_LAYERS = 4
NUM_BLOCKS = 24
BLOCK_SIZE = 8
KV_HEADS = 2
HEAD_SIZE = 16
DTYPE = torch.float16
# Every wait in the test is bounded by the connector's load timeout, a
# multiple of the engine timeouts conftest sets.
LOAD_TIMEOUT_S = 2 * OPTIONS_TIMEOUT_S


def layer_names():
    return [f"model.layers.{i}.self_attn.attn" for i in range(NUM_LAYERS)]


def make_caches():
    shape = (2, NUM_BLOCKS, BLOCK_SIZE, KV_HEADS, HEAD_SIZE)
    return {name: torch.zeros(shape, dtype=DTYPE) for name in layer_names()}


def token_kv(seed, layer, num_tokens):
    """The K and V a request's prefill computes for a layer: [2, tokens, H, D]."""
    g = torch.Generator().manual_seed(seed * 1000 + layer)
    return torch.randn((2, num_tokens, KV_HEADS, HEAD_SIZE), generator=g).to(DTYPE)


def slots(block_ids, num_tokens):
    """Flat slot of each token: block_ids[t // B] * B + t % B."""
    return torch.tensor([block_ids[t // BLOCK_SIZE] * BLOCK_SIZE + t % BLOCK_SIZE
                         for t in range(num_tokens)])


def write_tokens(cache, block_ids, data):
    flat = cache.view(2, NUM_BLOCKS * BLOCK_SIZE, KV_HEADS, HEAD_SIZE)
    flat[:, slots(block_ids, data.shape[1])] = data


def read_tokens(cache, block_ids, num_tokens):
    flat = cache.view(2, NUM_BLOCKS * BLOCK_SIZE, KV_HEADS, HEAD_SIZE)
    return flat[:, slots(block_ids, num_tokens)]


class Blocks:
    """The engine's block manager, reduced to a LIFO free list."""

    def __init__(self, ids):
        self.free = list(ids)

    def allocate(self, num_tokens):
        n = math.ceil(num_tokens / BLOCK_SIZE)
        assert len(self.free) >= n
        taken, self.free = self.free[-n:][::-1], self.free[:-n]
        return taken

    def release(self, ids):
        self.free.extend(reversed(ids))


def run_step(scheduler, worker, finished_req_ids=(), forward=None):
    """One engine step in vLLM's order; returns (sending, recving, errors).

    `forward(layer_index, name)` runs each attention layer, between
    wait_for_layer_load and save_kv_layer.
    """
    output = vs.SchedulerOutput(finished_req_ids=set(finished_req_ids))
    meta = scheduler.build_connector_meta(output)
    worker.bind_connector_metadata(meta)
    worker.start_load_kv(None)
    for i, name in enumerate(layer_names()):
        worker.wait_for_layer_load(name)
        if forward is not None:
            forward(i, name)
            worker.save_kv_layer(name, worker_caches[id(worker)][name], None)
    worker.wait_for_save()
    sending, recving = worker.get_finished(set(finished_req_ids))
    errors = worker.get_block_ids_with_load_errors()
    worker.clear_connector_metadata()
    scheduler.update_connector_output(vs.KVConnectorOutput(sending, recving))
    return sending or set(), recving or set(), errors


# The caches each worker registered (forward writes into them).
worker_caches = {}


def make_instance(kv_role, **options):
    config = vc.FlowKVConnectorConfig(
        kv_role=kv_role, block_size=BLOCK_SIZE, load_timeout_s=LOAD_TIMEOUT_S,
        handshake_timeout_s=OPTIONS_TIMEOUT_S, engine_name=f"test-{kv_role}",
        engine_options=engine_options("tcp"), **options)
    worker = vc.FlowKVConnector(config, vs.KVConnectorRole.WORKER)
    caches = make_caches()
    worker.register_kv_caches(caches)
    worker_caches[id(worker)] = caches
    scheduler = vc.FlowKVConnector(config, vs.KVConnectorRole.SCHEDULER)
    handshake = worker.get_handshake_metadata()
    if handshake is not None:
        scheduler.set_xfer_handshake_metadata({0: handshake})
    return scheduler, worker, caches


# ---- The prefill instance (child process) ----


def prefill_main(conn):
    """Serves ("run", prefills, aborts): runs the prefills in one step,
    saving layer by layer; aborts are requests cancelled before they were
    scheduled. Replies ("done", finished_sending) once the sends are done."""
    scheduler, worker, caches = make_instance("kv_producer")
    blocks = Blocks(range(NUM_BLOCKS))
    try:
        while True:
            command = conn.recv()
            if command[0] == "exit":
                return
            _, prefills, aborts = command
            requests, owned = [], {}
            for request_id, prompt_len, params, seed in prefills:
                request = vs.Request(request_id, list(range(prompt_len)), params)
                assert scheduler.get_num_new_matched_tokens(request, 0) == (0, False)
                owned[request_id] = blocks.allocate(prompt_len)
                scheduler.update_state_after_alloc(
                    request, vs.KVCacheBlocks(owned[request_id]), 0)
                requests.append((request, seed))
            for request_id, prompt_len, params in aborts:
                request = vs.Request(request_id, list(range(prompt_len)), params,
                                     vs.RequestStatus.FINISHED_ABORTED)
                assert scheduler.request_finished(request, []) == (False, None)

            def forward(layer, name):
                for request, seed in requests:
                    write_tokens(caches[name], owned[request.request_id],
                                 token_kv(seed, layer, len(request.prompt_token_ids)))

            run_step(scheduler, worker, forward=forward)
            finished = set()
            for request, _ in requests:
                request.status = vs.RequestStatus.FINISHED_LENGTH_CAPPED
                delay, _ = scheduler.request_finished(request, owned[request.request_id])
                assert delay  # blocks held until the send is done
                finished.add(request.request_id)
            # wait_for_save waited on every handle: the next step reports them.
            sending, _, _ = run_step(scheduler, worker, finished)
            for request_id in sending:
                blocks.release(owned.pop(request_id))
            conn.send(("done", sending))
    finally:
        worker.shutdown()


# ---- The decode instance (this process) ----


@pytest.fixture(scope="module")
def prefill():
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=prefill_main, args=(child,), daemon=True)
    process.start()
    yield parent
    parent.send(("exit",))
    process.join(LOAD_TIMEOUT_S)
    assert process.exitcode == 0


def prefill_done(conn):
    assert conn.poll(LOAD_TIMEOUT_S), "the prefill instance did not answer"
    kind, sending = conn.recv()
    assert kind == "done"
    return sending


def allocate_remote(scheduler, blocks, request_id, prompt_len):
    """The decode scheduler's part of a new request; returns (blocks, the
    prefill's kv_transfer_params)."""
    request = vs.Request(request_id, list(range(prompt_len)), {"do_remote_prefill": True})
    num_tokens, load_async = scheduler.get_num_new_matched_tokens(request, 0)
    ids = blocks.allocate(num_tokens)
    scheduler.update_state_after_alloc(request, vs.KVCacheBlocks(ids), num_tokens)
    return ids, num_tokens, load_async, scheduler.remote_decode_params(request_id)


def steps_until(scheduler, worker, request_ids):
    """Engine steps until every id is in finished_recving; returns the load
    error blocks seen meanwhile."""
    pending, errors = set(request_ids), set()
    deadline = time.monotonic() + 2 * LOAD_TIMEOUT_S
    while pending:
        assert time.monotonic() < deadline, f"{pending} never reported"
        sending, recving, step_errors = run_step(scheduler, worker)
        assert not sending
        pending -= recving
        errors |= step_errors
    return errors


def test_prefill_to_decode_layer_by_layer_abort_and_reuse(prefill):
    scheduler, worker, caches = make_instance("kv_consumer")
    blocks = Blocks(range(NUM_BLOCKS))

    # r1 succeeds; r2 is aborted on the prefill side before it is scheduled.
    r1_blocks, r1_tokens, r1_async, r1_params = allocate_remote(scheduler, blocks, "r1", 37)
    r2_blocks, r2_tokens, _, r2_params = allocate_remote(scheduler, blocks, "r2", 20)
    assert (r1_tokens, r1_async) == (37, True)
    assert len(r1_blocks) == 5 and len(r2_blocks) == 3
    run_step(scheduler, worker)  # start_load_kv expects both
    prefill.send(("run", [("r1", 37, r1_params, 1)], [("r2", 20, r2_params)]))
    errors = steps_until(scheduler, worker, {"r1", "r2"})
    assert prefill_done(prefill) == {"r1"}

    assert errors == set(r2_blocks)  # r2's load failed, r1's did not
    for layer, name in enumerate(layer_names()):
        assert torch.equal(read_tokens(caches[name], r1_blocks, 37),
                           token_kv(1, layer, 37))

    # r2's blocks are free for r3, which then loads correctly.
    blocks.release(r2_blocks)
    r3_blocks, _, _, r3_params = allocate_remote(scheduler, blocks, "r3", 20)
    assert r3_blocks == r2_blocks
    run_step(scheduler, worker)
    prefill.send(("run", [("r3", 20, r3_params, 3)], []))
    assert steps_until(scheduler, worker, {"r3"}) == set()
    assert prefill_done(prefill) == {"r3"}
    for layer, name in enumerate(layer_names()):
        assert torch.equal(read_tokens(caches[name], r3_blocks, 20),
                           token_kv(3, layer, 20))
        assert torch.equal(read_tokens(caches[name], r1_blocks, 37),
                           token_kv(1, layer, 37))

    # r6's sends fail on the prefill side (the router handed it a block the
    # decode pool does not have): the decode side reports a failed load with
    # r6's blocks, the prefill side its finished send, and the blocks serve
    # r7, which then loads correctly.
    r6_blocks, _, _, r6_params = allocate_remote(scheduler, blocks, "r6", 12)
    r6_params["remote_block_ids"] = [r6_blocks[0], NUM_BLOCKS + 5]
    run_step(scheduler, worker)
    prefill.send(("run", [("r6", 12, r6_params, 6)], []))
    assert steps_until(scheduler, worker, {"r6"}) == set(r6_blocks)
    assert prefill_done(prefill) == {"r6"}
    blocks.release(r6_blocks)
    r7_blocks, _, _, r7_params = allocate_remote(scheduler, blocks, "r7", 12)
    assert r7_blocks == r6_blocks
    run_step(scheduler, worker)
    prefill.send(("run", [("r7", 12, r7_params, 7)], []))
    assert steps_until(scheduler, worker, {"r7"}) == set()
    assert prefill_done(prefill) == {"r7"}
    for layer, name in enumerate(layer_names()):
        assert torch.equal(read_tokens(caches[name], r7_blocks, 12),
                           token_kv(7, layer, 12))

    # r5 is aborted on the decode side while its load is in flight: its
    # blocks stay out of reuse (the prefill may still write into them) until
    # the load ended, then come back through finished_sending, never as a
    # finished load.
    r5_blocks, _, _, r5_params = allocate_remote(scheduler, blocks, "r5", 16)
    run_step(scheduler, worker)
    r5 = vs.Request("r5", list(range(16)), {}, vs.RequestStatus.FINISHED_ABORTED)
    assert scheduler.request_finished(r5, r5_blocks) == (True, None)
    prefill.send(("run", [("r5", 16, r5_params, 5)], []))
    finished_req_ids, deadline = {"r5"}, time.monotonic() + 2 * LOAD_TIMEOUT_S
    while True:
        assert time.monotonic() < deadline, "r5's blocks never came back"
        sending, recving, errors = run_step(scheduler, worker, finished_req_ids)
        finished_req_ids = set()
        assert not recving and not errors
        if sending:
            assert sending == {"r5"}
            break
    assert prefill_done(prefill) == {"r5"}
    blocks.release(r5_blocks)
    worker.shutdown()


def test_layerwise_load_reads_each_layer_once_arrived(prefill):
    scheduler, worker, caches = make_instance("kv_consumer", layerwise_load=True)
    blocks = Blocks(range(NUM_BLOCKS))
    ids, num_tokens, load_async, params = allocate_remote(scheduler, blocks, "r4", 29)
    # vLLM computes the last prompt token itself; the load runs in-step.
    assert (num_tokens, load_async) == (28, False)

    meta = scheduler.build_connector_meta(vs.SchedulerOutput())
    worker.bind_connector_metadata(meta)
    worker.start_load_kv(None)
    prefill.send(("run", [("r4", 29, params, 4)], []))
    for layer, name in enumerate(layer_names()):
        worker.wait_for_layer_load(name)
        # This layer is complete, whatever the later layers' progress.
        assert torch.equal(read_tokens(caches[name], ids, 28),
                           token_kv(4, layer, 29)[:, :28])
    worker.wait_for_save()
    # A layer-wise load is not an asynchronous one: nothing to report.
    assert worker.get_finished(set()) == (set(), set())
    assert worker.get_block_ids_with_load_errors() == set()
    worker.clear_connector_metadata()
    assert prefill_done(prefill) == {"r4"}
    worker.shutdown()


def test_bad_input_is_refused_and_changes_nothing():
    config = vc.FlowKVConnectorConfig(kv_role="kv_producer", block_size=BLOCK_SIZE,
                                      engine_options=engine_options("tcp"))
    worker = vc.FlowKVConnector(config, vs.KVConnectorRole.WORKER)
    scheduler = vc.FlowKVConnector(config, vs.KVConnectorRole.SCHEDULER)

    # Each role has only its own methods.
    with pytest.raises(RuntimeError, match="WORKER connector has no SCHEDULER"):
        worker.build_connector_meta(vs.SchedulerOutput())
    with pytest.raises(RuntimeError, match="SCHEDULER connector has no WORKER"):
        scheduler.get_finished(set())
    with pytest.raises(ValueError, match="kv_role"):
        vc.FlowKVConnector(vc.FlowKVConnectorConfig(kv_role="both", block_size=8),
                           vs.KVConnectorRole.SCHEDULER)

    # Caches that are not vLLM's FlashAttention shape, or disagree.
    caches = make_caches()
    caches[layer_names()[2]] = torch.zeros((NUM_BLOCKS, 2, BLOCK_SIZE, KV_HEADS, HEAD_SIZE),
                                           dtype=DTYPE)
    with pytest.raises(ValueError, match="layer 'model.layers.2.self_attn.attn'"):
        worker.register_kv_caches(caches)
    with pytest.raises(ValueError, match="block_size 16 differs"):
        worker.register_kv_caches({"l0": torch.zeros((2, 4, 16, 1, 8), dtype=DTYPE)})
    worker.register_kv_caches(make_caches())

    # kv_transfer_params without the destination: computed locally, no send.
    request = vs.Request("r", list(range(10)), {"do_remote_decode": True})
    scheduler.update_state_after_alloc(request, vs.KVCacheBlocks([0, 1]), 0)
    assert scheduler.build_connector_meta(vs.SchedulerOutput()).sends == []
    assert scheduler.request_finished(request, [0, 1]) == (False, None)

    # Requests finished by the scheduler that this connector never sent are
    # not reported (vLLM would free their blocks a second time).
    worker.bind_connector_metadata(scheduler.build_connector_meta(vs.SchedulerOutput()))
    worker.start_load_kv(None)
    worker.wait_for_save()
    assert worker.get_finished({"r", "unrelated"}) == (set(), None)
    worker.clear_connector_metadata()
    worker.shutdown()
