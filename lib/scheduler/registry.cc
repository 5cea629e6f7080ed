// SPDX-License-Identifier: Apache-2.0
// The policy registry, and the parts of Scheduler shared by all policies.

#include <map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "flowkv/scheduler.h"
#include "lib/common/tsan_lock.h"
#include "lib/scheduler/policy_util.h"

namespace flowkv {
namespace {

// Name -> factory. Built on first use (a function-local static, so it does
// not depend on static initialization order) with the built-in policies
// already in it; never destroyed, so factories stay callable during exit.
// Thread safety: thread-safe.
class Registry {
 public:
  static Registry& Get() {
    static Registry* const registry = new Registry();
    return *registry;
  }

  absl::Status Add(const std::string& name, SchedulerFactory factory) {
    if (name.empty()) {
      return absl::InvalidArgumentError(
          "RegisterScheduler: the name must not be empty");
    }
    if (!factory) {
      return absl::InvalidArgumentError(
          absl::StrFormat("RegisterScheduler: null factory for '%s'", name));
    }
    internal::TsanMutexLock lock(&mu_);
    auto [it, inserted] = factories_.emplace(name, std::move(factory));
    if (!inserted) {
      return absl::AlreadyExistsError(absl::StrFormat(
          "RegisterScheduler: a policy named '%s' is already registered",
          name));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Scheduler>> Create(
      const std::string& name, const SchedulerOptions& options) {
    SchedulerFactory factory;
    {
      internal::TsanMutexLock lock(&mu_);
      auto it = factories_.find(name);
      if (it == factories_.end()) {
        return absl::NotFoundError(absl::StrFormat(
            "CreateScheduler: no policy named '%s'; registered: %s", name,
            absl::StrJoin(NamesLocked(), ", ")));
      }
      factory = it->second;
    }
    // Outside the lock: a factory may itself use the registry.
    absl::StatusOr<std::unique_ptr<Scheduler>> scheduler = factory(options);
    if (scheduler.ok() && *scheduler == nullptr) {
      return absl::InternalError(absl::StrFormat(
          "CreateScheduler: the factory of '%s' returned null", name));
    }
    return scheduler;
  }

  std::vector<std::string> Names() {
    internal::TsanMutexLock lock(&mu_);
    return NamesLocked();
  }

 private:
  Registry() {
    factories_.emplace("round_robin", internal::MakeRoundRobin);
    factories_.emplace("least_loaded", internal::MakeLeastLoaded);
    factories_.emplace("kv_cost", internal::MakeKvCost);
    factories_.emplace("load_aware", internal::MakeLoadAware);
    factories_.emplace("kv_aware", internal::MakeKvAware);
    factories_.emplace("prefix_cost", internal::MakePrefixCost);
  }

  std::vector<std::string> NamesLocked() const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<std::string> names;
    names.reserve(factories_.size());
    for (const auto& entry : factories_) names.push_back(entry.first);
    return names;  // std::map: already sorted
  }

  absl::Mutex mu_;
  std::map<std::string, SchedulerFactory> factories_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

RebalancePlan Scheduler::Rebalance(const ClusterView& /*cluster*/,
                                   absl::Time /*now*/) {
  return {};
}

absl::Status RegisterScheduler(const std::string& name,
                               SchedulerFactory factory) {
  return Registry::Get().Add(name, std::move(factory));
}

absl::StatusOr<std::unique_ptr<Scheduler>> CreateScheduler(
    const std::string& name, const SchedulerOptions& options) {
  return Registry::Get().Create(name, options);
}

std::vector<std::string> RegisteredSchedulers() {
  return Registry::Get().Names();
}

}  // namespace flowkv
