// Targets: which network namespaces the probe runs from. The host namespace, explicit
// ones (--netns, --pid, --container), every container namespace found on the machine, and
// a temporary simulated bridge container (RAII, removed without a trace).
#pragma once

#include <sys/types.h>

#include <array>
#include <cstddef>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "model.hpp"
#include "result.hpp"

namespace imds {

inline const std::vector<std::string> kDefaultNetnsDirs = {"/run/netns", "/run/docker/netns"};

// Container runtimes' API sockets: one that exists says the runtime runs here.
struct RuntimeSocket {
  const char* runtime;
  const char* path;
};
inline constexpr std::array<RuntimeSocket, 5> kRuntimeSockets = {{
    {"docker", "/run/docker.sock"},
    {"containerd", "/run/containerd/containerd.sock"},
    {"cri-o", "/run/crio/crio.sock"},
    {"podman", "/run/podman/podman.sock"},
    {"k3s", "/run/k3s/containerd/containerd.sock"},
}};

// Docker's data root: containers/ID/config.v2.json holds each container's name.
inline const std::string kDefaultDockerRoot = "/var/lib/docker";

struct DiscoveryConfig {
  std::vector<std::string> netns_dirs = kDefaultNetnsDirs;  // --netns-dir replaces these
  bool proc_scan = true;                                    // /proc/*/ns/net
  std::vector<std::string> exclude_paths;                   // --exclude-netns, by inode
  std::string proc_root = "/proc";                          // tests point this elsewhere
  std::string run_root;  // tests: a prefix for the runtime sockets' paths
  std::string docker_root = kDefaultDockerRoot;  // "" looks up no names
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
  DiscoveryLook look;                // what was looked at, and what could not be used
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
// container id where one is found. Entries that are not usable network namespaces are
// counted by problem in Discovery::look (never skipped quietly). Beyond max_targets,
// Discovery::found says how many there were and a note says so.
Discovery discover_containers(const DiscoveryConfig& config);

// The name Docker gave container `id` (a full 64-hex id), from `docker_root`'s
// containers/ID/config.v2.json ("Name": "/web" -> "web"); nothing when that is unreadable,
// too big (1 MiB), not JSON or not a valid name.
std::optional<std::string> docker_container_name(const std::string& docker_root,
                                                 std::string_view id);

// The pod of Kubernetes container `id` (a full 64-hex id) as "namespace/pod", from the OCI
// bundle's config.json annotations that containerd's CRI plugin
// (run/containerd/io.containerd.runtime.v2.task/k8s.io/ID/) or CRI-O
// (run/containers/storage/overlay-containers/ID/userdata/) keep under `run_root` ("" for
// the real /run); nothing when unreadable, over 1 MiB or not valid Kubernetes names.
std::optional<std::string> kubernetes_pod_name(const std::string& run_root, std::string_view id);

// What Docker's on-disk state says of the network namespace files it made: for the running
// containers under `docker_root`, the directory and file names of their SandboxKey
// ("/run/docker/netns/4f2b8c1d9e0a"). Nothing when the data root cannot be read.
struct DockerSandboxes {
  std::set<std::string> dirs;   // as written, and without a leading /var ("/var/run/..")
  std::set<std::string> files;  // base names
};
std::optional<DockerSandboxes> docker_sandboxes(const std::string& docker_root);

Result<NetnsTarget> target_for_pid(pid_t pid, const std::string& proc_root = "/proc",
                                   const std::string& docker_root = kDefaultDockerRoot);
// `id` is a container id or a unique prefix of one (hex, at least 4 characters).
Result<NetnsTarget> target_for_container(const std::string& id,
                                         const std::string& proc_root = "/proc",
                                         const std::string& docker_root = kDefaultDockerRoot);
Result<NetnsTarget> target_for_path(const std::string& path);

// What a path in a namespace directory is: a network namespace (its nsfs inode), or why not.
struct NetnsEntry {
  std::optional<std::uint64_t> inode;
  EntryProblem problem = EntryProblem::unreadable;  // when no inode
  int error = 0;                                    // the errno behind it, when one
  bool vanished = false;  // the name is gone (removed while it was read): not a problem
};
NetnsEntry check_netns_entry(const std::string& path);

// The nsfs inode of a network namespace file; an error when it is not one (check_netns_entry
// worded).
Result<std::uint64_t> netns_inode(const std::string& path);

}  // namespace imds
