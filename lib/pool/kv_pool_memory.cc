// SPDX-License-Identifier: Apache-2.0
// KvPoolMemory's defaults (include/flowkv/kv_pool_memory.h): a pool that
// cannot be shared opens no peer. Calls nothing else.
#include "flowkv/kv_pool_memory.h"

namespace flowkv {

absl::StatusOr<std::unique_ptr<KvPeerPool>> KvPoolMemory::OpenPeer(
    std::string_view /*descriptor*/) {
  return absl::UnavailableError(
      "KvPoolMemory::OpenPeer: this pool cannot open peers' pools");
}

}  // namespace flowkv
