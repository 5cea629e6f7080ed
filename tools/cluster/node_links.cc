// SPDX-License-Identifier: Apache-2.0
// The router's links to its node processes (see node_links.h).

#include "tools/cluster/node_links.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "tools/cluster/process.h"

namespace flowkv::cluster {

NodeLinks::~NodeLinks() {
  if (listen_fd_ >= 0) close(listen_fd_);
  for (Link& l : links_) {
    if (l.fd >= 0) close(l.fd);
  }
}

absl::Status NodeLinks::Start(
    const std::vector<std::vector<std::string>>& node_args,
    absl::Duration timeout, std::vector<std::string>* addresses) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (listen_fd_ < 0 ||
      bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listen_fd_, 64) != 0 ||
      getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return absl::UnavailableError("router: cannot listen on 127.0.0.1");
  }
  const size_t total = node_args.size();
  links_.resize(total);
  addresses->assign(total, "");
  for (size_t i = 0; i < total; ++i) {
    std::vector<std::string> args = node_args[i];
    args.push_back(absl::StrCat("--router_port=", ntohs(addr.sin_port)));
    absl::StatusOr<pid_t> pid = SpawnSelf(args);
    if (!pid.ok()) return pid.status();
    links_[i].pid = *pid;
  }
  // Accept the control connections; each node says hello first.
  const absl::Time deadline = absl::Now() + timeout;
  std::vector<std::pair<int, std::unique_ptr<FrameReader>>> unnamed;
  size_t joined = 0;
  while (joined < total) {
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("router: ", joined, " of ", total,
                       " nodes joined within ", absl::FormatDuration(timeout)));
    }
    std::vector<pollfd> fds = {{listen_fd_, POLLIN, 0}};
    for (auto& [fd, reader] : unnamed) fds.push_back({fd, POLLIN, 0});
    poll(fds.data(), fds.size(), 100);
    if (fds[0].revents & POLLIN) {
      const int fd = accept(listen_fd_, nullptr, nullptr);
      if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        unnamed.emplace_back(fd, std::make_unique<FrameReader>(fd));
      }
    }
    for (auto it = unnamed.begin(); it != unnamed.end();) {
      std::vector<std::string> frames;
      absl::Status s = it->second->ReadAvailable(&frames);
      if (frames.empty()) {
        if (!s.ok()) {
          close(it->first);
          it = unnamed.erase(it);
        } else {
          ++it;
        }
        continue;
      }
      absl::StatusOr<ControlMessage> hello = DecodeMessage(frames[0]);
      if (!hello.ok() || hello->type != MessageType::kHello ||
          hello->node >= total || links_[hello->node].fd >= 0) {
        close(it->first);
        return absl::InternalError(
            "router: a node's hello was malformed or named a wrong node");
      }
      Link& link = links_[hello->node];
      link.fd = it->first;
      link.reader = std::move(it->second);
      link.early_frames.assign(frames.begin() + 1, frames.end());
      (*addresses)[hello->node] = hello->text;
      it = unnamed.erase(it);
      ++joined;
    }
  }
  return absl::OkStatus();
}

bool NodeLinks::Send(uint32_t node, ControlMessage m) {
  if (!alive(node)) return false;
  m.node = node;
  if (!WriteFrame(links_[node].fd, EncodeMessage(m)).ok()) {
    Close(node);
    return false;
  }
  return true;
}

void NodeLinks::Close(uint32_t node) {
  if (!alive(node)) return;
  close(links_[node].fd);
  links_[node].fd = -1;
}

absl::Status NodeLinks::Poll(int timeout_ms, const MessageFn& on_message,
                             const DownFn& on_down) {
  std::vector<pollfd> fds;
  bool early = false;
  for (const Link& l : links_) {
    if (l.fd >= 0) fds.push_back({l.fd, POLLIN, 0});
    early = early || (l.fd >= 0 && !l.early_frames.empty());
  }
  if (fds.empty()) return absl::UnavailableError("router: every node died");
  poll(fds.data(), fds.size(), early ? 0 : std::max(0, timeout_ms));
  for (uint32_t node = 0; node < links_.size(); ++node) {
    if (!alive(node)) continue;
    Link& link = links_[node];
    std::vector<std::string> frames = std::move(link.early_frames);
    link.early_frames.clear();
    absl::Status s = link.reader->ReadAvailable(&frames);
    for (const std::string& f : frames) {
      absl::StatusOr<ControlMessage> m = DecodeMessage(f);
      if (!m.ok()) {
        s = m.status();
        break;
      }
      on_message(node, *m);
      if (!alive(node)) break;
    }
    if (!s.ok() && alive(node)) {
      Close(node);
      on_down(node, s.ToString());
    }
  }
  return absl::OkStatus();
}

void NodeLinks::StopAll(absl::Duration timeout) {
  std::vector<pid_t> pids;
  for (uint32_t node = 0; node < links_.size(); ++node) {
    Send(node, {.type = MessageType::kShutdown});
    if (links_[node].pid > 0) pids.push_back(links_[node].pid);
  }
  StopChildren(pids, timeout);
}

}  // namespace flowkv::cluster
