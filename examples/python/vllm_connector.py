# SPDX-License-Identifier: Apache-2.0
# FlowKVConnector: a KV connector with the method names, arguments and call
# order of vLLM's KV connector interface (v1), moving KV through flowkv in
# push mode: the prefill worker writes each layer into the decode worker's
# blocks during its forward pass; the decode worker learns per request (and
# per layer) what has arrived.
#
# No vLLM import: the few vLLM objects the connector reads (Request,
# KVCacheBlocks, SchedulerOutput, KVConnectorOutput) are stood in for by the
# plain dataclasses of vllm_stand_ins.py, with the attributes of vLLM's own
# that the connector uses. To run inside vLLM, derive FlowKVConnector from
# vllm.distributed.kv_transfer.kv_connector.v1.base.KVConnectorBase_V1, build
# FlowKVConnectorConfig from vllm_config.kv_transfer_config, and delete the
# stand-ins. docs/python.md ("vLLM connector example") lists the call order.
#
# Roles follow vLLM: one FlowKVConnector per process and role. Role SCHEDULER
# decides which requests move and hands the worker a FlowKVConnectorMetadata
# per step; role WORKER owns the TransferEngine, the registered KV caches and
# the transfers. A connector is either a producer (prefill instance) or a
# consumer (decode instance): FlowKVConnectorConfig.kv_role.
#
# The router's part (what vLLM's proxy does): send the request to the decode
# instance first with kv_transfer_params {"do_remote_prefill": True}; once its
# blocks are allocated, take the decode scheduler's
# remote_decode_params(request_id) (the one call beyond vLLM's interface:
# push mode needs the destination before the prefill runs) and send the
# request to the prefill instance with those as its kv_transfer_params.
#
# Limits of the example: the whole prompt is prefilled in one step (no
# chunked prefill on the prefill instance); the decode instance loads a
# request only when it has no local prefix-cache hit; one tensor-parallel
# rank per instance (for TP fan-in, give each rank's sends sender_rank /
# num_senders and its heads).
#
# Thread safety: externally synchronized, as vLLM's connectors (each role's
# methods are called from one thread).

from __future__ import annotations

import collections
import dataclasses
import logging
import math
from typing import Any, Optional

import torch

import flowkv
from vllm_stand_ins import (KVCacheBlocks, KVConnectorOutput, KVConnectorRole,
                            Request, SchedulerOutput)

logger = logging.getLogger("flowkv.vllm_connector")

# The control message a producer sends when a request it will never send is
# aborted, followed by the request id (utf-8).
ABORT_MESSAGE_PREFIX = b"flowkv-connector/abort\0"


# ---- Configuration and the metadata the scheduler hands the workers ----


@dataclasses.dataclass
class FlowKVConnectorConfig:
    # "kv_producer" (prefill instance) or "kv_consumer" (decode instance).
    kv_role: str
    # vLLM's cache_config.block_size (tokens per block).
    block_size: int
    # The worker's TransferEngine name (shows up in the peer's logs).
    engine_name: str = "flowkv-vllm"
    # More flowkv.TransferEngine options (e.g. cluster_token, ucx_config,
    # default_timeout), as its keyword arguments. Default log: this module's
    # logger, as KvTransfer's.
    engine_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Consumer: where the worker listens for prefill workers. Port 0 picks
    # a free port; the scheduler learns the address from the handshake.
    listen_address: str = "127.0.0.1:0"
    # Consumer: a load not finished this long after start_load_kv fails
    # (DeadlineExceeded), and its blocks are reported as load errors.
    load_timeout_s: float = 30.0
    # Producer: how long the first send to a decode worker waits for its
    # pool (the pool exchange after connecting).
    handshake_timeout_s: float = 10.0
    # Consumer: False (vLLM P/D's way): a load runs between engine steps and
    # get_finished reports it; True: the request runs in the step that loads
    # it, wait_for_layer_load lets each layer's attention start as soon as
    # that layer arrived, and vLLM computes the prompt's last token itself.
    layerwise_load: bool = False
    # Longest single wait inside a blocking call's polling loop.
    poll_interval_s: float = 0.005


