// Owned file descriptors and network namespaces: entering a namespace on the calling thread
// only long enough to create a socket there (sockets keep the namespace they were made in).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

#include "result.hpp"

namespace imds {

// An owned file descriptor, closed on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();

  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

// "what failed: why" for an errno value, e.g. "setns /run/netns/x: Operation not permitted".
std::string errno_message(const std::string& what, int err);

// Creates sockets inside other network namespaces from the calling thread. Remembers the
// thread's own namespace once, and always switches back to it before returning.
class NetnsSocketFactory {
 public:
  // Throws std::system_error when the thread's own namespace cannot be opened (no /proc).
  NetnsSocketFactory();

  // Opens a namespace file (e.g. /run/netns/NAME, /proc/PID/ns/net) and checks that it can be
  // entered (and left again). Errors are values: "cannot enter network namespace ...: EPERM".
  // Opens `path` without blocking (a FIFO planted there cannot stall the worker) and checks
  // that it is a network namespace and, when `expected_inode` is not 0, the very namespace
  // discovery saw: a re-created /run/netns/X or a reused pid is "namespace changed", and
  // nothing is ever sent from it.
  [[nodiscard]] Result<UniqueFd> open_namespace(const std::string& path,
                                                std::uint64_t expected_inode = 0) const;

  // socket(domain, type | SOCK_CLOEXEC, protocol) inside `netns` (an fd from open_namespace),
  // or in the thread's own namespace when `netns` is -1. Returns the fd or -errno.
  [[nodiscard]] int socket_in(int netns, int domain, int type, int protocol) const;

  // A netlink socket of `protocol` (NETLINK_ROUTE, NETLINK_SOCK_DIAG) inside `netns` whose
  // reads wait at most `timeout`: an invalid UniqueFd when it cannot be made.
  [[nodiscard]] UniqueFd netlink_in(int netns, int protocol, std::chrono::milliseconds timeout) const;

 private:
  UniqueFd own_;
};

}  // namespace imds
