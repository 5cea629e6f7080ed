# SPDX-License-Identifier: Apache-2.0
"""flowkv: contiguous KV cache allocation, transfer and scheduling.

Python bindings of libflowkv (the C++ library): KV pool layouts, the block
allocator, the UCX transfer engine, KvTransfer (moving requests' KV between
prefill and decode pools), placement policies and the cluster simulator.

    import flowkv, torch
    geometry = flowkv.KvGeometry(num_layers=2, num_blocks=64, block_tokens=16,
                                 kv_heads=8, head_dim=128, dtype_bytes=2)
    layout = flowkv.KvLayout.flowkv_block_major(geometry)
    pool = torch.zeros(layout.total_bytes // 2, dtype=torch.bfloat16)
    engine = flowkv.TransferEngine(name="decode-0")
    kv = flowkv.KvTransfer(engine, layout, [pool])   # registers the tensor
    print(engine.listen("127.0.0.1:0"))

Errors are exceptions carrying the library's status code: flowkv.Error
(`.code`, a flowkv.StatusCode) and one subclass per code
(InvalidArgumentError, NotFoundError, UnavailableError, ...). docs/python.md
has the whole guide.
"""

from __future__ import annotations

import atexit as _atexit
import weakref as _weakref
from typing import Any, Iterable, List, Sequence

from . import _flowkv
from ._flowkv import (  # noqa: F401  (re-exported)
    AbortedError,
    AllocatedMemory,
    AlreadyExistsError,
    BlockAllocator,
    BlockAllocatorStats,
    BlockList,
    BlockMove,
    BlockOrder,
    ByteRange,
    CancelledError,
    ClusterView,
    DataLossError,
    DeadlineExceededError,
    Error,
    FailedPreconditionError,
    HAS_CUDA_POOL,
    InternalError,
    InvalidArgumentError,
    KvCacheSnapshot,
    KvCachedBlock,
    KvEvent,
    KvEventBatch,
    KvEventKind,
    KvGeometry,
    KvLayout,
    KvPart,
    KvPath,
    KvPathPolicy,
    KvPollResult,
    KvTensor,
    KvTransferStats,
    LinkModel,
    MAX_KV_PAYLOAD_BYTES,
    MAX_KV_REQUEST_ID_BYTES,
    MAX_KV_SENDERS,
    MemoryKind,
    NodeCostModel,
    NodeInfo,
    NodeLoad,
    NodeRole,
    NotFoundError,
    Notification,
    NotificationKind,
    OutOfRangeError,
    PeerDataMethod,
    PeerInfo,
    PermissionDeniedError,
    Placement,
    PoolMemory,
    PoolOrder,
    RebalancePlan,
    RegionInfo,
    RegionSplit,
    RequestInfo,
    ResourceExhaustedError,
    RoleDirective,
    ScaleAdvice,
    Scheduler,
    StatusCode,
    TransferEngineStats,
    TransferHandle,
    TransferOp,
    TransferState,
    TransferStats,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
    VllmKvLayout,
    check_kv_exchange,
    cuda_pool,
    decode_kv_cache_snapshot,
    decode_kv_event_batch,
    encode_kv_cache_snapshot,
    encode_kv_event_batch,
    host_pool,
    plan_transfer,
    register_scheduler,
    registered_schedulers,
    serves_decode,
    serves_prefill,
    shared_host_pool,
)
from . import sim  # noqa: F401

__version__: str = _flowkv.__version__

# Engines and KvTransfers alive in this process, closed by the atexit hook so
# that no library thread calls into a finalizing interpreter.
_live_engines: "_weakref.WeakSet[TransferEngine]" = _weakref.WeakSet()
_live_kv: "_weakref.WeakSet[KvTransfer]" = _weakref.WeakSet()


