// SPDX-License-Identifier: Apache-2.0
// Bindings of the scheduler (flowkv/scheduler.h): the cluster model
// (NodeInfo, NodeLoad, LinkModel, ClusterView), Scheduler.create / place /
// rebalance for registered policies, and register_scheduler for policies
// written in Python, which the C++ simulator and any C++ router then create
// by name like the built-in ones.
//
// A Python policy is wrapped in PyScheduler: the registry keeps the factory
// (a PyRef) for the life of the process; each created Scheduler holds its
// Python object through a PyRef, so it may be destroyed on a thread
// without the GIL. Place / Rebalance take the GIL for the Python call (the
// simulator runs with the GIL released). Times are float seconds since the
// Unix epoch.

#include "flowkv/scheduler.h"

#include <memory>
#include <pybind11/stl.h>
#include <string>
#include <utility>

#include "bindings.h"

namespace flowkv::python {
namespace {

// Adds T(**fields): the keyword arguments set the attributes of the same
// names on a default T.
template <typename T, typename... Extra>
void KeywordInit(py::class_<T, Extra...>& cls) {
  cls.def(py::init([](const py::kwargs& kwargs) {
    T value{};
    py::object view = py::cast(&value, py::return_value_policy::reference);
    for (const auto& [key, item] : kwargs) {
      py::setattr(view, key, item);
    }
    return value;
  }));
}

absl::Time NowOr(const py::object& now) {
  return now.is_none() ? absl::Now() : SecondsToTime(ToDouble(now, "now"));
}

// The status of the Python exception a policy raised. Exceptions that are
// not flowkv.Error (bugs) are also shown through sys.unraisablehook.
absl::Status PolicyError(py::error_already_set& error, py::handle policy) {
  absl::Status status = StatusFromPythonError(error);
  if (status.code() == absl::StatusCode::kInternal) {
    ReportCallbackError(error, policy);
  }
  return status;
}

// A policy written in Python: an object with place(request, cluster, now)
// returning a Placement (or a (prefill_node, decode_node) tuple) or raising
// a flowkv.Error, and optionally rebalance(cluster, now) returning a
// RebalancePlan or None. Thread safety: externally synchronized.
class PyScheduler final : public Scheduler {
 public:
  PyScheduler(std::string name, PyRef policy)
      : name_(std::move(name)), policy_(std::move(policy)) {}

  std::string_view name() const override { return name_; }

  absl::StatusOr<Placement> Place(const RequestInfo& request,
                                  const ClusterView& cluster,
                                  absl::Time now) override {
    if (PythonFinalizing()) {
      return absl::UnavailableError("Python is shutting down");
    }
    py::gil_scoped_acquire gil;
    try {
      py::object result = policy_.get().attr("place")(
          request, py::cast(&cluster, py::return_value_policy::reference),
          TimeToSeconds(now));
      if (py::isinstance<Placement>(result)) return result.cast<Placement>();
      auto nodes = result.cast<std::pair<NodeId, NodeId>>();
      return Placement{.prefill_node = nodes.first,
                       .decode_node = nodes.second};
    } catch (py::error_already_set& e) {
      return PolicyError(e, policy_.get());
    } catch (const py::cast_error&) {
      return absl::InternalError(
          name_ +
          ": place() must return a flowkv.Placement or a "
          "(prefill_node, decode_node) tuple");
    }
  }

  RebalancePlan Rebalance(const ClusterView& cluster, absl::Time now) override {
    if (PythonFinalizing()) return {};
    py::gil_scoped_acquire gil;
    try {
      if (!py::hasattr(policy_.get(), "rebalance")) return {};
      py::object plan = policy_.get().attr("rebalance")(
          py::cast(&cluster, py::return_value_policy::reference),
          TimeToSeconds(now));
      if (plan.is_none()) return {};
      return plan.cast<RebalancePlan>();
    } catch (py::error_already_set& e) {
      ReportCallbackError(e, policy_.get());
    } catch (const py::cast_error&) {
    }
    return {};
  }

