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
  std::size_t max_targets = 1024;
};

struct Discovery {
  std::vector<NetnsTarget> targets;  // distinct, never the host's own namespace
  std::vector<std::string> notes;    // what was skipped and why (capped), for people
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
// container id where one is found. Unreadable entries are skipped quietly.
Discovery discover_containers(const DiscoveryConfig& config);

Result<NetnsTarget> target_for_pid(pid_t pid, const std::string& proc_root = "/proc");
// `id` is a container id or a unique prefix of one (hex, at least 4 characters).
Result<NetnsTarget> target_for_container(const std::string& id,
                                         const std::string& proc_root = "/proc");
Result<NetnsTarget> target_for_path(const std::string& path);

// The nsfs inode of a network namespace file; an error when it is not one.
Result<std::uint64_t> netns_inode(const std::string& path);

// A bridge-networked "container" one forwarding hop from the host: an anonymous network
// namespace, a veth pair, a private /30 and an IPv6 ULA /64, forwarding on, masquerade in its
// own nftables table. Everything is undone by the destructor, and by SIGINT/SIGTERM/SIGHUP
// while it exists (the handler tears down, then re-raises the signal).
class SimulatedContainer {
 public:
  struct Options {
    std::string imds_v4 = "169.254.169.254";  // used to find the uplink device
    std::string imds_v6 = "fd00:ec2::254";
    bool ipv6 = true;
  };

  // Needs CAP_NET_ADMIN and CAP_SYS_ADMIN, `ip` and `nft`.
  static Result<std::unique_ptr<SimulatedContainer>> create(const Options& options);
  ~SimulatedContainer();
  SimulatedContainer(const SimulatedContainer&) = delete;
  SimulatedContainer& operator=(const SimulatedContainer&) = delete;

  // Distance 1 by construction; path is /proc/<pid>/fd/<n> while this object lives.
  [[nodiscard]] const NetnsTarget& target() const { return target_; }
  // Removes everything now (the destructor does it otherwise); returns what could not be
  // removed, for people. Idempotent.
  std::vector<std::string> remove();

  struct State;  // what was changed, so teardown can undo exactly that

 private:
  SimulatedContainer() = default;
  NetnsTarget target_;
  std::shared_ptr<State> state_;
};

// Runs argv (no shell) and returns its stdout, or an error quoting its stderr.
// argv[0] is looked up in a fixed PATH (/usr/sbin:/usr/bin:/sbin:/bin).
Result<std::string> run_tool(const std::vector<std::string>& argv, std::string_view input = {});

}  // namespace imds
