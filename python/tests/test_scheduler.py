# SPDX-License-Identifier: Apache-2.0
"""Schedulers from Python: the built-in policies on a ClusterView, and a
policy written in Python, registered by name, that the C++ simulator drives:
it gives the same metrics as the same policy written in C++
(examples/custom_scheduler.cc's "prefer_same_rack", in
_policy_test_module)."""

from __future__ import annotations

import math

import pytest

import _policy_test_module
import flowkv


class PreferSameRack:
    """The prefill node with the fewest queued prompt tokens; the least busy
    decode node with room for the request in the prefill node's rack (racks
    of `rack_size` consecutive ids), else in any rack."""

    def __init__(self, params):
        self.rack_size = int(params.get("rack_size", 4))

    @staticmethod
    def busy(node):
        return node.load.running_decode + node.load.waiting_decode

    @staticmethod
    def has_room(node, request):
        total = node.load.kv_blocks_total
        need = math.ceil(float(request.input_tokens +
                               request.expected_output_tokens) /
                         node.block_tokens)
        return total == 0 or total - node.load.kv_blocks_used >= need

    def place(self, request, cluster, now):
        nodes = cluster.nodes
        p = None
        for node in nodes:
            if not flowkv.serves_prefill(node.current_role) or \
                    not cluster.is_usable(node, now):
                continue
            if p is None or node.load.queued_prefill_tokens < \
                    p.load.queued_prefill_tokens:
                p = node
        if p is None:
            raise flowkv.UnavailableError(
                "prefer_same_rack: no usable prefill node")
        same_rack = any_rack = None
        for node in nodes:
            if not flowkv.serves_decode(node.current_role) or \
                    not cluster.is_usable(node, now) or \
                    not self.has_room(node, request):
                continue
            if node.id // self.rack_size == p.id // self.rack_size:
                if same_rack is None or self.busy(node) < self.busy(same_rack):
                    same_rack = node
            elif any_rack is None or self.busy(node) < self.busy(any_rack):
                any_rack = node
        d = same_rack if same_rack is not None else any_rack
        if d is None:
            raise flowkv.ResourceExhaustedError(
                "prefer_same_rack: no usable decode node has room")
        return flowkv.Placement(prefill_node=p.id, decode_node=d.id)


@pytest.fixture(scope="module", autouse=True)
def policies():
    _policy_test_module.register()
    if "prefer_same_rack_py" not in flowkv.registered_schedulers():
        flowkv.register_scheduler("prefer_same_rack_py", PreferSameRack)


def test_python_policy_matches_the_cpp_policy_in_the_simulator():
    runs = {}
    for policy in ("prefer_same_rack_cxx", "prefer_same_rack_py"):
        runs[policy] = flowkv.sim.simulate(
            "p:a100x2,d:a100x2,p:a100x2,d:h100x2", "gov_report", rate=2.0,
            requests=150, seed=3, policy=policy,
            policy_params={"rack_size": 4}, keep_requests=True)
    cxx, py = runs["prefer_same_rack_cxx"], runs["prefer_same_rack_py"]
    assert cxx["policy"] == "prefer_same_rack_cxx"
    assert py["policy"] == "prefer_same_rack_py"
    cxx.pop("policy")
    py.pop("policy")
    assert cxx["completed"] == 150
    assert py == cxx


def test_builtin_policies_place_on_a_cluster_view():
    cluster = flowkv.ClusterView(smoothing=1.0)
    cluster.add_node(flowkv.NodeInfo(id=0, role=flowkv.NodeRole.PREFILL))
    cluster.add_node(flowkv.NodeInfo(id=1, role=flowkv.NodeRole.DECODE))
    cluster.report_load(1, flowkv.NodeLoad(kv_blocks_total=1000))
    assert [n.id for n in cluster.nodes] == [0, 1]
    for name in ("round_robin", "least_loaded", "kv_cost", "load_aware"):
        scheduler = flowkv.Scheduler.create(name)
        where = scheduler.place(flowkv.RequestInfo(id=1, input_tokens=800),
                                cluster)
        assert (where.prefill_node, where.decode_node) == (0, 1), name
        assert isinstance(scheduler.rebalance(cluster), flowkv.RebalancePlan)
    with pytest.raises(flowkv.InvalidArgumentError):
        cluster.add_node(flowkv.NodeInfo(id=0))
    with pytest.raises(flowkv.NotFoundError):
        cluster.report_load(9, flowkv.NodeLoad())


def test_python_policy_created_by_name_and_its_errors():
    with pytest.raises(flowkv.AlreadyExistsError):
        flowkv.register_scheduler("prefer_same_rack_py", PreferSameRack)
    scheduler = flowkv.Scheduler.create("prefer_same_rack_py",
                                        {"rack_size": 2})
    assert scheduler.name == "prefer_same_rack_py"
    empty = flowkv.ClusterView()
    with pytest.raises(flowkv.UnavailableError, match="no usable prefill"):
        scheduler.place(flowkv.RequestInfo(id=1, input_tokens=10), empty)

    class Broken:
        def __init__(self, params):
            pass

        def place(self, request, cluster, now):
            return "not a placement"

    flowkv.register_scheduler("broken_py", Broken)
    with pytest.raises(flowkv.InternalError, match="Placement"):
        flowkv.Scheduler.create("broken_py").place(
            flowkv.RequestInfo(id=1, input_tokens=10), empty)


def test_simulate_builtin_policy_and_bad_arguments():
    metrics = flowkv.sim.simulate("p:a100x1,d:a100x1", "synthetic:1000:64",
                                  requests=20, policy="load_aware")
    assert metrics["completed"] == 20 and metrics["rejected"] == 0
    assert metrics["ttft_ms"]["count"] == 20
    assert len(metrics["nodes"]) == 2
    with pytest.raises(flowkv.InvalidArgumentError):
        flowkv.sim.simulate("p:a100x0", "synthetic:10:10")
    with pytest.raises(flowkv.NotFoundError):
        flowkv.sim.simulate("p:nosuchgpu", "synthetic:10:10")
    with pytest.raises(flowkv.NotFoundError):
        flowkv.sim.simulate("p:a100x1,d:a100x1", "synthetic:10:10",
                            policy="nope")


def test_simulate_reports_prefix_hit_rates():
    # The second request repeats the first prompt 10 s later: its prefill
    # reuses 1023 of 1024 tokens, its decode node already holds all 1024.
    SimRequest = flowkv.sim.SimRequest
    reqs = [SimRequest(0, 0.0, 1024, 2, hash_ids=[1, 2]),
            SimRequest(1, 10000.0, 1024, 2, hash_ids=[1, 2])]
    assert reqs[1].hash_ids == [1, 2]
    m = flowkv.sim.simulate("p:a100x1,d:a100x1", reqs, policy="kv_aware",
                            prefix_cache=True, keep_requests=True)
    assert m["completed"] == 2
    assert m["prefix_hit_rate"] == pytest.approx(1023 / 2048)
    assert m["decode_prefix_hit_rate"] == pytest.approx(1024 / 2048)
    assert m["requests_detail"][1]["cached_tokens"] == 1023
    assert m["kv_event_batches"] > 0 and m["index_resyncs"] == 0
    off = flowkv.sim.simulate("p:a100x1,d:a100x1", reqs, policy="prefix_cost")
    assert off["prefix_hit_rate"] == 0
    with pytest.raises(flowkv.InvalidArgumentError):
        flowkv.sim.simulate("p:a100x1,d:a100x1", reqs, prefix_cache=True,
                            kv_event_delay_ms=-1)
