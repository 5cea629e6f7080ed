# SPDX-License-Identifier: Apache-2.0
"""The discrete-event P/D cluster simulator of libflowkv (flowkv/sim/).

    import flowkv
    metrics = flowkv.sim.simulate("p:a100x1,d:a100x1", "gov_report",
                                  rate=0.5, requests=200, policy="load_aware")
    print(metrics["ttft_ms"]["p90"], metrics["slo_attainment"])

simulate() takes tools/flowkv_sim.cc's flags as keyword arguments and runs
any registered policy, including one written in Python
(flowkv.register_scheduler). It runs with the GIL released.
"""

from ._flowkv import sim as _sim

SimRequest = _sim.SimRequest
make_workload = _sim.make_workload
node_types = _sim.node_types
parse_cluster_spec = _sim.parse_cluster_spec
simulate = _sim.simulate

__all__ = ["SimRequest", "make_workload", "node_types", "parse_cluster_spec",
           "simulate"]
