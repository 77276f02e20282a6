// Targets: finding network namespaces (host, explicit, discovered). Input from /proc and
// netns dirs is bounded and validated; anything unreadable is skipped quietly.
#include "targets.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <poll.h>
#include <sched.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

#include "netns.hpp"
#include "sys.hpp"

extern char** environ;

namespace imds {
namespace {

using namespace sys;

constexpr std::size_t kMaxCgroupBytes = std::size_t{16} * 1024;
constexpr std::size_t kMaxCgroupLines = 64;
constexpr std::size_t kMaxDirEntries = 65536;
constexpr std::size_t kMaxNotes = 20;

bool is_lower_hex(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

bool is_container_id(std::string_view s) {
  return s.size() >= 12 && s.size() <= 64 && is_lower_hex(s);
}

bool is_pod_uid(std::string_view s) {
  return s.size() >= 8 && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || c == '-' || c == '_';
         });
}

std::optional<pid_t> parse_pid(std::string_view s) {
  if (s.empty() || s.size() > 10) return std::nullopt;
  long v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v <= 0 || v > 0x3fffffff)
    return std::nullopt;
  return static_cast<pid_t>(v);
}

// Numeric entries of /proc, ascending (lowest pid first: the container's init).
std::vector<pid_t> list_pids(const std::string& proc_root) {
  std::vector<pid_t> pids;
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(proc_root.c_str()), ::closedir);
  if (!dir) return pids;
  while (const dirent* e = ::readdir(dir.get())) {
    if (pids.size() >= kMaxDirEntries * 4) break;
    if (auto pid = parse_pid(e->d_name)) pids.push_back(*pid);
  }
  std::sort(pids.begin(), pids.end());
  return pids;
}

std::optional<ContainerLabel> label_for_pid(const std::string& proc_root, pid_t pid) {
  const auto text = read_capped(proc_root + "/" + std::to_string(pid) + "/cgroup", kMaxCgroupBytes);
  if (!text) return std::nullopt;
  return parse_cgroup(*text);
}

std::string short_id(const std::string& id) { return id.substr(0, 12); }

void apply_label(NetnsTarget& t, const ContainerLabel& label) {
  t.container_id = label.container_id;
  t.runtime = label.runtime;
  t.name = short_id(label.container_id);
}

std::string basename_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Strips "<prefix><id>.scope" down to id, when the component has that shape.
std::optional<std::string> scope_id(std::string_view component, std::string_view prefix) {
  constexpr std::string_view suffix = ".scope";
  if (component.size() <= prefix.size() + suffix.size()) return std::nullopt;
  if (component.substr(0, prefix.size()) != prefix) return std::nullopt;
  if (component.substr(component.size() - suffix.size()) != suffix) return std::nullopt;
  std::string id(component.substr(prefix.size(), component.size() - prefix.size() - suffix.size()));
  if (!is_container_id(id)) return std::nullopt;
  return id;
}