class TransferEngine(_flowkv.TransferEngine):
    """Moves bytes between registered memory of two processes over UCX.

    TransferEngine(**options) takes the fields of flowkv::TransferEngineOptions
    as keyword arguments (durations in seconds): name, cluster_token,
    default_timeout, ucx_peer_error_handling, peer_failure_timeout,
    connect_timeout, ucx_config (dict of UCX settings without the UCX_
    prefix), busy_poll, idle_spin, max_queued_notifications, max_window_bytes,
    max_registered_bytes, log (callable(severity: int, message: str)).
    Shared-memory transports need ucx_peer_error_handling=False.

    Usable as a context manager (close() on exit). Thread-safe.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        _live_engines.add(self)


class KvTransfer(_flowkv._KvTransfer):
    """Moves requests' KV caches between the pools of two engines.

    KvTransfer(engine, layout, regions=None, *, pool=None,
    staging_ring_bytes=64 MiB, staging_slot_bytes=4 MiB,
    path_policy="auto", incomplete_request_timeout=60.0,
    max_tombstones=65536, log=None).

    The pool is given one of two ways:
      regions  `regions[i]` holds region i of `layout`: either an engine
               region id (int), or a tensor / array / buffer, which is
               checked against the layout (its elements covering one
               contiguous range: contiguous, or a permuted view of a
               contiguous tensor such as vLLM's HND caches, registered in
               memory order; element size 1 or
               layout.geometry.dtype_bytes, at least layout.region_bytes(i)
               bytes) and registered with the engine in place (see
               register_pool). Bytes move directly (UCX) unless the policy
               forces staging.
      pool     a PoolMemory (host_pool, shared_host_pool, cuda_pool): bytes
               move over IPC or the staging ring (peer_path says which).
               Create the KvTransfer before peers connect (its ring is
               engine memory).
    staging_ring_bytes / staging_slot_bytes size the staging ring (a ring
    of ring_bytes // slot_bytes slots); path_policy is a KvPathPolicy or
    "auto", "force_staging", "force_ipc". InvalidArgumentError for a bad
    option (slot 0 or over the ring, an unknown policy, both or neither of
    regions and pool); nothing stays registered then.

    The object holds the engine (the engine is not destroyed before it) and
    the pool (`pool`).
    """

    def __init__(self, engine: TransferEngine, layout: KvLayout,
                 regions: Any = None, *, pool: Any = None,
                 **options: Any) -> None:
        if isinstance(regions, PoolMemory) and pool is None:
            regions, pool = None, regions
        self.pool = pool
        self._registered: List[int] = []
        self.regions: List[int] = []
        if regions is None:
            super().__init__(engine, layout, None, pool=pool, **options)
            _live_kv.add(self)
            return
        regions = list(regions)
        if regions and all(isinstance(r, int) for r in regions):
            ids = regions
        else:
            ids = register_pool(engine, layout, regions)
            self._registered = list(ids)
        try:
            super().__init__(engine, layout, ids, pool=pool, **options)
        except BaseException:
            for region in self._registered:
                engine.deregister_memory(region)
            self._registered = []
            raise
        self.regions = list(ids)
        _live_kv.add(self)


def _element_size(buffer: Any) -> int:
    if hasattr(buffer, "element_size") and callable(buffer.element_size):
        return int(buffer.element_size())  # torch.Tensor
    if hasattr(buffer, "itemsize"):
        return int(buffer.itemsize)  # numpy.ndarray, memoryview
    return 1


def _covers_dense_range(tensor: Any) -> bool:
    # As ExtentOf (python/src/engine.cc): the dimensions sorted by stride,
    # each stride is the product of the sizes below it.
    if tensor.is_contiguous():
        return True
    dims = sorted((stride, size) for size, stride
                  in zip(tensor.shape, tensor.stride()) if size != 1)
    if any(size == 0 for _, size in dims):
        return True
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _nbytes(buffer: Any) -> int:
    if hasattr(buffer, "element_size") and hasattr(buffer, "numel"):
        return int(buffer.numel()) * int(buffer.element_size())
    return memoryview(buffer).nbytes


def register_pool(engine: TransferEngine, layout: KvLayout,
                  buffers: Iterable[Any]) -> List[int]:
    """Registers one buffer per region of `layout` in place; returns the ids.

    Each buffer must be contiguous and writable, of element size 1 (raw
    bytes) or layout.geometry.dtype_bytes, and hold at least
    layout.region_bytes(i) bytes. On any error (InvalidArgumentError naming
    the region) nothing stays registered.
    """
    buffers = list(buffers)
    if len(buffers) != layout.num_regions:
        raise InvalidArgumentError(
            f"regions: {len(buffers)} buffers for a layout of "
            f"{layout.num_regions} regions ({layout})")
    dtype_bytes = layout.geometry.dtype_bytes
    for i, buffer in enumerate(buffers):
        size = _element_size(buffer)
        if size not in (1, dtype_bytes):
            raise InvalidArgumentError(
                f"regions[{i}]: elements of {size} bytes, but the layout's "
                f"dtype_bytes is {dtype_bytes}")
        if hasattr(buffer, "is_contiguous") and not _covers_dense_range(buffer):
            raise InvalidArgumentError(
                f"regions[{i}]: the tensor does not cover one contiguous "
                f"range of memory (a permutation of a contiguous tensor's "
                f"dimensions does)")
        try:
            nbytes = _nbytes(buffer)
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(f"regions[{i}]: {e}") from None
        if nbytes < layout.region_bytes(i):
            raise InvalidArgumentError(
                f"regions[{i}]: {nbytes} bytes, the layout's region {i} needs "
                f"{layout.region_bytes(i)}")
    ids: List[int] = []
    try:
        for buffer in buffers:
            ids.append(engine.register_memory(buffer))
    except BaseException:
        for region in ids:
            engine.deregister_memory(region)
        raise
    return ids


@_atexit.register
def _close_all() -> None:
    # From here on library threads do not call into Python (callbacks are
    # skipped); then every KvTransfer and engine is let go while the
    # interpreter is still whole.
    _flowkv._set_finalizing()
    for kv in list(_live_kv):
        kv.close()
    for engine in list(_live_engines):
        engine.close()


__all__ = [name for name in dir() if not name.startswith("_")]
