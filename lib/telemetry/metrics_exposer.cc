// SPDX-License-Identifier: Apache-2.0
// StartMetricsExposer and ExposerPort (include/flowkv/telemetry/
// prometheus.h): a prometheus-cpp Exposer on a given address, its
// exceptions (civetweb cannot bind) turned into absl::Status here, the one
// place this component catches them.

#include <exception>

#include "absl/strings/str_format.h"
#include "flowkv/telemetry/prometheus.h"

namespace flowkv::telemetry {

absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartMetricsExposer(
    const std::string& address,
    const std::vector<std::shared_ptr<prometheus::Collectable>>& collectables) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size() ||
      address.find_first_not_of("0123456789", colon + 1) != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "StartMetricsExposer: address '%s' is not host:port", address));
  }
  for (const auto& collectable : collectables) {
    if (collectable == nullptr) {
      return absl::InvalidArgumentError(
          "StartMetricsExposer: null collectable");
    }
  }
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(address, 2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrFormat(
        "StartMetricsExposer: cannot serve on %s: %s", address, e.what()));
  }
  for (const auto& collectable : collectables) {
    exposer->RegisterCollectable(collectable);
  }
  return exposer;
}

int ExposerPort(const prometheus::Exposer& exposer) {
  const std::vector<int> ports = exposer.GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

}  // namespace flowkv::telemetry