std::optional<ContainerLabel> parse_cgroup_path(std::string_view path) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (start <= path.size() && parts.size() < 64) {
    const auto end = std::min(path.find('/', start), path.size());
    if (end > start) parts.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  bool kube = false;
  std::optional<std::string> pod;
  for (const auto part : parts) {
    if (part.substr(0, 8) == "kubepods") {
      kube = true;
      // cgroupfs driver: "pod<uid>"; systemd driver: "kubepods-besteffort-pod<uid>.slice".
      const auto at = part.find("pod", 8);
      if (at != std::string_view::npos) {
        auto uid = part.substr(at + 3);
        if (uid.size() > 6 && uid.substr(uid.size() - 6) == ".slice")
          uid = uid.substr(0, uid.size() - 6);
        if (is_pod_uid(uid)) pod = std::string(uid);
      }
    } else if (kube && part.substr(0, 3) == "pod" && is_pod_uid(part.substr(3))) {
      pod = std::string(part.substr(3));
    }
  }
  struct Scope {
    std::string_view prefix;
    std::string_view runtime;
  };
  static constexpr std::array<Scope, 4> scopes = {{{"docker-", "docker"},
                                                   {"cri-containerd-", "containerd"},
                                                   {"libpod-", "podman"},
                                                   {"crio-", "cri-o"}}};
  for (std::size_t i = 0; i < parts.size(); ++i) {
    for (const auto& s : scopes) {
      if (auto id = scope_id(parts[i], s.prefix)) {
        return ContainerLabel{*id, kube ? "kubepods" : std::string(s.runtime), pod};
      }
    }
    // cgroup v1 / cgroupfs driver: /docker/<id>, /kubepods/<qos>/pod<uid>/<id>.
    if (i > 0 && is_container_id(parts[i]) && parts[i].size() == 64) {
      if (parts[i - 1] == "docker") return ContainerLabel{std::string(parts[i]), "docker", {}};
      if (kube) return ContainerLabel{std::string(parts[i]), "kubepods", pod};
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<ContainerLabel> parse_cgroup(std::string_view text) {
  if (text.size() > kMaxCgroupBytes) text = text.substr(0, kMaxCgroupBytes);
  std::size_t start = 0;
  for (std::size_t n = 0; n < kMaxCgroupLines && start < text.size(); ++n) {
    const auto end = std::min(text.find('\n', start), text.size());
    const auto line = text.substr(start, end - start);
    start = end + 1;
    // hierarchy-ID:controllers:path
    const auto c1 = line.find(':');
    const auto c2 = c1 == std::string_view::npos ? c1 : line.find(':', c1 + 1);
    if (c2 == std::string_view::npos) continue;
    if (auto label = parse_cgroup_path(line.substr(c2 + 1))) return label;
  }
  return std::nullopt;
}

Result<std::uint64_t> netns_inode(const std::string& path) {
  // nsfs files are regular files; refuse FIFOs and devices before opening (an open of a
  // FIFO planted in a netns directory would block, a device open can have side effects).
  struct stat pre {};
  if (::stat(path.c_str(), &pre) == 0 && !S_ISREG(pre.st_mode)) {
    return Result<std::uint64_t>::failure(path + " is not a namespace file");
  }
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd.valid()) {
    const int err = errno;
    return Result<std::uint64_t>::failure(
        "cannot open " + path + ": " + errno_text(err) +
        (err == EACCES || err == EPERM ? " (run as root, or with CAP_SYS_PTRACE for /proc)" : ""));
  }
  struct statfs fs {};
  if (::fstatfs(fd.get(), &fs) != 0 || fs.f_type != NSFS_MAGIC) {
    return Result<std::uint64_t>::failure(
        path + " is not a namespace file (a stale netns name whose namespace is gone?)");
  }
  const int type = ::ioctl(fd.get(), NS_GET_NSTYPE);
  if (type != CLONE_NEWNET) {
    return Result<std::uint64_t>::failure(path + " is not a network namespace");
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return Result<std::uint64_t>::failure("cannot stat " + path + ": " + errno_text(errno));
  }
  return static_cast<std::uint64_t>(st.st_ino);
}

Result<NetnsTarget> host_target() {
  auto inode = netns_inode("/proc/self/ns/net");
  if (!inode) return Result<NetnsTarget>::failure(inode.error().message);
  NetnsTarget t;
  t.name = "host";
  t.path = "/proc/self/ns/net";
  t.inode = inode.value();
  t.source = TargetSource::host;
  t.is_host = true;
  return t;
}

Discovery discover_containers(const DiscoveryConfig& config) {
  Discovery out;
  auto note = [&](std::string text) {
    if (out.notes.size() < kMaxNotes) out.notes.push_back(std::move(text));
  };
  std::set<std::uint64_t> excluded;
  if (auto host = netns_inode("/proc/self/ns/net")) excluded.insert(host.value());
  for (const auto& path : config.exclude_paths) {
    if (auto ino = netns_inode(path)) {
      excluded.insert(ino.value());
    } else {
      note("--exclude-netns " + path + " ignored: " + ino.error().message);
    }
  }
  // Every namespace is found (and labelled) first; the window of max_targets is cut at the
  // end, so the ones beyond it are counted rather than silently missing.
  std::vector<NetnsTarget> found;
  std::unordered_map<std::uint64_t, std::size_t> by_inode;
  auto full = [&] { return found.size() >= kMaxDiscovered; };

  for (const auto& dir_path : config.netns_dirs) {
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(dir_path.c_str()), ::closedir);
    if (!dir) {
      if (errno != ENOENT) note("cannot read " + dir_path + ": " + errno_text(errno));
      continue;
    }
    std::vector<std::string> names;
    while (const dirent* e = ::readdir(dir.get())) {
      if (names.size() >= kMaxDirEntries) break;
      const std::string name = e->d_name;
      if (name.empty() || name[0] == '.' || name.size() > 255) continue;
      names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      std::string path = dir_path;
      path += '/';
      path += name;
      auto ino = netns_inode(path);
      if (!ino) continue;  // a stale name or not a namespace: nothing to probe there
      if (excluded.count(ino.value()) != 0 || by_inode.count(ino.value()) != 0) continue;
      if (full()) break;
      NetnsTarget t;
      t.name = name;
      t.path = path;
      t.inode = ino.value();
      t.source = TargetSource::netns_dir;
      by_inode.emplace(t.inode, found.size());
      found.push_back(std::move(t));
    }
  }

  // Processes: new namespaces, and container labels for the named ones found above.
  std::set<std::uint64_t> labelled;
  for (const pid_t pid : list_pids(config.proc_root)) {
    const std::string ns_path = config.proc_root + "/" + std::to_string(pid) + "/ns/net";
    struct stat st {};
    if (::stat(ns_path.c_str(), &st) != 0) continue;  // gone, or not ours to read
    const auto ino = static_cast<std::uint64_t>(st.st_ino);
    if (excluded.count(ino) != 0 || labelled.count(ino) != 0) continue;
    const auto known = by_inode.find(ino);
    if (known == by_inode.end() && !config.proc_scan) continue;
    const auto label = label_for_pid(config.proc_root, pid);
    if (known != by_inode.end()) {
      if (label) {
        apply_label(found[known->second], *label);
        labelled.insert(ino);
      }
      continue;
    }
    if (full()) continue;  // still labels the ones already found
    NetnsTarget t;
    t.name = "pid:" + std::to_string(pid);
    t.path = ns_path;
    t.inode = ino;
    t.source = TargetSource::proc;
    if (label) {
      apply_label(t, *label);
      labelled.insert(ino);
    }
    by_inode.emplace(ino, found.size());
    found.push_back(std::move(t));
  }

  out.found = found.size();
  if (found.size() <= config.max_targets) {
    out.targets = std::move(found);
    return out;
  }
  const std::size_t first = config.start % found.size();
  out.targets.reserve(config.max_targets);
  for (std::size_t i = 0; i < config.max_targets; ++i) {
    out.targets.push_back(std::move(found[(first + i) % found.size()]));
  }
  note("found " + std::to_string(out.found) + (out.found >= kMaxDiscovered ? " or more" : "") +
       " network namespaces, kept " + std::to_string(config.max_targets) + " (from number " +
       std::to_string(first + 1) + " on); the other " + std::to_string(out.not_kept()) +
       " are not probed this time");
  return out;
}

Result<NetnsTarget> target_for_pid(pid_t pid, const std::string& proc_root) {
  if (pid <= 0) return Result<NetnsTarget>::failure("--pid must be a positive number");
  const std::string dir = proc_root + "/" + std::to_string(pid);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return Result<NetnsTarget>::failure("no process with pid " + std::to_string(pid));
  }
  const std::string path = dir + "/ns/net";
  auto ino = netns_inode(path);
  if (!ino) return Result<NetnsTarget>::failure(ino.error().message);
  NetnsTarget t;
  t.name = "pid:" + std::to_string(pid);
  t.path = path;
  t.inode = ino.value();
  t.source = TargetSource::pid;
  if (auto label = label_for_pid(proc_root, pid)) apply_label(t, *label);
  return t;
}