@dataclasses.dataclass
class SendMeta:
    """Producer: push this request's KV, layer by layer, this step."""

    request_id: str
    remote_address: str
    src_block_ids: list[int]
    dst_block_ids: list[int]
    num_tokens: int


@dataclasses.dataclass
class AbortMeta:
    """Producer: tell the consumer this request will never be sent."""

    request_id: str
    remote_address: str


@dataclasses.dataclass
class LoadMeta:
    """Consumer: this request's KV arrives into these blocks."""

    request_id: str
    block_ids: list[int]
    num_tokens: int
    layerwise: bool


@dataclasses.dataclass
class FlowKVConnectorMetadata:
    sends: list[SendMeta] = dataclasses.field(default_factory=list)
    aborts: list[AbortMeta] = dataclasses.field(default_factory=list)
    loads: list[LoadMeta] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class FlowKVHandshake:
    """What a consumer worker tells its scheduler: where it listens."""

    address: str


def _blocks_for(num_tokens: int, block_size: int) -> int:
    return math.ceil(num_tokens / block_size)


def _log_to_logger(severity: int, message: str):
    """The engine's and KvTransfer's log callback (any thread)."""
    logger.log((logging.INFO, logging.WARNING, logging.ERROR)[min(severity, 2)],
               "%s", message)


# ---- Scheduler side ----


class _SchedulerSide:
    def __init__(self, config: FlowKVConnectorConfig):
        self._config = config
        self._producer = config.kv_role == "kv_producer"
        self._address: Optional[str] = None
        # This step's work, moved into the metadata by build_connector_meta.
        self._step = FlowKVConnectorMetadata()
        # Producer: requests whose sends were handed to the workers; their
        # blocks stay until the workers report them in finished_sending.
        self._sending: set[str] = set()
        # Consumer: requests loading (from allocation until get_finished
        # reports them), and the destination each offers the router.
        self._loading: set[str] = set()
        self._remote_params: dict[str, dict[str, Any]] = {}

    def set_xfer_handshake_metadata(self, metadata: dict[int, FlowKVHandshake]):
        # One rank per instance in this example: rank 0's address.
        self._address = metadata[0].address

    def get_num_new_matched_tokens(
        self, request: Request, num_computed_tokens: int
    ) -> tuple[Optional[int], bool]:
        params = request.kv_transfer_params or {}
        if self._producer or not params.get("do_remote_prefill"):
            return 0, False
        if num_computed_tokens > 0:
            # A piece always covers the request from token 0; with a local
            # prefix hit the prefill would overwrite shared blocks.
            logger.warning(
                "%s: local prefix hit of %d tokens; computing it locally",
                request.request_id, num_computed_tokens)
            return 0, False
        if self._config.layerwise_load:
            # vLLM computes at least one token of a scheduled request.
            return len(request.prompt_token_ids) - 1, False
        return len(request.prompt_token_ids), True

    def update_state_after_alloc(
        self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int
    ):
        params = request.kv_transfer_params or {}
        if self._producer:
            if params.get("do_remote_decode") and request.request_id not in self._sending:
                missing = [key for key in ("remote_address", "remote_block_ids",
                                           "remote_num_tokens") if key not in params]
                if missing:
                    # As vLLM's NIXL connector: computed here, not sent.
                    logger.warning("%s: kv_transfer_params lack %s; not sending",
                                   request.request_id, ", ".join(missing))
                    return
                num_tokens = min(len(request.prompt_token_ids),
                                 int(params["remote_num_tokens"]))
                src = blocks.get_block_ids()[0]
                self._step.sends.append(SendMeta(
                    request_id=request.request_id,
                    remote_address=params["remote_address"],
                    src_block_ids=src[:_blocks_for(num_tokens, self._config.block_size)],
                    dst_block_ids=list(params["remote_block_ids"]),
                    num_tokens=num_tokens))
                self._sending.add(request.request_id)
            return
        if not params.get("do_remote_prefill") or num_external_tokens == 0:
            return
        # Only one load per request, even if vLLM calls this again after
        # the load (to allocate blocks for the rest of the request).
        params["do_remote_prefill"] = False
        block_ids = blocks.get_block_ids()[0][
            :_blocks_for(num_external_tokens, self._config.block_size)]
        self._step.loads.append(LoadMeta(
            request_id=request.request_id, block_ids=block_ids,
            num_tokens=num_external_tokens,
            layerwise=self._config.layerwise_load))
        if not self._config.layerwise_load:
            self._loading.add(request.request_id)
        self._remote_params[request.request_id] = {
            "do_remote_decode": True,
            "remote_address": self._address,
            "remote_block_ids": block_ids,
            "remote_num_tokens": num_external_tokens,
        }

    def remote_decode_params(self, request_id: str) -> dict[str, Any]:
        """Consumer, for the router: the prefill request's kv_transfer_params.

        Beyond vLLM's interface: push mode needs the decode blocks before the
        prefill runs. KeyError for a request this side does not load.
        """
        return dict(self._remote_params[request_id])

    def build_connector_meta(
        self, scheduler_output: SchedulerOutput
    ) -> FlowKVConnectorMetadata:
        meta, self._step = self._step, FlowKVConnectorMetadata()
        return meta

    def update_connector_output(self, connector_output: KVConnectorOutput):
        for ids in (connector_output.finished_sending,
                    connector_output.finished_recving):
            for request_id in ids or ():
                self._sending.discard(request_id)
                self._loading.discard(request_id)
                self._remote_params.pop(request_id, None)

    def request_finished(
        self, request: Request, block_ids: list[int]
    ) -> tuple[bool, Optional[dict[str, Any]]]:
        params = request.kv_transfer_params or {}
        request_id = request.request_id
        if self._producer:
            if request_id in self._sending:
                # Sent (or sending): the blocks stay until the workers report
                # the sends done, whatever the status (an abort does not
                # stop a forward pass that already ran).
                return True, None
            if params.get("do_remote_decode") and "remote_address" in params:
                # Never scheduled (aborted while waiting): the consumer must
                # not wait for it until its deadline.
                self._step.aborts.append(AbortMeta(
                    request_id=request_id,
                    remote_address=params["remote_address"]))
            return False, None
        self._remote_params.pop(request_id, None)
        # A request still loading keeps its blocks until the load ended
        # (finished or failed): the prefill may still be writing into them.
        return request_id in self._loading, None


