// SPDX-License-Identifier: Apache-2.0
// The receiver process of write_latency_benchmark: serves the sender's
// commands over the control socket, running a TransferEngine (flowkv mode)
// or plain UCX (raw mode) that answers each arriving seq with its arrival
// time.
#ifndef FLOWKV_BENCHMARKS_WRITE_LATENCY_RECEIVER_H_
#define FLOWKV_BENCHMARKS_WRITE_LATENCY_RECEIVER_H_

namespace flowkv::write_latency {

// The receiver's main loop on control socket `fd`: serves requests until
// kExit (returns 0) or a closed or failed socket (returns 1).
int RunReceiver(int fd);

}  // namespace flowkv::write_latency

#endif  // FLOWKV_BENCHMARKS_WRITE_LATENCY_RECEIVER_H_
