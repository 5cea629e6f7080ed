# SPDX-License-Identifier: Apache-2.0
"""Shared helpers of the Python tests: transports, engine options, peer
processes (python/tests/kv_peer.py) and the deterministic KV contents both
processes compute.

Every engine is pinned to loopback (UCX_NET_DEVICES=lo, listeners on
127.0.0.1). Time bounds derive from the options the tests set
(OPTIONS_TIMEOUT_S); nothing sleeps to synchronise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

HERE = Path(__file__).resolve().parent

# Engine timeouts the tests set; every wait in a test is a multiple of it.
OPTIONS_TIMEOUT_S = 10.0

TRANSPORTS = {
    # Shared memory for the data; tcp for the connection manager. UCX's
    # shared-memory transports need ucx_peer_error_handling off.
    "shm": {"TLS": "posix,cma,self,tcp"},
    "tcp": {"TLS": "tcp"},
}


def engine_options(transport: str, name: str = "flowkv-test") -> Dict:
    config = dict(TRANSPORTS[transport])
    config["NET_DEVICES"] = "lo"
    return {
        "name": name,
        "cluster_token": "python-tests",
        "ucx_config": config,
        "ucx_peer_error_handling": transport != "shm",
        "default_timeout": OPTIONS_TIMEOUT_S,
        "connect_timeout": OPTIONS_TIMEOUT_S,
        "peer_failure_timeout": 2.0,
    }


@pytest.fixture(params=sorted(TRANSPORTS))
def transport(request) -> str:
    return request.param


def child_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.setdefault("UCX_NET_DEVICES", "lo")
    return env


def start_peer(*args: str) -> subprocess.Popen:
    """Starts python/tests/kv_peer.py with `args` under this interpreter."""
    return subprocess.Popen(
        [sys.executable, str(HERE / "kv_peer.py"), *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=child_env())


def layer_values(layer: int, shape: List[int]):
    """The KV tensor of `layer` the sender fills: small integers (exact in
    float16) that differ per layer and per element."""
    import torch
    n = 1
    for s in shape:
        n *= s
    values = (torch.arange(n, dtype=torch.int64) * 7 + layer * 131) % 2039
    return values.to(torch.float16).reshape(shape)


# The pools of the two-process tests: vLLM FlashAttention (layer-major, one
# tensor [2, N, T, H, D] per layer) on the sender, FlowKV block-major on the
# receiver.
GEOMETRY = dict(num_layers=3, num_blocks=16, block_tokens=8, kv_heads=4,
                head_dim=32, dtype_bytes=2)
SRC_BLOCKS = [3, 4, 5]
DST_BLOCKS = [10, 11, 12]
NUM_TOKENS = 20  # the last block is partial


def vllm_shape() -> List[int]:
    g = GEOMETRY
    return [2, g["num_blocks"], g["block_tokens"], g["kv_heads"], g["head_dim"]]


# The KvTransferStats fields of staging and IPC (kv_peer.py --report).
KV_STATS_FIELDS = ["staged_slots_sent", "staged_bytes_sent",
                   "staged_slots_received", "staged_bytes_received",
                   "slots_refused", "ipc_copies", "ring_slots",
                   "ring_slots_free", "ring_slots_max_in_use"]


def assert_block_major_holds_request(pool) -> None:
    """Asserts that `pool` (a float16 tensor over a FlowKV block-major pool
    of GEOMETRY) holds what kv_peer.py sends: the request's NUM_TOKENS tokens
    in DST_BLOCKS, byte for byte, and zeros in every other block (the tail
    of the last, partial block is the sender's to fill or not)."""
    import torch
    g = GEOMETRY
    T = g["block_tokens"]
    dst = pool.view(g["num_blocks"], g["num_layers"], 2, T, g["kv_heads"],
                    g["head_dim"])
    for layer in range(g["num_layers"]):
        src = layer_values(layer, vllm_shape())
        for i, (s, d) in enumerate(zip(SRC_BLOCKS, DST_BLOCKS)):
            tokens = min(T, NUM_TOKENS - i * T)
            assert torch.equal(dst[d, layer, :, :tokens].view(torch.int16),
                               src[:, s, :tokens].view(torch.int16)), (layer, i)
    untouched = [b for b in range(g["num_blocks"]) if b not in DST_BLOCKS]
    assert torch.count_nonzero(dst[untouched].view(torch.int16)) == 0


def receive_request_from_peer(transport: str, *peer_args: str) -> None:
    """Listens with a KvTransfer over a FlowKV block-major pool of GEOMETRY,
    starts kv_peer.py (with `peer_args`) as the sender, and asserts that the
    one request it sends finishes with its payload and lands byte for byte
    (assert_block_major_holds_request)."""
    import time

    import flowkv
    import torch
    geometry = flowkv.KvGeometry(**GEOMETRY)
    layout = flowkv.KvLayout.flowkv_block_major(geometry)
    pool = torch.zeros(layout.total_bytes // 2, dtype=torch.float16)
    engine = flowkv.TransferEngine(**engine_options(transport, "decode"))
    kv = flowkv.KvTransfer(engine, layout, [pool])
    address = engine.listen("127.0.0.1:0")
    sender = start_peer("--address", address, "--transport", transport,
                        *peer_args)
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
    assert_block_major_holds_request(pool)
    kv.close()
    engine.close()
