// SPDX-License-Identifier: Apache-2.0
// A router outside the project: the scheduler alone (flowkv::scheduler),
// linked without UCX or libcrypto.
#include <cstdio>

#include "flowkv/scheduler.h"

int main() {
  auto scheduler = flowkv::CreateScheduler("load_aware", {});
  if (!scheduler.ok()) return 1;
  std::printf("policy=load_aware\n");
  return 0;
}
