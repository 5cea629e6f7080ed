// SPDX-License-Identifier: Apache-2.0
// NodeLinks: the router's side of the node processes — spawning them (with
// process.h), the listening socket on 127.0.0.1, each node's control socket
// and its frames. It knows nothing of requests: it delivers each node's
// control messages and says when a node's socket closed or sent garbage
// (the node is gone). The router (router.h) decides what that means.
//
// Thread safety: externally synchronized (the router's loop thread).

#ifndef FLOWKV_TOOLS_CLUSTER_NODE_LINKS_H_
#define FLOWKV_TOOLS_CLUSTER_NODE_LINKS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <sys/types.h>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tools/cluster/control.h"
#include "tools/cluster/wire.h"

namespace flowkv::cluster {

class NodeLinks {
 public:
  using MessageFn = std::function<void(uint32_t node, const ControlMessage&)>;
  using DownFn = std::function<void(uint32_t node, const std::string& why)>;

  NodeLinks() = default;
  // Closes every socket (the processes are stopped by StopAll).
  ~NodeLinks();
  NodeLinks(const NodeLinks&) = delete;
  NodeLinks& operator=(const NodeLinks&) = delete;

  // Listens on 127.0.0.1, starts node i as this executable with
  // node_args[i] plus --router_port, and waits until each has said kHello
  // (at most `timeout`). addresses[i] is node i's engine address. Messages
  // that came behind a hello are delivered by the first Poll.
  // Unavailable (cannot listen), Internal (spawn, or a hello that is
  // malformed, names an unknown node or a node twice), DeadlineExceeded.
  absl::Status Start(const std::vector<std::vector<std::string>>& node_args,
                     absl::Duration timeout,
                     std::vector<std::string>* addresses);

  size_t size() const { return links_.size(); }
  bool alive(uint32_t node) const {
    return node < links_.size() && links_[node].fd >= 0;
  }
  pid_t pid(uint32_t node) const { return links_.at(node).pid; }

  // Sends `m` to a live node (m.node is set to `node`). False when the node
  // is not alive or the write failed (the link is then closed; the caller
  // treats the node as gone).
  bool Send(uint32_t node, ControlMessage m);
  // Closes the node's socket: nothing more is read from or sent to it.
  void Close(uint32_t node);

  // Waits up to timeout_ms for the live nodes' messages, then calls
  // on_message for each, in order per node; a node whose socket reached EOF
  // or sent a malformed frame or message is closed and reported to
  // on_down (after the messages that came before). The callbacks may Send
  // and Close. Unavailable when no node is alive.
  absl::Status Poll(int timeout_ms, const MessageFn& on_message,
                    const DownFn& on_down);

  // Sends kShutdown to the live nodes and waits up to `timeout` for every
  // process to exit, then SIGKILLs and reaps the rest.
  void StopAll(absl::Duration timeout);

 private:
  struct Link {
    pid_t pid = 0;
    int fd = -1;
    std::unique_ptr<FrameReader> reader;
    std::vector<std::string> early_frames;
  };
  int listen_fd_ = -1;
  std::vector<Link> links_;
};

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_NODE_LINKS_H_
