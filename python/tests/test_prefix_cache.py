# SPDX-License-Identifier: Apache-2.0
"""The allocator's prefix cache and KV events from Python: free with hashes,
lookup (pinned), allocate after the prefix, cache_blocks, stats, events read
by a router that falls behind and resynchronises, the wire codec, and
misuse (disabled cache, too many hashes, bad hash values, garbage bytes)."""

import pytest

import flowkv


def chain(tokens):
    """Chained block hashes, as an engine computes them."""
    hashes, h = [], 0
    for t in tokens:
        h = hash((h, t)) & (2**64 - 1)
        hashes.append(h)
    return hashes


def cache(num_blocks=32, **kw):
    return flowkv.BlockAllocator(num_blocks, growth_slack_blocks=0,
                                 enable_prefix_cache=True, **kw)


def test_free_lookup_extend_in_place():
    a = cache()
    assert a.prefix_cache_enabled
    prompt = chain([1, 2, 3, 4])
    blocks = a.allocate(5)
    a.free(blocks, hashes=prompt)
    assert a.free_blocks == 28 and a.available_blocks == 32
    s = a.stats()
    assert s.cached_blocks == 4 and s.indexed_blocks == 4
    prefix = a.lookup(chain([1, 2, 3, 9]))
    assert prefix.to_ids() == [0, 1, 2]
    assert [a.ref_count(b) for b in range(4)] == [1, 1, 1, 0]
    rest = a.allocate(2, after=prefix.runs[-1])
    assert 3 not in rest.to_ids()
    s = a.stats()
    assert (s.lookups, s.lookup_blocks, s.lookup_hit_blocks) == (1, 4, 3)
    a.free(prefix)
    with pytest.raises(flowkv.InvalidArgumentError):
        a.free(prefix)  # double free of the pinned prefix
    assert a.lookup(chain([7])).to_ids() == []


def test_running_blocks_are_found_and_evicted_lru():
    a = cache(8)
    p, q = chain([1, 1, 1, 1]), chain([2, 2, 2, 2])
    x, y = a.allocate(4), a.allocate(4)
    a.cache_blocks(x, p)
    hit = a.lookup(p)
    assert hit.to_ids() == [0, 1, 2, 3] and a.ref_count(0) == 2
    a.free(x)
    a.free(hit)
    a.free(y, hashes=q)
    assert a.free_blocks == 0 and a.available_blocks == 8
    z = a.allocate(4)  # evicts p, the least recently used
    assert z.to_ids() == [0, 1, 2, 3]
    s = a.stats()
    assert (s.evictions, s.evicted_blocks) == (1, 4)
    assert a.lookup(p).to_ids() == []
    assert len(a.lookup(q)) == 4


def test_events_and_resync():
    a = cache(64, event_buffer_capacity=2)
    index, applied = {}, 0

    def apply(e):
        ids = flowkv.BlockList.from_runs(e.runs).to_ids()
        if e.kind == flowkv.KvEventKind.ALL_CLEARED:
            index.clear()
        for h, b in zip(e.hashes, ids):
            if e.kind == flowkv.KvEventKind.BLOCK_STORED:
                index[h] = b
            else:
                del index[h]

    for t in range(5):
        blocks = a.allocate(2)
        a.free(blocks, hashes=chain([t, t]))
    batch = a.read_events(applied)
    assert batch.fell_behind and batch.events == [] and batch.latest_seq == 5
    snap = a.snapshot()
    assert snap.seq == 5 and len(snap.blocks) == 10
    index = {b.hash: b.block for b in snap.blocks}
    applied = snap.seq
    a.clear_cache()
    blocks = a.allocate(3)
    a.free(blocks, hashes=chain([9, 9, 9]))
    wire = flowkv.encode_kv_event_batch(a.read_events(applied))
    batch = flowkv.decode_kv_event_batch(wire)  # as a router process would
    assert not batch.fell_behind
    assert [e.seq for e in batch.events] == [6, 7]
    stored = batch.events[1]
    assert stored.hashes == chain([9, 9, 9]) and not stored.has_parent
    for e in batch.events:
        apply(e)
    assert index == {b.hash: b.block for b in a.snapshot().blocks}
    snap = a.snapshot()
    assert flowkv.decode_kv_cache_snapshot(
        flowkv.encode_kv_cache_snapshot(snap)) == snap


def test_misuse():
    plain = flowkv.BlockAllocator(8)
    assert not plain.prefix_cache_enabled
    blocks = plain.allocate(2)
    with pytest.raises(flowkv.FailedPreconditionError):
        plain.lookup(chain([1]))
    with pytest.raises(flowkv.FailedPreconditionError):
        plain.free(blocks, hashes=chain([1]))
    with pytest.raises(flowkv.FailedPreconditionError):
        plain.clear_cache()
    assert plain.free_blocks == 6

    a = cache(8)
    blocks = a.allocate(2)
    with pytest.raises(flowkv.InvalidArgumentError):
        a.free(blocks, hashes=chain([1, 2, 3]))  # more hashes than blocks
    with pytest.raises(flowkv.InvalidArgumentError, match="hashes"):
        a.free(blocks, hashes=[-1])
    with pytest.raises(flowkv.InvalidArgumentError, match="hashes"):
        a.lookup([2**64])
    with pytest.raises(flowkv.InvalidArgumentError, match="hashes"):
        a.lookup("abc")
    assert a.free_blocks == 6 and a.stats().indexed_blocks == 0
    for garbage in [b"", b"FKVE", b"\x00" * 40, b"FKVS\x01\x00" + b"\xff" * 12]:
        with pytest.raises(flowkv.InvalidArgumentError):
            flowkv.decode_kv_event_batch(garbage)
        with pytest.raises(flowkv.InvalidArgumentError):
            flowkv.decode_kv_cache_snapshot(garbage)