# ---- Worker side ----


class _WorkerSide:
    def __init__(self, config: FlowKVConnectorConfig):
        self._config = config
        self._producer = config.kv_role == "kv_producer"
        self._engine = flowkv.TransferEngine(
            **{"log": _log_to_logger, **config.engine_options,
               "name": config.engine_name})
        self._address: Optional[str] = None
        if not self._producer:
            self._address = self._engine.listen(config.listen_address)
        self._kv: Optional[flowkv.KvTransfer] = None
        self._layer_index: dict[str, int] = {}
        self._meta = FlowKVConnectorMetadata()
        # Producer state.
        self._peers: dict[str, int] = {}
        self._handles: dict[str, list] = {}            # request -> send handles
        self._send_errors: dict[str, BaseException] = {}
        self._step_handles: list = []
        self._finished_by_scheduler: set[str] = set()
        # Consumer state: loads in flight, their outcomes not yet reported,
        # aborts that came before their load started.
        self._loads: dict[str, LoadMeta] = {}
        self._ended: dict[str, Optional[BaseException]] = {}
        self._early_aborts: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._load_error_blocks: set[int] = set()
        # Loads whose request the scheduler finished (aborted) meanwhile.
        self._finished_while_loading: set[str] = set()

    # -- start-up --

    def get_handshake_metadata(self) -> Optional[FlowKVHandshake]:
        return FlowKVHandshake(self._address) if self._address else None

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]):
        """Registers vLLM's per-layer FlashAttention caches, in layer order.

        Each is [2, num_blocks, block_size, num_kv_heads, head_size],
        contiguous, all of one shape and dtype; ValueError otherwise.
        """
        tensors = list(kv_caches.values())
        if not tensors:
            raise ValueError("register_kv_caches: no KV caches")
        shape, dtype = tuple(tensors[0].shape), tensors[0].dtype
        for name, t in kv_caches.items():
            if tuple(t.shape) != shape or t.dtype != dtype or len(shape) != 5 \
                    or shape[0] != 2 or not t.is_contiguous():
                raise ValueError(
                    f"register_kv_caches: layer {name!r} is {tuple(t.shape)} "
                    f"{t.dtype}, expected a contiguous [2, blocks, block_size, "
                    f"kv_heads, head_size] tensor like the first, {shape} {dtype}")
        _, num_blocks, block_size, kv_heads, head_size = shape
        if block_size != self._config.block_size:
            raise ValueError(
                f"register_kv_caches: block_size {block_size} differs from the "
                f"config's {self._config.block_size}")
        geometry = flowkv.KvGeometry(
            num_layers=len(tensors), num_blocks=num_blocks,
            block_tokens=block_size, kv_heads=kv_heads, head_dim=head_size,
            dtype_bytes=tensors[0].element_size())
        layout = flowkv.KvLayout.vllm_flash_attn(geometry)
        # Registered in place (host or CUDA memory), region l = layer l; the
        # engine keeps the tensors alive.
        self._kv = flowkv.KvTransfer(self._engine, layout, tensors,
                                     log=_log_to_logger)
        self._layer_index = {name: i for i, name in enumerate(kv_caches)}

    # -- per step --

    def bind_connector_metadata(self, metadata: FlowKVConnectorMetadata):
        self._meta = metadata

    def clear_connector_metadata(self):
        self._meta = FlowKVConnectorMetadata()

    def start_load_kv(self, forward_context: Any = None, **kwargs: Any):
        for abort in self._meta.aborts:
            self._send_abort(abort)
        for load in self._meta.loads:
            self._loads[load.request_id] = load
            if load.request_id in self._early_aborts:
                del self._early_aborts[load.request_id]
                self._end_load(load.request_id, flowkv.CancelledError(
                    f"request {load.request_id} was aborted by the prefill side"))
                continue
            try:
                self._kv.expect(load.request_id, self._config.load_timeout_s)
            except flowkv.Error as error:  # e.g. an id over the length limit
                self._end_load(load.request_id, error)

    def wait_for_layer_load(self, layer_name: str):
        layer = self._layer_index[layer_name]
        for load in self._meta.loads:
            if not load.layerwise:
                continue  # loads between steps; this step does not read it
            while (load.request_id not in self._ended
                   and self._kv.layers_arrived(load.request_id) <= layer):
                # The Expect deadline bounds this: Poll fails the request.
                self._poll(self._config.poll_interval_s)

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor,
                      attn_metadata: Any = None, **kwargs: Any):
        if not self._meta.sends:
            return
        layer = self._layer_index[layer_name]
        if kv_layer.is_cuda:
            # The attention kernel wrote this layer on the compute stream;
            # the transfer reads it from the network side.
            torch.cuda.current_stream(kv_layer.device).synchronize()
        for send in self._meta.sends:
            if send.request_id in self._send_errors:
                continue
            try:
                peer = self._peer(send.remote_address)
            except flowkv.Error as error:
                logger.error("%s: no connection to %s: %s", send.request_id,
                             send.remote_address, error)
                self._send_errors[send.request_id] = error
                continue
            handle = self._kv.send(
                send.request_id, peer, flowkv.BlockList(send.src_block_ids),
                flowkv.BlockList(send.dst_block_ids), send.num_tokens,
                layer_begin=layer, layer_end=layer + 1)
            self._handles.setdefault(send.request_id, []).append(handle)
            self._step_handles.append(handle)

    def wait_for_save(self):
        # vLLM may overwrite these blocks after this returns.
        for handle in self._step_handles:
            handle.wait()
        self._step_handles = []

    def get_finished(self, finished_req_ids: set[str]
                     ) -> tuple[Optional[set[str]], Optional[set[str]]]:
        if self._producer:
            return self._finished_sending(finished_req_ids), None
        return self._finished_loading(finished_req_ids)

    def get_block_ids_with_load_errors(self) -> set[int]:
        blocks, self._load_error_blocks = self._load_error_blocks, set()
        return blocks

    def shutdown(self):
        for handle in self._step_handles:
            handle.wait()
        if self._kv is not None:
            self._kv.close()
        self._engine.close()

    # -- producer helpers --

    def _peer(self, address: str) -> int:
        """The connected peer at `address`, connecting (and exchanging
        pools) on first use. Raises flowkv.Error."""
        peer = self._peers.get(address)
        if peer is not None and not self._engine.get_peer(peer).connected:
            peer = None  # the consumer restarted or failed: a new connection
        if peer is None:
            peer = self._engine.connect(address)
            try:
                self._kv.announce_pool(peer)
                self._kv.wait_for_peer_pool(peer, self._config.handshake_timeout_s)
            except flowkv.Error:
                self._engine.disconnect(peer)
                raise
            self._peers[address] = peer
        return peer

    def _send_abort(self, abort: AbortMeta):
        try:
            peer = self._peer(abort.remote_address)
            self._engine.send(peer, ABORT_MESSAGE_PREFIX + abort.request_id.encode())
        except flowkv.Error as error:
            # The consumer's load deadline ends the request instead.
            logger.warning("%s: abort not delivered to %s: %s",
                           abort.request_id, abort.remote_address, error)

    def _finished_sending(self, finished_req_ids: set[str]) -> set[str]:
        # vLLM's contract: report only requests the scheduler finished (and
        # of those only ours: the ones whose request_finished returned True).
        self._finished_by_scheduler |= finished_req_ids & (
            self._handles.keys() | self._send_errors.keys())
        done = set()
        for request_id in list(self._finished_by_scheduler):
            handles = self._handles.get(request_id, [])
            if not all(h.done for h in handles):
                continue
            failed = [h.status for h in handles if h.status is not None]
            if failed or request_id in self._send_errors:
                # The consumer was told (failure notice, or its peer
                # disconnected): it reports a failed load. Nothing more is
                # written from these blocks, so they may be freed.
                logger.error("%s: send failed: %s", request_id,
                             failed[0] if failed else self._send_errors[request_id])
            done.add(request_id)
            self._handles.pop(request_id, None)
            self._send_errors.pop(request_id, None)
            self._finished_by_scheduler.discard(request_id)
        return done

    # -- consumer helpers --

    def _poll(self, wait_s: float = 0.0):
        result = self._kv.poll(wait_s)
        for request_id, _payload in result.finished:
            self._end_load(request_id, None)
        for request_id, error in result.failed:
            self._end_load(request_id, error)
        for note in result.other:
            data = note.data
            if (note.kind != flowkv.NotificationKind.MESSAGE
                    or not data.startswith(ABORT_MESSAGE_PREFIX)):
                continue
            request_id = data[len(ABORT_MESSAGE_PREFIX):].decode()
            if request_id in self._loads:
                self._kv.forget(request_id)
                self._end_load(request_id, flowkv.CancelledError(
                    f"request {request_id} was aborted by the prefill side"))
            else:
                self._early_aborts[request_id] = None
                while len(self._early_aborts) > 65536:
                    self._early_aborts.popitem(last=False)

    def _end_load(self, request_id: str, error: Optional[BaseException]):
        load = self._loads.get(request_id)
        if load is None or request_id in self._ended:
            return  # not ours, or already ended
        self._ended[request_id] = error
        if error is not None:
            logger.error("%s: load failed: %s", request_id, error)
            self._load_error_blocks.update(load.block_ids)

    def _finished_loading(self, finished_req_ids: set[str]
                          ) -> tuple[set[str], set[str]]:
        self._poll()
        sending, recving = set(), set()
        # Requests the scheduler finished while loading asked to keep their
        # blocks (request_finished returned True): free them once the load
        # ended, as vLLM frees blocks of finished_sending requests.
        self._finished_while_loading |= finished_req_ids & self._loads.keys()
        for request_id in list(self._ended):
            load = self._loads.pop(request_id)
            del self._ended[request_id]
            if request_id in self._finished_while_loading:
                self._finished_while_loading.discard(request_id)
                sending.add(request_id)
            elif not load.layerwise:
                recving.add(request_id)  # a failed load too, with its blocks
        return sending, recving