Result<NetnsTarget> target_for_container(const std::string& id, const std::string& proc_root) {
  std::string prefix = id;
  std::transform(prefix.begin(), prefix.end(), prefix.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (prefix.size() < 4 || prefix.size() > 64 || !is_lower_hex(prefix)) {
    return Result<NetnsTarget>::failure(
        "--container '" + id +
        "': expected a container id or a prefix of one (4 to 64 hex digits); container "
        "names are not visible in /proc, get the id with `docker inspect -f '{{.Id}}' NAME`");
  }
  std::optional<pid_t> found_pid;
  std::optional<ContainerLabel> found;
  for (const pid_t pid : list_pids(proc_root)) {
    const auto label = label_for_pid(proc_root, pid);
    if (!label || label->container_id.compare(0, prefix.size(), prefix) != 0) continue;
    if (found && found->container_id != label->container_id) {
      return Result<NetnsTarget>::failure("--container '" + id + "' is ambiguous: it matches " +
                                          short_id(found->container_id) + " and " +
                                          short_id(label->container_id) + "; give more digits");
    }
    if (!found) {
      found = label;
      found_pid = pid;
    }
  }
  if (!found) {
    return Result<NetnsTarget>::failure(
        "no running container with an id starting with '" + prefix + "' (searched " + proc_root +
        "/*/cgroup; container names are not visible there, pass the id from `docker ps "
        "--no-trunc`)");
  }
  auto t = target_for_pid(*found_pid, proc_root);
  if (!t) return t;
  t.value().source = TargetSource::container;
  apply_label(t.value(), *found);
  return t;
}

Result<NetnsTarget> target_for_path(const std::string& path) {
  if (path.empty()) return Result<NetnsTarget>::failure("--netns needs a path");
  auto ino = netns_inode(path);
  if (!ino) return Result<NetnsTarget>::failure(ino.error().message);
  NetnsTarget t;
  t.name = basename_of(path);
  t.path = path;
  t.inode = ino.value();
  t.source = TargetSource::path;
  return t;
}

}  // namespace imds
