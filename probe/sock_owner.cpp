// Who owns a TCP connection; see sock_owner.hpp.
#include "sock_owner.hpp"

#include <dirent.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <memory>

#include "sys.hpp"
#include "words.hpp"

namespace imds {

namespace {

constexpr std::size_t kMaxCommBytes = 64;
constexpr std::size_t kMaxCgroupText = 4096;

std::optional<std::uint64_t> number(std::string_view s) {
  std::uint64_t v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

void fill(std::array<std::uint32_t, 4>& out, const SocketName& end) {
  std::memcpy(out.data(), end.address.data(), end.family == Family::v4 ? 4 : 16);
}

}  // namespace

std::optional<std::uint64_t> tcp_socket_inode(const NetnsSocketFactory& factory, int netns,
                                              const SocketName& local, const SocketName& remote) {
  if (local.family != remote.family) return std::nullopt;
  // The kernel answers at once: never wait long.
  const UniqueFd fd = factory.netlink_in(netns, NETLINK_SOCK_DIAG, std::chrono::milliseconds(200));
  if (!fd) return std::nullopt;
  struct {
    nlmsghdr header;
    inet_diag_req_v2 request;
  } message{};
  message.header.nlmsg_len = sizeof message;
  message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  message.header.nlmsg_flags = NLM_F_REQUEST;  // one exact socket, no dump
  message.header.nlmsg_seq = 1;
  message.request.sdiag_family = local.family == Family::v4 ? AF_INET : AF_INET6;
  message.request.sdiag_protocol = IPPROTO_TCP;
  message.request.idiag_states = ~0U;
  message.request.id.idiag_sport = htons(local.port);
  message.request.id.idiag_dport = htons(remote.port);
  std::array<std::uint32_t, 4> src{};
  std::array<std::uint32_t, 4> dst{};
  fill(src, local);
  fill(dst, remote);
  std::memcpy(message.request.id.idiag_src, src.data(), sizeof src);
  std::memcpy(message.request.id.idiag_dst, dst.data(), sizeof dst);
  message.request.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  message.request.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  if (::send(fd.get(), &message, sizeof message, 0) < 0) return std::nullopt;
  std::array<std::uint8_t, 8192> buffer{};
  const ssize_t n = ::recv(fd.get(), buffer.data(), buffer.size(), 0);
  if (n < static_cast<ssize_t>(NLMSG_LENGTH(sizeof(inet_diag_msg)))) return std::nullopt;
  nlmsghdr header{};
  std::memcpy(&header, buffer.data(), sizeof header);
  if (header.nlmsg_type != SOCK_DIAG_BY_FAMILY || header.nlmsg_len > static_cast<std::uint32_t>(n) ||
      header.nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg))) {
    return std::nullopt;  // NLMSG_ERROR: no such socket
  }
  inet_diag_msg found{};
  std::memcpy(&found, buffer.data() + NLMSG_HDRLEN, sizeof found);
  if (found.idiag_inode == 0) return std::nullopt;  // TIME_WAIT and the like: no owner
  return found.idiag_inode;
}

std::optional<std::string> unit_of_cgroup(std::string_view text) {
  // cgroup v2: the line "0::/path"; v1: the "name=systemd" line.
  for (std::size_t at = 0; at < text.size();) {
    const auto end = std::min(text.find('\n', at), text.size());
    std::string_view line = text.substr(at, end - at);
    at = end + 1;
    const auto c1 = line.find(':');
    const auto c2 = c1 == std::string_view::npos ? c1 : line.find(':', c1 + 1);
    if (c2 == std::string_view::npos) continue;
    const std::string_view controllers = line.substr(c1 + 1, c2 - c1 - 1);
    if (!controllers.empty() && controllers != "name=systemd") continue;
    std::string_view path = line.substr(c2 + 1);
    while (!path.empty()) {
      const auto slash = path.rfind('/');
      const std::string_view last = path.substr(slash == std::string_view::npos ? 0 : slash + 1);
      if ((last.ends_with(".service") || last.ends_with(".scope")) && last.size() <= 128) {
        return printable(last, 128);
      }
      if (slash == std::string_view::npos) break;
      path = path.substr(0, slash);
    }
  }
  return std::nullopt;
}

namespace {

// The sockets among `inodes` that process `pid` holds, added to `out`; false when the
// descriptor budget ran out.
bool scan_process(const std::string& proc_root, std::uint64_t pid,
                  const std::set<std::uint64_t>& inodes, std::size_t& descriptors,
                  std::map<std::uint64_t, ProcessInfo>& out) {
  const std::string base = proc_root + "/" + std::to_string(pid);
  std::unique_ptr<DIR, int (*)(DIR*)> fds(::opendir((base + "/fd").c_str()), ::closedir);
  if (!fds) return true;  // gone, or not ours to see
  while (const dirent* f = ::readdir(fds.get())) {
    if (++descriptors > kMaxDescriptors) return false;
    if (f->d_name[0] == '.') continue;
    std::array<char, 64> link{};
    const std::string path = base + "/fd/" + f->d_name;
    const ssize_t n = ::readlink(path.c_str(), link.data(), link.size() - 1);
    if (n <= 0) continue;
    const std::string_view target(link.data(), static_cast<std::size_t>(n));
    if (!target.starts_with("socket:[") || !target.ends_with("]")) continue;
    const auto inode = number(target.substr(8, target.size() - 9));
    if (!inode || !inodes.contains(*inode) || out.contains(*inode)) continue;
    ProcessInfo info;
    info.pid = static_cast<int>(pid);
    if (const auto comm = sys::read_capped(base + "/comm", kMaxCommBytes)) {
      std::string_view c = *comm;
      while (!c.empty() && c.back() == '\n') c.remove_suffix(1);
      info.comm = printable(c, 16);
    }
    if (const auto cgroup = sys::read_capped(base + "/cgroup", kMaxCgroupText)) {
      info.unit = unit_of_cgroup(*cgroup);
    }
    out.emplace(*inode, std::move(info));
    if (out.size() == inodes.size()) return true;
  }
  return true;
}

}  // namespace

std::map<std::uint64_t, ProcessInfo> socket_owners(const std::set<std::uint64_t>& inodes,
                                                   const std::string& proc_root, int first_pid) {
  std::map<std::uint64_t, ProcessInfo> out;
  if (inodes.empty()) return out;
  std::size_t descriptors = 0;
  if (first_pid > 0) {
    // Usually the caller's own connection (imds-agent's probes): no scan of everything.
    scan_process(proc_root, static_cast<std::uint64_t>(first_pid), inodes, descriptors, out);
    if (out.size() == inodes.size()) return out;
  }
  std::unique_ptr<DIR, int (*)(DIR*)> proc(::opendir(proc_root.c_str()), ::closedir);
  if (!proc) return out;
  std::size_t processes = 0;
  while (const dirent* p = ::readdir(proc.get())) {
    const auto pid = number(p->d_name);
    if (!pid || *pid == 0 || *pid > 0x3fffffff || *pid == static_cast<std::uint64_t>(first_pid)) {
      continue;
    }
    if (++processes > kMaxProcesses) break;
    if (!scan_process(proc_root, *pid, inodes, descriptors, out)) break;
    if (out.size() == inodes.size()) break;
  }
  return out;
}

}  // namespace imds
