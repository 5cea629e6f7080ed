# SPDX-License-Identifier: Apache-2.0
"""Layouts, block lists, plans and the allocator from Python: every preset,
serialize / parse / fingerprint, the package version."""

from __future__ import annotations

import subprocess
import sys

import pytest

import flowkv

G = dict(num_layers=4, num_blocks=32, block_tokens=16, kv_heads=8,
         head_dim=64, dtype_bytes=2)


def test_version_is_the_libraries():
    assert flowkv.__version__ == flowkv._flowkv.version()
    assert flowkv.__version__.count(".") == 2


def test_every_preset_round_trips():
    geometry = flowkv.KvGeometry(**G)
    mla = flowkv.KvGeometry(**{**G, "kv_heads": 1, "num_parts": 1})
    layouts = [
        flowkv.KvLayout.flowkv_block_major(geometry),
        flowkv.KvLayout.flowkv_block_major(geometry, flowkv.BlockOrder.HND),
        flowkv.KvLayout.vllm_flash_attn(geometry),
        flowkv.KvLayout.vllm_flash_infer(geometry, flowkv.BlockOrder.HND),
        flowkv.KvLayout.vllm_cross_layer(geometry),
        flowkv.KvLayout.vllm(geometry, flowkv.VllmKvLayout.LBHNC,
                             flowkv.RegionSplit.ONE_PER_LAYER),
        flowkv.KvLayout.sglang_mha(geometry),
        flowkv.KvLayout.mla(mla),
        flowkv.KvLayout.trtllm_block_pool(geometry),
        flowkv.KvLayout.create(geometry, flowkv.PoolOrder.LAYER_MAJOR),
    ]
    for layout in layouts:
        parsed = flowkv.KvLayout.parse(layout.serialize())
        assert parsed == layout
        assert parsed.fingerprint() == layout.fingerprint()
        assert parsed.geometry == layout.geometry
        assert layout.total_bytes >= layout.region_bytes()
        strided = flowkv.KvLayout.create_strided(layout.geometry,
                                                 layout.tensors)
        assert strided == layout and strided.name == "strided"
    assert layouts[0] == layouts[4]  # same bytes, different names
    assert layouts[2].num_regions == G["num_layers"]
    assert layouts[6].num_regions == 2 * G["num_layers"]
    flowkv.check_kv_exchange(layouts[0], layouts[2])
    with pytest.raises(flowkv.InvalidArgumentError, match="head_dim"):
        flowkv.check_kv_exchange(layouts[0], flowkv.KvLayout.flowkv_block_major(
            flowkv.KvGeometry(**{**G, "head_dim": 32})))


def test_block_lists_ranges_and_plans():
    blocks = flowkv.BlockList([4, 5, 6, 9])
    assert blocks.runs == [(4, 3), (9, 1)] and len(blocks) == 4
    assert blocks[3] == 9 and blocks.to_ids() == [4, 5, 6, 9]
    assert flowkv.BlockList.from_runs([(4, 3), (9, 1)]) == blocks
    geometry = flowkv.KvGeometry(**G)
    block_major = flowkv.KvLayout.flowkv_block_major(geometry)
    layer_major = flowkv.KvLayout.vllm_flash_attn(geometry)
    assert len(block_major.block_list_ranges(blocks)) == 2
    ops = flowkv.plan_transfer(block_major, blocks, layer_major, [0, 1, 2, 3],
                               4 * G["block_tokens"])
    assert sum(op.length for op in ops) == 4 * block_major.block_bytes
    # Block-major tiles of one block are not adjacent in a layer-major pool:
    # one op per block, layer and part.
    assert len(ops) == 4 * 2 * G["num_layers"]
    region, offset = block_major.element_address(1, 1, 2, 3, 4)
    assert region == 0 and offset > 0


def test_allocator():
    allocator = flowkv.BlockAllocator(64, growth_slack_blocks=0)
    a = allocator.allocate(10)
    assert a.num_runs == 1
    allocator.extend(a, 5)
    assert len(a) == 15 and a.num_runs == 1
    allocator.share(a)
    assert allocator.ref_count(a[0]) == 2
    allocator.free(a)
    allocator.free(a)
    assert allocator.free_blocks == 64
    assert allocator.stats().live_lists == 0


def test_built_package_imports_in_a_fresh_interpreter():
    out = subprocess.run([sys.executable, "-c",
                          "import flowkv; print(flowkv.__version__)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == flowkv.__version__
