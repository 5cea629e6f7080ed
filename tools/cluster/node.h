// SPDX-License-Identifier: Apache-2.0
// A flowkv-cluster node process: one model, one KV pool, one TransferEngine
// and KvTransfer, and a control connection to the router. It serves what the
// router assigns — prefills (streaming each layer's K/V to the decode node as
// it is computed, or keeping it for itself when colocated) and decodes (a
// continuous batch, one token per request per step) — and reports its load
// several times a second. Role changes are live: a node told to change role
// finishes the work it has, tells the router it is drained, and meanwhile
// takes whatever new work the router gives it.
//
// The node's loop is single-threaded: control messages, KvTransfer results,
// sends completing, one prefill, one decode step, a load report; it waits
// (on the control socket or the engine's notifications) only when idle.
// The node exits when the router says kShutdown or its control socket
// closes (the router is gone); it also dies with the router (PDEATHSIG).

#ifndef FLOWKV_TOOLS_CLUSTER_NODE_H_
#define FLOWKV_TOOLS_CLUSTER_NODE_H_

#include <cstdint>
#include <string>

#include "flowkv/scheduler.h"
#include "tools/cluster/model_runner.h"

namespace flowkv::cluster {

struct NodeOptions {
  uint32_t id = 0;
  NodeRole role = NodeRole::kHybrid;
  // The router's control port on 127.0.0.1.
  uint16_t router_port = 0;
  ModelSpec model;
  // KV blocks in this node's pool.
  uint32_t num_blocks = 1024;
  // Load report period, ms. Default: 100.
  double report_ms = 100;
  // Pin the process to this CPU core (-1: no pinning).
  int pin_core = -1;
  // --etcd: register this node (role, engine address) under
  // /flowkv/<cluster_name> in the etcd at this endpoint, with a lease of
  // etcd_ttl_ms kept alive while the node runs ("": no etcd).
  std::string etcd_endpoint;
  std::string cluster_name;
  double etcd_ttl_ms = 3000;
};

// Runs the node until shutdown; returns the process exit code (0: clean).
int RunNode(const NodeOptions& options);

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_NODE_H_
