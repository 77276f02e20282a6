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
#include <cctype>
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
#include "words.hpp"

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

void apply_label(NetnsTarget& t, const ContainerLabel& label, const std::string& docker_root,
                 const std::string& run_root = "") {
  t.container_id = label.container_id;
  t.runtime = label.runtime;
  t.name = short_id(label.container_id);
  if (label.pod_uid) {
    t.container_name = kubernetes_pod_name(run_root, label.container_id);
  } else if (label.runtime == "docker" && !docker_root.empty()) {
    t.container_name = docker_container_name(docker_root, label.container_id);
  }
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

namespace {

EntryProblem problem_of(int err) {
  return err == EACCES || err == EPERM ? EntryProblem::permission_denied : EntryProblem::unreadable;
}

}  // namespace

NetnsEntry check_netns_entry(const std::string& path) {
  NetnsEntry out;
  const auto fail = [&](EntryProblem problem, int err) {
    out.problem = problem;
    out.error = err;
    return out;
  };
  // lstat first: a link to nothing is told apart from a name that is gone.
  struct stat link {};
  if (::lstat(path.c_str(), &link) != 0) {
    const int err = errno;
    if (err == ENOENT) {
      out.vanished = true;
      return fail(EntryProblem::unreadable, err);
    }
    return fail(problem_of(err), err);
  }
  // nsfs files are regular files; refuse FIFOs and devices before opening (an open of a
  // FIFO planted in a netns directory would block, a device open can have side effects).
  struct stat pre {};
  if (::stat(path.c_str(), &pre) != 0) {
    const int err = errno;
    if (S_ISLNK(link.st_mode) && err == ENOENT) return fail(EntryProblem::dangling_link, err);
    return fail(problem_of(err), err);
  }
  if (!S_ISREG(pre.st_mode)) return fail(EntryProblem::not_a_namespace_file, 0);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd.valid()) {
    const int err = errno;
    if (err == ENOENT) {  // gone between the two calls
      out.vanished = true;
      return fail(EntryProblem::unreadable, err);
    }
    return fail(problem_of(err), err);
  }
  struct statfs fs {};
  if (::fstatfs(fd.get(), &fs) != 0) return fail(EntryProblem::unreadable, errno);
  if (fs.f_type != NSFS_MAGIC) {
    // An empty file where a namespace should be mounted: the mount point of a bind mount this
    // mount namespace does not see (or a stale name). /proc and /sys files say size 0 too.
    const bool empty = pre.st_size == 0 && fs.f_type != PROC_SUPER_MAGIC && fs.f_type != SYSFS_MAGIC;
    return fail(empty ? EntryProblem::not_mounted_here : EntryProblem::not_a_namespace_file, 0);
  }
  if (::ioctl(fd.get(), NS_GET_NSTYPE) != CLONE_NEWNET) {
    return fail(EntryProblem::other_namespace_type, 0);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail(EntryProblem::unreadable, errno);
  out.inode = static_cast<std::uint64_t>(st.st_ino);
  return out;
}

Result<std::uint64_t> netns_inode(const std::string& path) {
  const NetnsEntry entry = check_netns_entry(path);
  if (entry.inode) return *entry.inode;
  if (entry.vanished) return Result<std::uint64_t>::failure(path + ": no such file");
  switch (entry.problem) {
    case EntryProblem::permission_denied:
      return Result<std::uint64_t>::failure(
          "cannot open " + path + ": " + errno_text(entry.error) +
          " (run as root, or with CAP_SYS_PTRACE for /proc)");
    case EntryProblem::unreadable:
      return Result<std::uint64_t>::failure("cannot open " + path + ": " + errno_text(entry.error));
    case EntryProblem::other_namespace_type:
      return Result<std::uint64_t>::failure(path + " is not a network namespace");
    case EntryProblem::not_mounted_here:
    case EntryProblem::stale:
    case EntryProblem::dangling_link:
    case EntryProblem::not_a_namespace_file:
      break;
  }
  return Result<std::uint64_t>::failure(path + " is not a namespace file (" +
                                        entry_problem_words(entry.problem) + ")");
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

  // A name that is half made or half removed (`ip netns add` creates the file, then mounts
  // onto it; `delete` unmounts, then unlinks) is read once more after a short pause before it
  // counts as unusable.
  struct Retry {
    std::size_t dir;
    std::string name;
    std::string path;
  };
  std::vector<Retry> retries;
  auto add_entry = [&](std::size_t look_index, const std::string& name, const std::string& path,
                       std::uint64_t inode) {
    NetnsDirLook& look = out.look.dirs[look_index];
    ++look.usable;
    if (excluded.count(inode) != 0 || by_inode.count(inode) != 0) return;
    if (full()) return;
    NetnsTarget t;
    t.name = name;
    t.path = path;
    t.inode = inode;
    t.source = TargetSource::netns_dir;
    by_inode.emplace(t.inode, found.size());
    found.push_back(std::move(t));
  };
  for (const auto& dir_path : config.netns_dirs) {
    NetnsDirLook& look = out.look.dirs.emplace_back();
    look.dir = dir_path;
    const std::size_t look_index = out.look.dirs.size() - 1;
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(dir_path.c_str()), ::closedir);
    if (!dir) {
      const int err = errno;
      if (err != ENOENT) {
        look.state = NetnsDirLook::State::unreadable;
        look.error = errno_text(err);
        note("cannot read " + dir_path + ": " + look.error);
      }
      continue;
    }
    look.state = NetnsDirLook::State::read;
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
      const NetnsEntry entry = check_netns_entry(path);
      if (entry.vanished) continue;
      ++look.entries;
      if (entry.inode) {
        add_entry(look_index, name, path, *entry.inode);
      } else {
        retries.push_back({look_index, name, std::move(path)});
      }
    }
  }
  // An empty file is a mount this mount namespace does not see (a warning: containers are
  // missing), unless it is a removed container's that the runtime has not cleaned up yet
  // (Docker unlinks it a minute later). Stale only with evidence: where Docker's state names
  // the directory, the file is no running container's SandboxKey; elsewhere, the same
  // directory holds mounted namespaces (so this mount namespace does see the runtime's
  // mounts). With neither, it stays "not mounted here".
  std::optional<std::optional<DockerSandboxes>> sandboxes;
  const auto is_stale = [&](std::size_t dir_index, const std::string& name) {
    const NetnsDirLook& look = out.look.dirs[dir_index];
    if (!sandboxes) sandboxes = docker_sandboxes(config.docker_root);
    if (*sandboxes && (*sandboxes)->dirs.count(look.dir) != 0) {
      return (*sandboxes)->files.count(name) == 0;
    }
    return look.usable > 0;
  };
  if (!retries.empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    for (const Retry& r : retries) {
      const NetnsEntry entry = check_netns_entry(r.path);
      NetnsDirLook& look = out.look.dirs[r.dir];
      if (entry.vanished) {
        --look.entries;
      } else if (entry.inode) {
        add_entry(r.dir, r.name, r.path, *entry.inode);
      } else {
        EntryProblem problem = entry.problem;
        if (problem == EntryProblem::not_mounted_here && is_stale(r.dir, r.name)) {
          problem = EntryProblem::stale;
        }
        ++look.unusable.at(static_cast<std::size_t>(problem));
        if (look.examples.size() < kMaxLookExamples) look.examples.push_back(printable(r.name, 64));
      }
    }
  }

  // Processes: new namespaces, and container labels for the named ones found above. With
  // the scan off, the namespaces of container processes that discovery did not list are
  // still counted: a container discovery could not see is a finding, not a gap.
  out.look.proc_scanned = config.proc_scan;
  std::set<std::uint64_t> labelled;
  std::set<std::uint64_t> unlisted;
  for (const pid_t pid : list_pids(config.proc_root)) {
    const std::string ns_path = config.proc_root + "/" + std::to_string(pid) + "/ns/net";
    struct stat st {};
    if (::stat(ns_path.c_str(), &st) != 0) continue;  // gone, or not ours to read
    const auto ino = static_cast<std::uint64_t>(st.st_ino);
    if (excluded.count(ino) != 0 || labelled.count(ino) != 0) continue;
    const auto known = by_inode.find(ino);
    const auto label = label_for_pid(config.proc_root, pid);
    if (known != by_inode.end()) {
      if (label) {
        apply_label(found[known->second], *label, config.docker_root, config.run_root);
        labelled.insert(ino);
      }
      continue;
    }
    if (!config.proc_scan) {
      if (label) {
        ++out.look.unlisted_container_processes;
        unlisted.insert(ino);
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
      apply_label(t, *label, config.docker_root, config.run_root);
      labelled.insert(ino);
    }
    by_inode.emplace(ino, found.size());
    found.push_back(std::move(t));
    ++out.look.proc_namespaces;
  }
  out.look.unlisted_container_namespaces = unlisted.size();
  for (const RuntimeSocket& r : kRuntimeSockets) {
    struct stat st {};
    if (::stat((config.run_root + r.path).c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
      out.look.runtimes.emplace_back(r.runtime);
    }
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

namespace {

// What one containers/ID/config.v2.json says, as far as discovery needs it.
struct DockerConfig {
  std::optional<std::string> name;  // validated
  std::string sandbox_key;          // NetworkSettings.SandboxKey, "" when none
  bool running = false;             // State.Running
};

std::optional<DockerConfig> parse_docker_config(const std::string& text) {
  const auto doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return std::nullopt;
  DockerConfig out;
  const auto state = doc.find("State");
  if (state != doc.end() && state->is_object()) {
    const auto running = state->find("Running");
    out.running = running != state->end() && running->is_boolean() && running->get<bool>();
  }
  const auto settings = doc.find("NetworkSettings");
  if (settings != doc.end() && settings->is_object()) {
    const auto key = settings->find("SandboxKey");
    if (key != settings->end() && key->is_string() && key->get_ref<const std::string&>().size() <
                                                          4096) {
      out.sandbox_key = key->get<std::string>();
    }
  }
  const auto name = doc.find("Name");
  if (name == doc.end() || !name->is_string()) return out;
  std::string_view n = name->get_ref<const std::string&>();
  if (n.starts_with('/')) n.remove_prefix(1);
  // Docker's own rule for names: [a-zA-Z0-9][a-zA-Z0-9_.-]+
  const auto name_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.' || c == '-';
  };
  if (n.size() >= 2 && n.size() <= 128 && std::isalnum(static_cast<unsigned char>(n[0])) != 0 &&
      std::all_of(n.begin(), n.end(), name_char)) {
    out.name = std::string(n);
  }
  return out;
}

// A runtime's JSON state file, parsed by `parse`, read again only when it changed (its mtime
// or size): discovery runs every cycle of the agent, and the files can be tens of KiB. At
// most 1 MiB each; regular files only (never a FIFO or a device).
template <typename T>
std::optional<T> cached_state_file(const std::string& path,
                                   std::optional<T> (*parse)(const std::string&)) {
  constexpr std::size_t kMaxStateBytes = std::size_t{1} << 20;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<std::size_t>(st.st_size) > kMaxStateBytes) {
    return std::nullopt;
  }
  struct Cached {
    std::int64_t mtime_ns;
    std::int64_t size;
    std::optional<T> value;
  };
  static std::mutex cache_mutex;
  static std::map<std::string, Cached, std::less<>> cache;
  const std::int64_t mtime_ns =
      static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  {
    std::lock_guard lock(cache_mutex);
    const auto hit = cache.find(path);
    if (hit != cache.end() && hit->second.mtime_ns == mtime_ns &&
        hit->second.size == static_cast<std::int64_t>(st.st_size)) {
      return hit->second.value;
    }
  }
  const auto text = read_capped(path, kMaxStateBytes);
  if (!text) return std::nullopt;
  auto value = parse(*text);
  std::lock_guard lock(cache_mutex);
  if (cache.size() >= 4096) cache.clear();
  cache[path] = Cached{mtime_ns, static_cast<std::int64_t>(st.st_size), value};
  return value;
}

// containers/ID/config.v2.json (`docker rename`, a start or a stop rewrite it).
std::optional<DockerConfig> docker_config(const std::string& docker_root, std::string_view id) {
  if (id.size() != 64 || !is_lower_hex(id)) return std::nullopt;
  return cached_state_file<DockerConfig>(
      docker_root + "/containers/" + std::string(id) + "/config.v2.json", parse_docker_config);
}

// A Kubernetes name: lowercase letters, digits, '-' and (subdomain) '.', starting and
// ending with a letter or digit.
bool kubernetes_name(std::string_view n, std::size_t max, bool dots) {
  const auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (n.empty() || n.size() > max || !alnum(n.front()) || !alnum(n.back())) return false;
  return std::all_of(n.begin(), n.end(),
                     [&](char c) { return alnum(c) || c == '-' || (dots && c == '.'); });
}

// "namespace/pod" from an OCI bundle's config.json annotations, as containerd's CRI plugin
// (io.kubernetes.cri.sandbox-*) or CRI-O (io.kubernetes.pod.*) write them.
std::optional<std::string> parse_pod_annotations(const std::string& text) {
  const auto doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return std::nullopt;
  const auto annotations = doc.find("annotations");
  if (annotations == doc.end() || !annotations->is_object()) return std::nullopt;
  const auto get = [&](const char* key) -> std::string_view {
    const auto it = annotations->find(key);
    return it != annotations->end() && it->is_string()
               ? std::string_view(it->get_ref<const std::string&>())
               : std::string_view();
  };
  for (const auto& [ns_key, pod_key] :
       {std::pair{"io.kubernetes.cri.sandbox-namespace", "io.kubernetes.cri.sandbox-name"},
        std::pair{"io.kubernetes.pod.namespace", "io.kubernetes.pod.name"}}) {
    const std::string_view ns = get(ns_key);
    const std::string_view pod = get(pod_key);
    if (kubernetes_name(ns, 63, false) && kubernetes_name(pod, 253, true)) {
      return std::string(ns) + "/" + std::string(pod);
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> docker_container_name(const std::string& docker_root,
                                                 std::string_view id) {
  auto config = docker_config(docker_root, id);
  return config ? config->name : std::nullopt;
}

std::optional<std::string> kubernetes_pod_name(const std::string& run_root, std::string_view id) {
  if (id.size() != 64 || !is_lower_hex(id)) return std::nullopt;
  // containerd's CRI plugin, then CRI-O.
  constexpr std::array<std::pair<std::string_view, std::string_view>, 2> kBundles{{
      {"/run/containerd/io.containerd.runtime.v2.task/k8s.io/", "/config.json"},
      {"/run/containers/storage/overlay-containers/", "/userdata/config.json"},
  }};
  for (const auto& [dir, file] : kBundles) {
    std::string path = run_root;
    path += dir;
    path += id;
    path += file;
    if (auto name = cached_state_file<std::string>(path, parse_pod_annotations)) return name;
  }
  return std::nullopt;
}

std::optional<DockerSandboxes> docker_sandboxes(const std::string& docker_root) {
  constexpr std::size_t kMaxContainers = 4096;
  const std::string dir_path = docker_root + "/containers";
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(dir_path.c_str()), ::closedir);
  if (!dir) return std::nullopt;
  DockerSandboxes out;
  std::size_t seen = 0;
  while (const dirent* e = ::readdir(dir.get())) {
    if (++seen > kMaxContainers) break;
    const auto config = docker_config(docker_root, e->d_name);
    if (!config || !config->running || config->sandbox_key.empty()) continue;
    const std::string& key = config->sandbox_key;
    const auto slash = key.rfind('/');
    if (slash == std::string::npos || slash == 0) continue;
    std::string parent = key.substr(0, slash);
    out.files.insert(key.substr(slash + 1));
    if (parent.starts_with("/var/run/")) out.dirs.insert(parent.substr(4));  // /var/run -> /run
    out.dirs.insert(std::move(parent));
  }
  return out;
}

Result<NetnsTarget> target_for_pid(pid_t pid, const std::string& proc_root,
                                   const std::string& docker_root) {
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
  if (auto label = label_for_pid(proc_root, pid)) apply_label(t, *label, docker_root);
  return t;
}

Result<NetnsTarget> target_for_container(const std::string& id, const std::string& proc_root,
                                         const std::string& docker_root) {
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
  auto t = target_for_pid(*found_pid, proc_root, docker_root);
  if (!t) return t;
  t.value().source = TargetSource::container;
  apply_label(t.value(), *found, docker_root);
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
