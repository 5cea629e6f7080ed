# SPDX-License-Identifier: Apache-2.0
# Type stubs of the extension module flowkv._flowkv (python/src/*.cc).
# Durations and times are float seconds (times since the Unix epoch).

from __future__ import annotations

import enum
from typing import (Any, Callable, Dict, Iterable, List, Optional, Sequence,
                    Tuple, Union)

import numpy

__version__: str
def version() -> str: ...

# ---- Errors (errors.cc) ----

class StatusCode(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

class Error(Exception):
    code: StatusCode

class CancelledError(Error): ...
class UnknownError(Error): ...
class InvalidArgumentError(Error, ValueError): ...
class DeadlineExceededError(Error, TimeoutError): ...
class NotFoundError(Error): ...
class AlreadyExistsError(Error): ...
class PermissionDeniedError(Error): ...
class ResourceExhaustedError(Error): ...
class FailedPreconditionError(Error): ...
class AbortedError(Error): ...
class OutOfRangeError(Error): ...
class UnimplementedError(Error): ...
class InternalError(Error): ...
class UnavailableError(Error): ...
class DataLossError(Error): ...
class UnauthenticatedError(Error): ...

def _set_finalizing() -> None: ...

# ---- Layouts (layout.cc) ----

class PoolOrder(enum.Enum):
    LAYER_MAJOR = 0
    BLOCK_MAJOR = 1

class BlockOrder(enum.Enum):
    NHD = 0
    HND = 1

class RegionSplit(enum.Enum):
    ONE_PER_POOL = 0
    ONE_PER_LAYER = 1

class KvPart(enum.Enum):
    KEY = 0
    VALUE = 1

class VllmKvLayout(enum.Enum):
    LBNHC = 0
    LBHNC = 1
    LHBNC = 2
    BLNHC = 3
    BLHNC = 4
    BHLNC = 5

class KvGeometry:
    num_layers: int
    num_blocks: int
    block_tokens: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int
    num_parts: int
    def __init__(self, *, num_layers: int = 0, num_blocks: int = 0,
                 block_tokens: int = 0, kv_heads: int = 0, head_dim: int = 0,
                 dtype_bytes: int = 0, num_parts: int = 2) -> None: ...

class KvTensor:
    region: int
    offset: int
    block_stride: int
    token_stride: int
    head_stride: int
    def __init__(self, *, region: int = 0, offset: int = 0,
                 block_stride: int = 0, token_stride: int = 0,
                 head_stride: int = 0) -> None: ...

class ByteRange:
    region: int
    offset: int
    length: int

BlockIds = Union["BlockList", Sequence[int]]

class BlockList:
    def __init__(self, ids: Sequence[int] = ...) -> None: ...
    @staticmethod
    def from_runs(runs: Sequence[Tuple[int, int]]) -> BlockList: ...
    def append(self, first: int, count: int) -> None: ...
    def append_list(self, other: BlockList) -> None: ...
    @property
    def runs(self) -> List[Tuple[int, int]]: ...
    @property
    def num_runs(self) -> int: ...
    @property
    def num_blocks(self) -> int: ...
    def to_ids(self) -> List[int]: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> int: ...

class KvLayout:
    @staticmethod
    def flowkv_block_major(geometry: KvGeometry, order: BlockOrder = ...) -> KvLayout: ...
    @staticmethod
    def vllm_flash_attn(geometry: KvGeometry, order: BlockOrder = ...) -> KvLayout: ...
    @staticmethod
    def vllm_flash_infer(geometry: KvGeometry, order: BlockOrder = ...) -> KvLayout: ...
    @staticmethod
    def vllm_cross_layer(geometry: KvGeometry, order: BlockOrder = ...) -> KvLayout: ...
    @staticmethod
    def vllm(geometry: KvGeometry, layout: VllmKvLayout,
             split: RegionSplit = ...) -> KvLayout: ...
    @staticmethod
    def sglang_mha(geometry: KvGeometry) -> KvLayout: ...
    @staticmethod
    def mla(geometry: KvGeometry) -> KvLayout: ...
    @staticmethod
    def trtllm_block_pool(geometry: KvGeometry) -> KvLayout: ...
    @staticmethod
    def create(geometry: KvGeometry, pool_order: PoolOrder = ...,
               block_order: BlockOrder = ...,
               region_split: RegionSplit = ...) -> KvLayout: ...
    @staticmethod
    def create_strided(geometry: KvGeometry,
                       tensors: Sequence[KvTensor]) -> KvLayout: ...
    @staticmethod
    def parse(data: bytes) -> KvLayout: ...
    def serialize(self) -> bytes: ...
    def fingerprint(self) -> int: ...
    @property
    def geometry(self) -> KvGeometry: ...
    @property
    def name(self) -> str: ...
    @property
    def num_parts(self) -> int: ...
    @property
    def num_regions(self) -> int: ...
    @property
    def tensors(self) -> List[KvTensor]: ...
    @property
    def tile_order(self) -> Optional[BlockOrder]: ...
    def region_bytes(self, region: Optional[int] = None) -> int: ...
    @property
    def total_bytes(self) -> int: ...
    @property
    def head_bytes(self) -> int: ...
    @property
    def token_bytes(self) -> int: ...
    @property
    def tile_bytes(self) -> int: ...
    @property
    def block_bytes(self) -> int: ...
    @property
    def bytes_per_token(self) -> int: ...
    def element_address(self, layer: int, part: int, block: int,
                        token: int = 0, head: int = 0) -> Tuple[int, int]: ...
    def block_list_ranges(self, blocks: BlockIds) -> List[ByteRange]: ...

def check_kv_exchange(a: KvLayout, b: KvLayout) -> None: ...

class TransferOp:
    src_region: int
    src_offset: int
    dst_region: int
    dst_offset: int
    length: int
    def __init__(self, src_region: int, src_offset: int, dst_region: int,
                 dst_offset: int, length: int) -> None: ...

Ops = Sequence[Union[TransferOp, Tuple[int, int, int, int, int]]]

def plan_transfer(src_layout: KvLayout, src_blocks: BlockIds,
                  dst_layout: KvLayout, dst_blocks: BlockIds, num_tokens: int,
                  *, layer_begin: int = 0, layer_end: int = 0,
                  src_head_begin: int = 0, dst_head_begin: int = 0,
                  num_heads: int = 0) -> List[TransferOp]: ...

# ---- Allocator (allocator.cc) ----

class BlockAllocatorStats:
    num_blocks: int
    free_blocks: int
    free_runs: int
    largest_free_run: int
    live_lists: int
    runs_histogram: Dict[int, int]
    mean_runs_per_list: float
    cached_blocks: int
    indexed_blocks: int
    lookups: int
    lookup_blocks: int
    lookup_hit_blocks: int
    evictions: int
    evicted_blocks: int
    latest_event_seq: int

class BlockMove:
    src: int
    dst: int
    count: int

class KvEventKind(enum.Enum):
    BLOCK_STORED = 1
    BLOCK_REMOVED = 2
    ALL_CLEARED = 3

class KvEvent:
    seq: int
    kind: KvEventKind
    hashes: List[int]
    has_parent: bool
    parent: int
    @property
    def runs(self) -> List[Tuple[int, int]]: ...

class KvEventBatch:
    events: List[KvEvent]
    fell_behind: bool
    latest_seq: int

class KvCachedBlock:
    hash: int
    has_parent: bool
    parent: int
    block: int
    in_use: bool

class KvCacheSnapshot:
    seq: int
    blocks: List[KvCachedBlock]

def encode_kv_event_batch(batch: KvEventBatch) -> bytes: ...
def decode_kv_event_batch(data: bytes) -> KvEventBatch: ...
def encode_kv_cache_snapshot(snapshot: KvCacheSnapshot) -> bytes: ...
def decode_kv_cache_snapshot(data: bytes) -> KvCacheSnapshot: ...

class BlockAllocator:
    def __init__(self, num_blocks: int, *, growth_slack_blocks: int = 32,
                 enable_prefix_cache: bool = False,
                 event_buffer_capacity: int = 4096) -> None: ...
    def allocate(self, n: int, *,
                 after: Optional[Tuple[int, int]] = None) -> BlockList: ...
    def extend(self, blocks: BlockList, n: int) -> None: ...
    def free(self, blocks: BlockIds, *,
             hashes: Optional[Sequence[int]] = None) -> None: ...
    def cache_blocks(self, blocks: BlockIds, hashes: Sequence[int]) -> None: ...
    def lookup(self, hashes: Sequence[int]) -> BlockList: ...
    def clear_cache(self) -> None: ...
    def read_events(self, after_seq: int = 0,
                    max_events: int = ...) -> KvEventBatch: ...
    def snapshot(self) -> KvCacheSnapshot: ...
    def share(self, blocks: BlockIds) -> None: ...
    def ref_count(self, block: int) -> int: ...
    def stats(self) -> BlockAllocatorStats: ...
    @property
    def num_blocks(self) -> int: ...
    @property
    def free_blocks(self) -> int: ...
    @property
    def available_blocks(self) -> int: ...
    @property
    def prefix_cache_enabled(self) -> bool: ...
    def plan_compaction(self) -> List[BlockMove]: ...

# ---- Transfers (engine.cc, transfer_handle.cc) ----

class TransferState(enum.Enum):
    PENDING = 0
    IN_FLIGHT = 1
    DONE = 2

class TransferStats:
    ops: int
    bytes: int
    submit_time: float
    post_time: float
    completion_time: float

class TransferHandle:
    def wait(self, timeout: Optional[float] = None) -> bool: ...
    def result(self, timeout: Optional[float] = None) -> None: ...
    @property
    def done(self) -> bool: ...
    @property
    def state(self) -> TransferState: ...
    @property
    def status(self) -> Optional[Error]:
        """None until done and when it succeeded; else the failure."""
    @property
    def stats(self) -> TransferStats: ...
    @property
    def valid(self) -> bool: ...
    def cancel(self) -> None: ...

class MemoryKind(enum.Enum):
    HOST = 0
    CUDA_DEVICE = 1

class PeerDataMethod(enum.Enum):
    RMA = 0
    ACTIVE_MESSAGES = 1

class NotificationKind(enum.Enum):
    TRANSFER = 0
    MESSAGE = 1
    PEER_DISCONNECTED = 2

class RegionInfo:
    id: int
    kind: MemoryKind
    base: int
    length: int

class PeerInfo:
    id: int
    name: str
    connected: bool
    failure: Optional[Error]
    regions: List[RegionInfo]
    write_method: PeerDataMethod
    read_method: PeerDataMethod

class Notification:
    peer: int
    kind: NotificationKind
    data: bytes

class TransferEngineStats:
    peers_tracked: int
    peers_connected: int
    peers_listed: int
    transfers_active: int
    messages_dropped: int
    registered_bytes: int

class AllocatedMemory:
    id: int
    address: int
    length: int
    array: numpy.ndarray

OnComplete = Callable[[Optional[Error], TransferStats], Any]

class TransferEngine:
    def __init__(self, **options: Any) -> None: ...
    def register_memory(self, buffer: Any) -> int: ...
    def allocate_memory(self, length: int) -> AllocatedMemory: ...
    def deregister_memory(self, region: int) -> None: ...
    def regions(self) -> List[RegionInfo]: ...
    def listen(self, address: str = "127.0.0.1:0") -> str: ...
    def connect(self, address: str) -> int: ...
    def local_metadata(self) -> bytes: ...
    def add_peer(self, metadata: bytes) -> int: ...
    def disconnect(self, peer: int) -> None: ...
    def peers(self) -> List[PeerInfo]: ...
    def get_peer(self, peer: int) -> PeerInfo: ...
    def write(self, peer: int, ops: Ops, *,
              notification: Optional[Union[str, bytes]] = None,
              timeout: Optional[float] = None, acknowledged: bool = False,
              on_complete: Optional[OnComplete] = None) -> TransferHandle: ...
    def read(self, peer: int, ops: Ops, *,
             notification: Optional[Union[str, bytes]] = None,
             timeout: Optional[float] = None, acknowledged: bool = False,
             on_complete: Optional[OnComplete] = None) -> TransferHandle: ...
    def send(self, peer: int, data: bytes, *, timeout: Optional[float] = None,
             on_complete: Optional[OnComplete] = None) -> TransferHandle: ...
    def take_notifications(self, wait: float = 0.0) -> List[Notification]: ...
    @staticmethod
    def validate_metadata(metadata: bytes) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def supports_cuda_memory(self) -> bool: ...
    @property
    def ucx_info(self) -> str: ...
    def stats(self) -> TransferEngineStats: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> TransferEngine: ...
    def __exit__(self, *args: Any) -> None: ...

# ---- Pool memory (pool_memory.cc) ----

HAS_CUDA_POOL: bool

class PoolMemory:
    @property
    def kind(self) -> MemoryKind: ...
    @property
    def num_regions(self) -> int: ...
    def region_bytes(self, region: int) -> int: ...
    def region_address(self, region: int) -> int: ...
    @property
    def shareable(self) -> bool: ...
    # host_pool / cuda_pool: the buffers given; shared_host_pool: uint8
    # numpy arrays over the regions.
    @property
    def regions(self) -> List[Any]: ...

def host_pool(buffers: Iterable[Any]) -> PoolMemory: ...
def shared_host_pool(sizes: Union[KvLayout, Sequence[int]]) -> PoolMemory: ...
def cuda_pool(tensors: Iterable[Any], *, device: Optional[int] = None,
              share: bool = True) -> PoolMemory: ...

# ---- KvTransfer (kv_transfer.cc) ----

MAX_KV_REQUEST_ID_BYTES: int
MAX_KV_PAYLOAD_BYTES: int
MAX_KV_SENDERS: int

# A request id in a result: str; bytes for an id that is not UTF-8 (only a
# C or C++ sender can send one).
ResultId = Union[str, bytes]

class KvPollResult:
    finished: List[Tuple[ResultId, bytes]]
    failed: List[Tuple[ResultId, Error]]
    released: List[Tuple[ResultId, int, Optional[Error]]]
    other: List[Notification]
    def __bool__(self) -> bool: ...

class KvPath(enum.Enum):
    DIRECT = 0
    IPC = 1
    STAGING = 2

class KvPathPolicy(enum.Enum):
    AUTO = 0
    FORCE_STAGING = 1
    FORCE_IPC = 2

class KvTransferStats:
    requests_active: int
    results_pending: int
    requests_finished: int
    requests_failed: int
    requests_timed_out: int
    tombstones: int
    malformed_notices: int
    late_notices: int
    pools_refused: int
    staged_slots_sent: int
    staged_bytes_sent: int
    staged_slots_received: int
    staged_bytes_received: int
    slots_refused: int
    ipc_copies: int
    ring_slots: int
    ring_slots_free: int
    ring_slots_max_in_use: int

# send's ready_event: a torch.cuda.Event (its cuda_event), a cudaEvent_t as
# an int, or None.
ReadyEvent = Any

class _KvTransfer:
    def __init__(self, engine: TransferEngine, layout: KvLayout,
                 regions: Optional[Sequence[int]] = None, *,
                 pool: Optional[PoolMemory] = None,
                 staging_ring_bytes: int = 64 << 20,
                 staging_slot_bytes: int = 4 << 20,
                 path_policy: Union[KvPathPolicy, str] = "auto",
                 incomplete_request_timeout: float = 60.0,
                 max_tombstones: int = 65536,
                 log: Optional[Callable[[int, str], Any]] = None) -> None: ...
    def send(self, request_id: Union[str, bytes], peer: int,
             src_blocks: BlockIds, dst_blocks: BlockIds, num_tokens: int, *,
             token_begin: int = 0, layer_begin: int = 0, layer_end: int = 0,
             src_head_begin: int = 0, dst_head_begin: int = 0,
             num_heads: int = 0, sender_rank: int = 0, num_senders: int = 1,
             final_chunk: bool = True, payload: bytes = b"",
             timeout: Optional[float] = None,
             ready_event: ReadyEvent = None) -> TransferHandle: ...
    def fetch(self, request_id: Union[str, bytes], peer: int,
              src_blocks: BlockIds, dst_blocks: BlockIds, num_tokens: int, *,
              token_begin: int = 0, layer_begin: int = 0, layer_end: int = 0,
              src_head_begin: int = 0, dst_head_begin: int = 0,
              num_heads: int = 0, sender_rank: int = 0, num_senders: int = 1,
              final_chunk: bool = True, payload: bytes = b"",
              timeout: Optional[float] = None) -> TransferHandle: ...
    def poll(self, wait: float = 0.0) -> KvPollResult: ...
    def take_results(self) -> KvPollResult: ...
    def expect(self, request_id: Union[str, bytes], timeout: float) -> None: ...
    def forget(self, request_id: Union[str, bytes]) -> None: ...
    def announce_pool(self, peer: int) -> None: ...
    def wait_for_peer_pool(self, peer: int, timeout: float = 10.0) -> None: ...
    def peer_pool(self, peer: int) -> KvLayout: ...
    def peer_path(self, peer: int) -> KvPath: ...
    def add_peer_pool(self, peer: int, layout: KvLayout,
                      peer_regions: Sequence[int]) -> None: ...
    def layers_arrived(self, request_id: Union[str, bytes]) -> int: ...
    def stats(self) -> KvTransferStats: ...
    @property
    def layout(self) -> KvLayout: ...
    def close(self) -> None: ...

# ---- Schedulers (scheduler.cc) ----

class NodeRole(enum.Enum):
    PREFILL = 0
    DECODE = 1
    HYBRID = 2

class ScaleAdvice(enum.Enum):
    NONE = 0
    SCALE_OUT = 1
    SCALE_IN = 2

def serves_prefill(role: NodeRole) -> bool: ...
def serves_decode(role: NodeRole) -> bool: ...

class NodeCostModel:
    a: float
    b: float
    c: float
    t0: float
    k: float
    e: float
    def __init__(self, **fields: float) -> None: ...
    def prefill_ms(self, tokens: float) -> float: ...
    def decode_step_ms(self, batch: float, context_tokens: float) -> float: ...

class NodeLoad:
    queued_prefill_tokens: float
    queued_prefill_ms: float
    running_decode: float
    waiting_decode: float
    decode_context_tokens: float
    kv_blocks_used: float
    kv_blocks_total: float
    utilization: float
    def __init__(self, **fields: float) -> None: ...

class LinkModel:
    bandwidth_bytes_per_s: float
    call_overhead_ms: float
    fixed_ms: float
    def __init__(self, **fields: float) -> None: ...
    def transfer_ms(self, bytes: float, calls: float) -> float: ...

class NodeInfo:
    id: int
    role: NodeRole
    current_role: NodeRole
    role_cycles_left: int
    cost: NodeCostModel
    kv_bytes_per_token: float
    block_tokens: int
    load: NodeLoad
    last_report: float
    available: bool
    def __init__(self, **fields: Any) -> None: ...

class RequestInfo:
    id: int
    input_tokens: int
    expected_output_tokens: int
    def __init__(self, **fields: int) -> None: ...

class Placement:
    prefill_node: int
    decode_node: int
    predicted_ttft_ms: float
    predicted_transfer_ms: float
    colocated: bool
    def __init__(self, **fields: Any) -> None: ...

class RoleDirective:
    node: int
    role: NodeRole
    cycles: int
    def __init__(self, **fields: Any) -> None: ...

class RebalancePlan:
    directives: List[RoleDirective]
    scale: ScaleAdvice
    reason: str
    prefill_score: float
    decode_score: float
    def __init__(self, **fields: Any) -> None: ...

class ClusterView:
    def __init__(self, *, smoothing: float = 0.5, stale_after: float = 5.0,
                 default_link: LinkModel = ...) -> None: ...
    def add_node(self, node: NodeInfo) -> None: ...
    def remove_node(self, id: int) -> None: ...
    def report_load(self, id: int, load: NodeLoad,
                    now: Optional[float] = None) -> None: ...
    def set_role(self, id: int, role: NodeRole, cycles: int) -> None: ...
    def tick_role_cycles(self) -> None: ...
    def set_link(self, src: int, dst: int, link: LinkModel) -> None: ...
    def link(self, src: int, dst: int) -> LinkModel: ...
    @property
    def nodes(self) -> List[NodeInfo]: ...
    def find(self, id: int) -> Optional[NodeInfo]: ...
    def is_usable(self, node: NodeInfo, now: Optional[float] = None) -> bool: ...
    def copy(self) -> ClusterView: ...

class Scheduler:
    @staticmethod
    def create(name: str, params: Dict[str, float] = ...) -> Scheduler: ...
    @property
    def name(self) -> str: ...
    def place(self, request: RequestInfo, cluster: ClusterView,
              now: Optional[float] = None) -> Placement: ...
    def rebalance(self, cluster: ClusterView,
                  now: Optional[float] = None) -> RebalancePlan: ...

def registered_schedulers() -> List[str]: ...
def register_scheduler(name: str,
                       factory: Callable[[Dict[str, float]], Any]) -> None: ...

# ---- Simulator (sim.cc): the submodule flowkv._flowkv.sim ----

class _SimModule:
    class SimRequest:
        id: int
        arrival_ms: float
        input_tokens: int
        output_tokens: int
        hash_ids: List[int]
        def __init__(self, id: int, arrival_ms: float, input_tokens: int,
                     output_tokens: int, *,
                     hash_ids: List[int] = ...) -> None: ...
    @staticmethod
    def make_workload(spec: str = ..., *, rate: float = 1.0,
                      requests: int = 100, seed: int = 1,
                      time_scale: float = 1.0) -> List[Any]: ...
    @staticmethod
    def node_types() -> List[str]: ...
    @staticmethod
    def parse_cluster_spec(spec: str) -> List[Tuple[str, str]]: ...
    @staticmethod
    def simulate(cluster: str = ..., workload: Any = ..., **kwargs: Any) -> Dict[str, Any]: ...

sim: _SimModule
_bench: Any