# ---- The connector ----


class FlowKVConnector:
    """vLLM's KVConnectorBase_V1 methods over flowkv (see the file comment).

    Each method belongs to one role and raises RuntimeError on the other's.
    """

    def __init__(self, config: FlowKVConnectorConfig, role: KVConnectorRole):
        if config.kv_role not in ("kv_producer", "kv_consumer"):
            raise ValueError(f"kv_role {config.kv_role!r} is not kv_producer or kv_consumer")
        self.role = role
        self._scheduler = _SchedulerSide(config) if role == KVConnectorRole.SCHEDULER else None
        self._worker = _WorkerSide(config) if role == KVConnectorRole.WORKER else None

    def _side(self, role: KVConnectorRole):
        side = self._scheduler if role == KVConnectorRole.SCHEDULER else self._worker
        if side is None:
            raise RuntimeError(f"a {self.role.name} connector has no {role.name} methods")
        return side

    # Scheduler side, in the order vLLM calls them.
    def set_xfer_handshake_metadata(self, metadata: dict[int, FlowKVHandshake]):
        self._side(KVConnectorRole.SCHEDULER).set_xfer_handshake_metadata(metadata)

    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int):
        return self._side(KVConnectorRole.SCHEDULER).get_num_new_matched_tokens(
            request, num_computed_tokens)

    def update_state_after_alloc(self, request: Request, blocks: KVCacheBlocks,
                                 num_external_tokens: int):
        self._side(KVConnectorRole.SCHEDULER).update_state_after_alloc(
            request, blocks, num_external_tokens)

    def remote_decode_params(self, request_id: str) -> dict[str, Any]:
        return self._side(KVConnectorRole.SCHEDULER).remote_decode_params(request_id)

    def build_connector_meta(self, scheduler_output: SchedulerOutput):
        return self._side(KVConnectorRole.SCHEDULER).build_connector_meta(scheduler_output)

    def update_connector_output(self, connector_output: KVConnectorOutput):
        self._side(KVConnectorRole.SCHEDULER).update_connector_output(connector_output)

    def request_finished(self, request: Request, block_ids: list[int]):
        return self._side(KVConnectorRole.SCHEDULER).request_finished(request, block_ids)

    # Worker side, in the order vLLM calls them.
    def get_handshake_metadata(self) -> Optional[FlowKVHandshake]:
        return self._side(KVConnectorRole.WORKER).get_handshake_metadata()

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]):
        self._side(KVConnectorRole.WORKER).register_kv_caches(kv_caches)

    def bind_connector_metadata(self, connector_metadata: FlowKVConnectorMetadata):
        self._side(KVConnectorRole.WORKER).bind_connector_metadata(connector_metadata)

    def start_load_kv(self, forward_context: Any = None, **kwargs: Any):
        self._side(KVConnectorRole.WORKER).start_load_kv(forward_context, **kwargs)

    def wait_for_layer_load(self, layer_name: str):
        self._side(KVConnectorRole.WORKER).wait_for_layer_load(layer_name)

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor,
                      attn_metadata: Any = None, **kwargs: Any):
        self._side(KVConnectorRole.WORKER).save_kv_layer(
            layer_name, kv_layer, attn_metadata, **kwargs)

    def wait_for_save(self):
        self._side(KVConnectorRole.WORKER).wait_for_save()

    def get_finished(self, finished_req_ids: set[str]):
        return self._side(KVConnectorRole.WORKER).get_finished(finished_req_ids)

    def get_block_ids_with_load_errors(self) -> set[int]:
        return self._side(KVConnectorRole.WORKER).get_block_ids_with_load_errors()

    def clear_connector_metadata(self):
        self._side(KVConnectorRole.WORKER).clear_connector_metadata()

    def shutdown(self):
        if self._worker is not None:
            self._worker.shutdown()
