// Namespace switching for socket creation; see netns.hpp.
#include "netns.hpp"

#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <system_error>

namespace imds {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) reset(other.release());
  return *this;
}

UniqueFd::~UniqueFd() { reset(); }

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

std::string errno_message(const std::string& what, int err) {
  return what + ": " + std::strerror(err);
}

namespace {

// Leaving a foreign namespace must never fail silently: the thread would go on sending the
// host's requests from a container. There is no sane recovery, so stop the process.
void return_or_die(int own) {
  if (::setns(own, CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "imds: cannot return to the original network namespace: %s\n",
                 std::strerror(errno));
    std::abort();
  }
}

}  // namespace

NetnsSocketFactory::NetnsSocketFactory()
    : own_(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) {
  if (!own_) {
    throw std::system_error(errno, std::generic_category(),
                            "open /proc/thread-self/ns/net (is /proc mounted?)");
  }
}

Result<UniqueFd> NetnsSocketFactory::open_namespace(const std::string& path,
                                                    std::uint64_t expected_inode) const {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd) return Error{errno_message("cannot open network namespace " + path, errno)};
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return Error{errno_message("cannot stat network namespace " + path, errno)};
  }
  if (!S_ISREG(st.st_mode) || ::ioctl(fd.get(), NS_GET_NSTYPE) != CLONE_NEWNET) {
    return Error{path + " is not a network namespace (not an nsfs file of type net)"};
  }
  if (expected_inode != 0 && static_cast<std::uint64_t>(st.st_ino) != expected_inode) {
    return Error{"namespace changed: " + path + " now holds namespace " +
                 std::to_string(st.st_ino) + ", not " + std::to_string(expected_inode) +
                 " that discovery found; not probed under its old name"};
  }
  if (::setns(fd.get(), CLONE_NEWNET) != 0) {
    return Error{errno_message("cannot enter network namespace " + path, errno)};
  }
  return_or_die(own_.get());
  return fd;
}

UniqueFd NetnsSocketFactory::netlink_in(int netns, int protocol,
                                        std::chrono::milliseconds timeout) const {
  const int raw = socket_in(netns, AF_NETLINK, SOCK_RAW, protocol);
  if (raw < 0) return {};
  UniqueFd fd(raw);
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(timeout).count();
  const timeval tv{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

int NetnsSocketFactory::socket_in(int netns, int domain, int type, int protocol) const {
  if (netns < 0) {
    const int fd = ::socket(domain, type | SOCK_CLOEXEC, protocol);
    return fd >= 0 ? fd : -errno;
  }
  if (::setns(netns, CLONE_NEWNET) != 0) return -errno;
  const int fd = ::socket(domain, type | SOCK_CLOEXEC, protocol);
  const int err = errno;
  return_or_die(own_.get());
  return fd >= 0 ? fd : -err;
}

}  // namespace imds
