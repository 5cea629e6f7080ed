# SPDX-License-Identifier: Apache-2.0
# Stand-ins for the vLLM objects examples/python/vllm_connector.py reads,
# so that the example runs without vLLM: each dataclass has the attributes of
# vLLM's own class (named in its docstring) that the connector uses. Inside
# vLLM, import vLLM's classes instead of these.

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Optional


class KVConnectorRole(enum.Enum):
    SCHEDULER = 0
    WORKER = 1


class RequestStatus(enum.Enum):
    WAITING = enum.auto()
    WAITING_FOR_REMOTE_KVS = enum.auto()
    RUNNING = enum.auto()
    FINISHED_STOPPED = enum.auto()
    FINISHED_LENGTH_CAPPED = enum.auto()
    FINISHED_ABORTED = enum.auto()


@dataclasses.dataclass
class Request:
    """vllm.v1.request.Request: the attributes the connector reads."""

    request_id: str
    prompt_token_ids: list[int]
    kv_transfer_params: Optional[dict[str, Any]] = None
    status: RequestStatus = RequestStatus.WAITING


@dataclasses.dataclass
class KVCacheBlocks:
    """vllm.v1.core.kv_cache_manager.KVCacheBlocks, one KV cache group."""

    block_ids: list[int]

    def get_block_ids(self) -> tuple[list[int], ...]:
        return (list(self.block_ids),)


@dataclasses.dataclass
class SchedulerOutput:
    """vllm.v1.core.sched.output.SchedulerOutput: what the connector reads."""

    finished_req_ids: set[str] = dataclasses.field(default_factory=set)
    kv_connector_metadata: Any = None


@dataclasses.dataclass
class KVConnectorOutput:
    """vllm.v1.outputs.KVConnectorOutput: the workers' get_finished sets."""

    finished_sending: Optional[set[str]] = None
    finished_recving: Optional[set[str]] = None
