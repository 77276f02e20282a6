// Targets: which network namespaces the probe runs from. The host namespace, explicit
// ones (--netns, --pid, --container), every container namespace found on the machine, and
// a temporary simulated bridge container (RAII, removed without a trace).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model.hpp"
#include "result.hpp"

namespace imds {

inline const std::vector<std::string> kDefaultNetnsDirs = {"/run/netns", "/run/docker/netns"};

struct DiscoveryConfig {
  std::vector<std::string> netns_dirs = kDefaultNetnsDirs;  // --netns-dir replaces these
  bool proc_scan = true;                                    // /proc/*/ns/net
  std::vector<std::string> exclude_paths;                   // --exclude-netns, by inode
  std::string proc_root = "/proc";                          // tests point this elsewhere
  // At most this many are kept, starting at the `start`th namespace found (in discovery
  // order: netns dirs by name, then /proc by pid) and wrapping around: a caller that moves
  // `start` on (the agent) gets to every namespace over several discoveries.
  std::size_t max_targets = 1024;
  std::size_t start = 0;
};

// More distinct namespaces than this are not even counted.
inline constexpr std::size_t kMaxDiscovered = 65536;

struct Discovery {
  std::vector<NetnsTarget> targets;  // distinct, never the host's own namespace
  std::vector<std::string> notes;    // what was skipped and why (capped), for people
  std::size_t found = 0;             // distinct namespaces found, kept or not
  [[nodiscard]] std::size_t not_kept() const { return found - targets.size(); }
};

// What /proc/PID/cgroup says about the container a process runs in.
struct ContainerLabel {
  std::string container_id;  // validated: lowercase hex, 12..64 characters
  std::string runtime;       // "docker", "containerd", "podman", "cri-o", "kubepods"
  std::optional<std::string> pod_uid;
};

// Parses the text of /proc/PID/cgroup (cgroup v1 or v2). Pure; unit-testable.
std::optional<ContainerLabel> parse_cgroup(std::string_view text);

// The namespace this process runs in.
Result<NetnsTarget> host_target();

// Every distinct network namespace under the netns dirs and /proc, labelled with the
// container id where one is found. Unreadable entries are skipped quietly. Beyond
// max_targets, Discovery::found says how many there were and a note says so.
Discovery discover_containers(const DiscoveryConfig& config);

Result<NetnsTarget> target_for_pid(pid_t pid, const std::string& proc_root = "/proc");
// `id` is a container id or a unique prefix of one (hex, at least 4 characters).
Result<NetnsTarget> target_for_container(const std::string& id,
                                         const std::string& proc_root = "/proc");
Result<NetnsTarget> target_for_path(const std::string& path);

// The nsfs inode of a network namespace file; an error when it is not one.
Result<std::uint64_t> netns_inode(const std::string& path);

}  // namespace imds