 private:
  const std::string name_;
  PyRef policy_;
};

void InitModel(py::module_& m) {
  py::enum_<NodeRole>(m, "NodeRole")
      .value("PREFILL", NodeRole::kPrefill)
      .value("DECODE", NodeRole::kDecode)
      .value("HYBRID", NodeRole::kHybrid);
  m.def("serves_prefill", &ServesPrefill, py::arg("role"));
  m.def("serves_decode", &ServesDecode, py::arg("role"));
  py::enum_<ScaleAdvice>(m, "ScaleAdvice")
      .value("NONE", ScaleAdvice::kNone)
      .value("SCALE_OUT", ScaleAdvice::kScaleOut)
      .value("SCALE_IN", ScaleAdvice::kScaleIn);

  py::class_<NodeCostModel> cost(m, "NodeCostModel",
                                 "prefill(n) = a + b*n + c*n^2 ms; "
                                 "decode_step(B, ctx) = t0 + k*ctx + e*B ms.");
  KeywordInit(cost);
  cost.def_readwrite("a", &NodeCostModel::a)
      .def_readwrite("b", &NodeCostModel::b)
      .def_readwrite("c", &NodeCostModel::c)
      .def_readwrite("t0", &NodeCostModel::t0)
      .def_readwrite("k", &NodeCostModel::k)
      .def_readwrite("e", &NodeCostModel::e)
      .def("prefill_ms", &NodeCostModel::PrefillMs, py::arg("tokens"))
      .def("decode_step_ms", &NodeCostModel::DecodeStepMs, py::arg("batch"),
           py::arg("context_tokens"));

  py::class_<NodeLoad> load(m, "NodeLoad", "What a node reports about itself.");
  KeywordInit(load);
  load.def_readwrite("queued_prefill_tokens", &NodeLoad::queued_prefill_tokens)
      .def_readwrite("queued_prefill_ms", &NodeLoad::queued_prefill_ms)
      .def_readwrite("running_decode", &NodeLoad::running_decode)
      .def_readwrite("waiting_decode", &NodeLoad::waiting_decode)
      .def_readwrite("decode_context_tokens", &NodeLoad::decode_context_tokens)
      .def_readwrite("kv_blocks_used", &NodeLoad::kv_blocks_used)
      .def_readwrite("kv_blocks_total", &NodeLoad::kv_blocks_total)
      .def_readwrite("utilization", &NodeLoad::utilization);

  py::class_<LinkModel> link(m, "LinkModel",
                             "transfer_ms = fixed_ms + calls * "
                             "call_overhead_ms + bytes / bandwidth.");
  KeywordInit(link);
  link.def_readwrite("bandwidth_bytes_per_s", &LinkModel::bandwidth_bytes_per_s)
      .def_readwrite("call_overhead_ms", &LinkModel::call_overhead_ms)
      .def_readwrite("fixed_ms", &LinkModel::fixed_ms)
      .def("transfer_ms", &LinkModel::TransferMs, py::arg("bytes"),
           py::arg("calls"));

  py::class_<NodeInfo> node(m, "NodeInfo", "A node as the scheduler sees it.");
  KeywordInit(node);
  node.def_property("id", FLOWKV_INT_FIELD(NodeInfo, id))
      .def_readwrite("role", &NodeInfo::role)
      .def_readwrite("current_role", &NodeInfo::current_role)
      .def_property("role_cycles_left",
                    FLOWKV_INT_FIELD(NodeInfo, role_cycles_left))
      .def_readwrite("cost", &NodeInfo::cost)
      .def_readwrite("kv_bytes_per_token", &NodeInfo::kv_bytes_per_token)
      .def_property("block_tokens", FLOWKV_INT_FIELD(NodeInfo, block_tokens))
      .def_readwrite("load", &NodeInfo::load)
      .def_property_readonly(
          "last_report",
          [](const NodeInfo& n) { return TimeToSeconds(n.last_report); })
      .def_readwrite("available", &NodeInfo::available);

  py::class_<RequestInfo> request(m, "RequestInfo");
  KeywordInit(request);
  request.def_property("id", FLOWKV_INT_FIELD(RequestInfo, id))
      .def_property("input_tokens", FLOWKV_INT_FIELD(RequestInfo, input_tokens))
      .def_property("expected_output_tokens",
                    FLOWKV_INT_FIELD(RequestInfo, expected_output_tokens));

  py::class_<Placement> placement(m, "Placement");
  KeywordInit(placement);
  placement
      .def_property("prefill_node", FLOWKV_INT_FIELD(Placement, prefill_node))
      .def_property("decode_node", FLOWKV_INT_FIELD(Placement, decode_node))
      .def_readwrite("predicted_ttft_ms", &Placement::predicted_ttft_ms)
      .def_readwrite("predicted_transfer_ms", &Placement::predicted_transfer_ms)
      .def_property_readonly("colocated", &Placement::colocated)
      .def("__repr__", [](const Placement& p) {
        return "Placement(prefill_node=" + std::to_string(p.prefill_node) +
               ", decode_node=" + std::to_string(p.decode_node) + ")";
      });

  py::class_<RoleDirective> directive(m, "RoleDirective");
  KeywordInit(directive);
  directive.def_property("node", FLOWKV_INT_FIELD(RoleDirective, node))
      .def_readwrite("role", &RoleDirective::role)
      .def_property("cycles", FLOWKV_INT_FIELD(RoleDirective, cycles));

  py::class_<RebalancePlan> plan(m, "RebalancePlan");
  KeywordInit(plan);
  plan.def_readwrite("directives", &RebalancePlan::directives)
      .def_readwrite("scale", &RebalancePlan::scale)
      .def_readwrite("reason", &RebalancePlan::reason)
      .def_readwrite("prefill_score", &RebalancePlan::prefill_score)
      .def_readwrite("decode_score", &RebalancePlan::decode_score);
}

void InitClusterView(py::module_& m) {
  py::class_<ClusterView>(
      m, "ClusterView",
      "The router's view of the cluster. Externally synchronized. A view "
      "passed to a Python policy's place/rebalance is the caller's: read it "
      "during the call only.")
      .def(py::init([](double smoothing, double stale_after,
                       const LinkModel& default_link) {
             ClusterView::Options o;
             o.smoothing = smoothing;
             o.stale_after = SecondsToDuration(stale_after, "stale_after");
             o.default_link = default_link;
             return ClusterView(o);
           }),
           py::kw_only(), py::arg("smoothing") = 0.5,
           py::arg("stale_after") = 5.0, py::arg("default_link") = LinkModel{})
      .def(
          "add_node",
          [](ClusterView& c, const NodeInfo& node) {
            ThrowIfError(c.AddNode(node));
          },
          py::arg("node"))
      .def(
          "remove_node",
          [](ClusterView& c, Int<NodeId, "id"> id) {
            ThrowIfError(c.RemoveNode(id));
          },
          py::arg("id"))
      .def(
          "report_load",
          [](ClusterView& c, Int<NodeId, "id"> id, const NodeLoad& load,
             const py::object& now) {
            ThrowIfError(c.ReportLoad(id, load, NowOr(now)));
          },
          py::arg("id"), py::arg("load"), py::arg("now") = py::none())
      .def(
          "set_role",
          [](ClusterView& c, Int<NodeId, "id"> id, NodeRole role,
             U32<"cycles"> cycles) {
            ThrowIfError(c.SetRole(id, role, cycles));
          },
          py::arg("id"), py::arg("role"), py::arg("cycles"))
      .def("tick_role_cycles", &ClusterView::TickRoleCycles)
      .def(
          "set_link",
          [](ClusterView& c, Int<NodeId, "src"> from, Int<NodeId, "dst"> to,
             const LinkModel& link) {
            if (!(link.bandwidth_bytes_per_s > 0)) {
              ThrowStatus(absl::InvalidArgumentError(
                  "set_link: bandwidth_bytes_per_s must be > 0"));
            }
            c.SetLink(from, to, link);
          },
          py::arg("src"), py::arg("dst"), py::arg("link"))
      .def(
          "link",
          [](const ClusterView& c, Int<NodeId, "src"> from,
             Int<NodeId, "dst"> to) { return c.Link(from, to); },
          py::arg("src"), py::arg("dst"))
      .def_property_readonly("nodes", &ClusterView::nodes)
      .def(
          "find",
          [](const ClusterView& c,
             Int<NodeId, "id"> id) -> std::optional<NodeInfo> {
            const NodeInfo* node = c.Find(id);
            if (node == nullptr) return std::nullopt;
            return *node;
          },
          py::arg("id"))
      .def(
          "is_usable",
          [](const ClusterView& c, const NodeInfo& node,
             const py::object& now) { return c.IsUsable(node, NowOr(now)); },
          py::arg("node"), py::arg("now") = py::none())
      .def("copy", [](const ClusterView& c) { return ClusterView(c); });
}

void InitSchedulerClass(py::module_& m) {
  py::class_<Scheduler, std::unique_ptr<Scheduler>>(
      m, "Scheduler",
      "A placement policy created by name (built-in or registered).")
      .def_static(
          "create",
          [](const std::string& name,
             const std::map<std::string, double>& params) {
            SchedulerOptions o;
            o.params = params;
            absl::StatusOr<std::unique_ptr<Scheduler>> created = [&] {
              py::gil_scoped_release release;
              return CreateScheduler(name, o);
            }();
            return Unwrap(std::move(created));
          },
          py::arg("name"), py::arg("params") = std::map<std::string, double>{},
          "NotFoundError (listing the names) for an unknown policy; "
          "InvalidArgumentError for an unknown param.")
      .def_property_readonly(
          "name", [](const Scheduler& s) { return std::string(s.name()); })
      .def(
          "place",
          [](Scheduler& s, const RequestInfo& request,
             const ClusterView& cluster, const py::object& now) {
            return Unwrap(s.Place(request, cluster, NowOr(now)));
          },
          py::arg("request"), py::arg("cluster"), py::arg("now") = py::none(),
          "Chooses a P and a D node; UnavailableError / "
          "ResourceExhaustedError when it cannot.")
      .def(
          "rebalance",
          [](Scheduler& s, const ClusterView& cluster, const py::object& now) {
            return s.Rebalance(cluster, NowOr(now));
          },
          py::arg("cluster"), py::arg("now") = py::none());

  m.def("registered_schedulers", &RegisteredSchedulers);
  m.def(
      "register_scheduler",
      [](const std::string& name, py::object factory) {
        if (!PyCallable_Check(factory.ptr())) {
          ThrowStatus(absl::InvalidArgumentError(
              "register_scheduler: factory must be callable(params: dict)"));
        }
        PyRef ref(factory);
        ThrowIfError(RegisterScheduler(
            name,
            [ref, name](const SchedulerOptions& options)
                -> absl::StatusOr<std::unique_ptr<Scheduler>> {
              if (PythonFinalizing()) {
                return absl::UnavailableError("Python is shutting down");
              }
              py::gil_scoped_acquire gil;
              try {
                py::dict params;
                for (const auto& [key, value] : options.params) {
                  params[py::str(key)] = value;
                }
                py::object policy = ref.get()(params);
                if (policy.is_none()) {
                  return absl::InternalError(name +
                                             ": the factory returned None");
                }
                return std::make_unique<PyScheduler>(name, PyRef(policy));
              } catch (py::error_already_set& e) {
                return PolicyError(e, ref.get());
              }
            }));
      },
      py::arg("name"), py::arg("factory"),
      "Registers a policy written in Python under `name` for good: "
      "factory(params: dict) returns an object with place(request, cluster, "
      "now) and optionally rebalance(cluster, now). C++ code (the simulator, "
      "Scheduler.create) then creates it by name. AlreadyExistsError when "
      "the name is taken.");
}

}  // namespace

void InitScheduler(py::module_& m) {
  InitModel(m);
  InitClusterView(m);
  InitSchedulerClass(m);
}

}  // namespace flowkv::python
