// SPDX-License-Identifier: Apache-2.0
// Node processes: started by the router from its own executable
// (/proc/self/exe --node ...), each dying with the router (PR_SET_PDEATHSIG),
// and stopped when the router exits — no orphans.
//
// Thread safety: externally synchronized.

#ifndef FLOWKV_TOOLS_CLUSTER_PROCESS_H_
#define FLOWKV_TOOLS_CLUSTER_PROCESS_H_

#include <cstdint>
#include <string>
#include <sys/types.h>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace flowkv::cluster {

// Starts this executable with `args` (argv[1...]). The child gets SIGKILL
// when the parent dies. Internal when fork or exec fails.
absl::StatusOr<pid_t> SpawnSelf(const std::vector<std::string>& args);

// The i-th CPU core this process may run on, cyclically (-1 when unknown):
// where node i is pinned with --pin_cores.
int PinCore(uint32_t i);

// Waits up to `timeout` for each child to exit, then SIGKILLs and reaps the
// ones left.
void StopChildren(const std::vector<pid_t>& pids, absl::Duration timeout);

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_PROCESS_H_
