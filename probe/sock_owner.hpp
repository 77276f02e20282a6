// Who owns a TCP connection, best effort: the socket's inode from NETLINK_SOCK_DIAG (asked in
// the connection's network namespace, by its exact addresses and ports), then the process that
// holds a descriptor of that socket (/proc/PID/fd). A connection that is already closed, or a
// process that is gone or hidden, gives nothing: never a guess.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "callers.hpp"
#include "netns.hpp"
#include "packet_ttl.hpp"

namespace imds {

// The inode of the TCP socket with this local and remote end in namespace `netns` (an fd from
// NetnsSocketFactory::open_namespace, or -1 for the calling thread's own): nothing when there
// is none (closed, TIME_WAIT) or the query fails.
std::optional<std::uint64_t> tcp_socket_inode(const NetnsSocketFactory& factory, int netns,
                                              const SocketName& local, const SocketName& remote);

// The processes holding these socket inodes, by one bounded scan of /proc/*/fd (at most
// kMaxProcesses processes and kMaxDescriptors descriptors in all). `proc_root` for tests.
inline constexpr std::size_t kMaxProcesses = 8192;
inline constexpr std::size_t kMaxDescriptors = 262144;
// `first_pid` is looked at first (the caller itself, whose own connections are the most
// common): when it holds them all, nothing else is read.
std::map<std::uint64_t, ProcessInfo> socket_owners(const std::set<std::uint64_t>& inodes,
                                                   const std::string& proc_root = "/proc",
                                                   int first_pid = 0);

// The systemd unit (".service") or scope (".scope") a cgroup v2 path ends in, e.g.
// "0::/system.slice/cron.service" -> "cron.service"; nothing for other paths. Reads the
// text of /proc/PID/cgroup (bounded by the caller).
std::optional<std::string> unit_of_cgroup(std::string_view cgroup_text);

}  // namespace imds
