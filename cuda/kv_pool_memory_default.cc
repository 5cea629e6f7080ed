// KvPoolMemory::OpenPeer's default (flowkv/kv_pool_memory.h), for trees in
// which the KvTransfer side that defines it in libflowkv is not present yet:
// cuda/CMakeLists.txt compiles this file only when no file under lib/
// defines KvPoolMemory::OpenPeer. Remove it once libflowkv always does.

#include "absl/status/status.h"
#include "flowkv/kv_pool_memory.h"

namespace flowkv {

absl::StatusOr<std::unique_ptr<KvPeerPool>> KvPoolMemory::OpenPeer(
    std::string_view /*descriptor*/) {
  return absl::UnavailableError("this pool memory cannot open peer pools");
}

}  // namespace flowkv
