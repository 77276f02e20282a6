// Targets: finding network namespaces (host, explicit, discovered) and building the
// temporary simulated bridge container. Input from /proc and netns dirs is bounded and
// validated; anything unreadable is skipped quietly.
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

extern char** environ;

namespace imds {
namespace {

constexpr std::size_t kMaxCgroupBytes = std::size_t{16} * 1024;
constexpr std::size_t kMaxCgroupLines = 64;
constexpr std::size_t kMaxDirEntries = 65536;
constexpr std::size_t kMaxNotes = 20;
constexpr std::size_t kMaxToolOutput = std::size_t{1024} * 1024;
constexpr auto kToolTimeout = std::chrono::seconds(10);
const char* const kToolPath = "/usr/sbin:/usr/bin:/sbin:/bin";

std::string errno_text(int err) { return std::strerror(err); }

std::string base36(unsigned long n) {
  static constexpr std::string_view digits = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::string out;
  do {
    out.insert(out.begin(), digits[n % 36]);
    n /= 36;
  } while (n != 0);
  return out;
}

std::string random_chars(std::size_t n, std::string_view alphabet) {
  std::random_device rd;
  std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(alphabet[pick(rd)]);
  return out;
}

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

// Reads at most `cap` bytes of a (proc) file; nullopt when it cannot be opened.
std::optional<std::string> read_capped(const std::string& path, std::size_t cap) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return std::nullopt;
  std::string out;
  std::array<char, 4096> buf{};
  while (out.size() < cap) {
    const ssize_t n = ::read(fd.get(), buf.data(), std::min(buf.size(), cap - out.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf.data(), static_cast<std::size_t>(n));
  }
  return out;
}

bool write_file(const std::string& path, const std::string& value, std::string& error) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_TRUNC));
  if (!fd.valid()) {
    error = "cannot open " + path + ": " + errno_text(errno);
    return false;
  }
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    error = "cannot write " + path + ": " + errno_text(errno);
    return false;
  }
  return true;
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
  std::unordered_map<std::uint64_t, std::size_t> by_inode;
  auto full = [&] {
    if (out.targets.size() < config.max_targets) return false;
    note("stopped at " + std::to_string(config.max_targets) + " namespaces");
    return true;
  };

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
      if (full()) return out;
      NetnsTarget t;
      t.name = name;
      t.path = path;
      t.inode = ino.value();
      t.source = TargetSource::netns_dir;
      by_inode.emplace(t.inode, out.targets.size());
      out.targets.push_back(std::move(t));
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
        apply_label(out.targets[known->second], *label);
        labelled.insert(ino);
      }
      continue;
    }
    if (full()) return out;
    NetnsTarget t;
    t.name = "pid:" + std::to_string(pid);
    t.path = ns_path;
    t.inode = ino;
    t.source = TargetSource::proc;
    if (label) {
      apply_label(t, *label);
      labelled.insert(ino);
    }
    by_inode.emplace(ino, out.targets.size());
    out.targets.push_back(std::move(t));
  }
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

// ---- running ip / nft -----------------------------------------------------------------------

namespace {

std::optional<std::string> find_tool(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  std::string_view dirs = kToolPath;
  while (!dirs.empty()) {
    const auto colon = dirs.find(':');
    const std::string candidate = std::string(dirs.substr(0, colon)) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string_view::npos) break;
    dirs.remove_prefix(colon + 1);
  }
  return std::nullopt;
}

std::string join(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) out += (out.empty() ? "" : " ") + a;
  return out;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

Result<std::string> run_tool(const std::vector<std::string>& argv, std::string_view input) {
  if (argv.empty()) return Result<std::string>::failure("run_tool: empty command");
  const auto exe = find_tool(argv[0]);
  if (!exe) {
    return Result<std::string>::failure("`" + argv[0] + "` is not installed (looked in " +
                                        kToolPath + ")");
  }
  std::array<int, 2> in{-1, -1};
  std::array<int, 2> out{-1, -1};
  std::array<int, 2> err{-1, -1};
  if (::pipe2(in.data(), O_CLOEXEC) != 0 || ::pipe2(out.data(), O_CLOEXEC) != 0 ||
      ::pipe2(err.data(), O_CLOEXEC) != 0) {
    for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1]})
      if (fd >= 0) ::close(fd);
    return Result<std::string>::failure("pipe: " + errno_text(errno));
  }
  UniqueFd in_r(in[0]), in_w(in[1]), out_r(out[0]), out_w(out[1]), err_r(err[0]), err_w(err[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_r.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, out_w.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, err_w.get(), 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) sigaddset(&defaults, s);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<std::string> args = argv;
  args[0] = *exe;
  std::vector<char*> cargv;
  cargv.reserve(args.size() + 1);
  for (auto& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  std::string env_path = std::string("PATH=") + kToolPath;
  std::string env_lang = "LC_ALL=C";
  std::array<char*, 3> envp{env_path.data(), env_lang.data(), nullptr};

  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, exe->c_str(), &actions, &attr, cargv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return Result<std::string>::failure("cannot run " + *exe + ": " + errno_text(rc));
  in_r.reset();
  out_w.reset();
  err_w.reset();

  std::string stdout_text;
  std::string stderr_text;
  std::size_t written = 0;
  if (input.empty()) in_w.reset();
  const auto deadline = std::chrono::steady_clock::now() + kToolTimeout;
  bool timed_out = false;
  while (out_r.valid() || err_r.valid()) {
    std::array<pollfd, 3> fds{};
    nfds_t n = 0;
    auto add = [&](const UniqueFd& fd, short events) {
      fds[n].fd = fd.valid() ? fd.get() : -1;
      fds[n].events = events;
      ++n;
    };
    add(out_r, POLLIN);
    add(err_r, POLLIN);
    add(in_w, POLLOUT);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    const int pr = ::poll(fds.data(), n, static_cast<int>(left.count()));
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;
    auto drain = [&](UniqueFd& fd, const pollfd& p, std::string& sink) {
      if (!fd.valid() || (p.revents & (POLLIN | POLLHUP | POLLERR)) == 0) return;
      std::array<char, 4096> buf{};
      const ssize_t r = ::read(fd.get(), buf.data(), buf.size());
      if (r < 0 && errno == EINTR) return;
      if (r <= 0) {
        fd.reset();
        return;
      }
      if (sink.size() < kMaxToolOutput) sink.append(buf.data(), static_cast<std::size_t>(r));
    };
    drain(out_r, fds[0], stdout_text);
    drain(err_r, fds[1], stderr_text);
    if (in_w.valid() && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
      const ssize_t w = ::write(in_w.get(), input.data() + written, input.size() - written);
      if (w > 0) written += static_cast<std::size_t>(w);
      if (w < 0 && errno != EINTR && errno != EAGAIN) in_w.reset();
      if (written >= input.size()) in_w.reset();
    }
  }
  in_w.reset();
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return Result<std::string>::failure("`" + join(argv) + "` did not finish within " +
                                        std::to_string(kToolTimeout.count()) + " s");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const std::string how = WIFEXITED(status)
                                ? "exited " + std::to_string(WEXITSTATUS(status))
                                : "was killed by signal " + std::to_string(WTERMSIG(status));
    std::string msg = "`" + join(argv) + "` " + how;
    const auto detail = trim(stderr_text.empty() ? stdout_text : stderr_text);
    if (!detail.empty()) msg += ": " + detail.substr(0, 500);
    return Result<std::string>::failure(msg);
  }
  return stdout_text;
}

// ---- the simulated container ----------------------------------------------------------------

struct SimulatedContainer::State {
  std::mutex mutex;
  bool torn_down = false;
  UniqueFd ns_fd;
  std::string veth;
  bool veth_created = false;
  std::string nft_table;
  bool nft_created = false;
  std::vector<std::pair<std::string, std::string>> sysctls;  // path, value to restore

  std::vector<std::string> teardown() {
    std::lock_guard lock(mutex);
    std::vector<std::string> errors;
    if (torn_down) return errors;
    torn_down = true;
    if (nft_created) {
      if (auto r = run_tool({"nft", "delete", "table", "inet", nft_table}); !r)
        errors.push_back(r.error().message);
    }
    if (veth_created) {  // deleting one end of a veth pair deletes the other
      if (auto r = run_tool({"ip", "link", "del", veth}); !r) errors.push_back(r.error().message);
    }
    ns_fd.reset();  // the namespace goes away with its last reference
    std::for_each(sysctls.rbegin(), sysctls.rend(), [&](const auto& sysctl) {
      std::string error;
      if (!write_file(sysctl.first, sysctl.second, error)) errors.push_back(error);
    });
    return errors;
  }
};

namespace {

// Tears down every live simulated container on SIGINT/SIGTERM/SIGHUP, then lets the signal
// take its previous course. The handler only writes to a pipe; a thread does the work.
class SignalGuard {
 public:
  static SignalGuard& instance() {
    static SignalGuard guard;
    return guard;
  }
  SignalGuard() = default;
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;
  // exit() with a simulated container still alive: nothing left to join for.
  ~SignalGuard() {
    if (watcher_.joinable()) watcher_.detach();
  }

  void add(const std::shared_ptr<SimulatedContainer::State>& s) {
    std::lock_guard lock(mutex_);
    if (states_.empty()) install();
    states_.insert(s);
  }

  void remove(const std::shared_ptr<SimulatedContainer::State>& s) {
    std::thread finished;
    {
      std::lock_guard lock(mutex_);
      states_.erase(s);
      if (states_.empty()) finished = uninstall();
    }
    if (finished.joinable()) finished.join();
  }

 private:
  static constexpr std::array<int, 3> kSignals = {SIGINT, SIGTERM, SIGHUP};
  static inline std::atomic<int> write_fd{-1};

  static void on_signal(int sig) {
    const int saved = errno;
    const auto byte = static_cast<unsigned char>(sig);
    const int fd = write_fd.load();
    if (fd >= 0) (void)!::write(fd, &byte, 1);
    errno = saved;
  }

  void install() {
    std::array<int, 2> p{-1, -1};
    if (::pipe2(p.data(), O_CLOEXEC | O_NONBLOCK) != 0) return;  // no guard; teardown by dtor
    // The watcher thread owns both ends: it closes them only after reading the stop byte,
    // so neither the handler nor uninstall() ever writes to a closed (or reused) fd.
    stop_fd_ = p[1];
    write_fd.store(p[1]);
    for (std::size_t i = 0; i < kSignals.size(); ++i) {
      struct sigaction sa {};
      sa.sa_handler = &SignalGuard::on_signal;
      sigemptyset(&sa.sa_mask);
      sa.sa_flags = SA_RESTART;
      ::sigaction(kSignals[i], &sa, &previous_[i]);
    }
    watcher_ =
        std::thread([this, r = UniqueFd(p[0]), w = UniqueFd(p[1])]() mutable { watch(r.get()); });
  }

  // Called with mutex_ held; returns the watcher thread for the caller to join unlocked.
  std::thread uninstall() {
    if (!watcher_.joinable()) return {};
    write_fd.store(-1);
    for (std::size_t i = 0; i < kSignals.size(); ++i) {
      ::sigaction(kSignals[i], &previous_[i], nullptr);
    }
    const unsigned char stop = 0;
    (void)!::write(stop_fd_, &stop, 1);
    stop_fd_ = -1;
    return std::move(watcher_);
  }

  void watch(int fd) {
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, -1) < 0 && errno == EINTR) continue;
      unsigned char byte = 0;
      const ssize_t n = ::read(fd, &byte, 1);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n <= 0 || byte == 0) break;
      {
        std::lock_guard lock(mutex_);
        for (const auto& s : states_) s->teardown();
        for (std::size_t i = 0; i < kSignals.size(); ++i) {
          ::sigaction(kSignals[i], &previous_[i], nullptr);
        }
      }
      ::kill(::getpid(), byte);  // the previous disposition decides what happens now
    }
  }

  std::mutex mutex_;
  std::set<std::shared_ptr<SimulatedContainer::State>> states_;
  int stop_fd_ = -1;  // write end of the watcher's pipe, owned by the watcher thread
  std::thread watcher_;
  std::array<struct sigaction, kSignals.size()> previous_{};
};

struct Ipv4Net {
  std::uint32_t addr = 0;
  int len = 32;
};

std::optional<Ipv4Net> parse_ipv4_net(const std::string& s) {
  Ipv4Net n;
  std::string_view v = s;
  const auto slash = v.find('/');
  if (slash != std::string_view::npos) {
    const auto lenv = v.substr(slash + 1);
    if (std::from_chars(lenv.data(), lenv.data() + lenv.size(), n.len).ec != std::errc() ||
        n.len < 0 || n.len > 32)
      return std::nullopt;
    v = v.substr(0, slash);
  }
  std::uint32_t addr = 0;
  for (int i = 0; i < 4; ++i) {
    unsigned octet = 0;
    const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), octet);
    if (ec != std::errc() || octet > 255) return std::nullopt;
    addr = (addr << 8U) | octet;
    v.remove_prefix(static_cast<std::size_t>(p - v.data()));
    if (i < 3) {
      if (v.empty() || v[0] != '.') return std::nullopt;
      v.remove_prefix(1);
    }
  }
  if (!v.empty()) return std::nullopt;
  n.addr = addr;
  return n;
}

bool overlaps(const Ipv4Net& a, const Ipv4Net& b) {
  const int len = std::min(a.len, b.len);
  const std::uint32_t mask = len == 0 ? 0 : ~std::uint32_t{0} << static_cast<unsigned>(32 - len);
  return (a.addr & mask) == (b.addr & mask);
}

std::string ipv4_text(std::uint32_t a) {
  return std::to_string(a >> 24U) + "." + std::to_string((a >> 16U) & 255U) + "." +
         std::to_string((a >> 8U) & 255U) + "." + std::to_string(a & 255U);
}

// A /30 in 198.18.0.0/15 (reserved for network testing, RFC 2544) that no route uses.
Result<std::uint32_t> pick_ipv4_subnet() {
  std::vector<Ipv4Net> used;
  if (auto routes = run_tool({"ip", "-j", "-4", "route", "show", "table", "all"})) {
    const auto doc = nlohmann::json::parse(routes.value(), nullptr, false);
    if (doc.is_array()) {
      for (const auto& r : doc) {
        if (!r.is_object() || !r.contains("dst") || !r["dst"].is_string()) continue;
        if (auto net = parse_ipv4_net(r["dst"].get<std::string>())) used.push_back(*net);
      }
    }
  } else {
    return Result<std::uint32_t>::failure(routes.error().message);
  }
  std::random_device rd;
  std::uniform_int_distribution<std::uint32_t> pick(0, (1U << 15U) - 1);
  const std::uint32_t base = (198U << 24U) | (18U << 16U);
  for (int attempt = 0; attempt < 32; ++attempt) {
    const Ipv4Net candidate{base + pick(rd) * 4, 30};
    const bool clash = std::any_of(used.begin(), used.end(), [&](const Ipv4Net& u) {
      return u.len > 0 && overlaps(u, candidate);
    });
    if (!clash) return candidate.addr;
  }
  return Result<std::uint32_t>::failure("no free /30 in 198.18.0.0/15 for the simulated container");
}

// The device the host reaches `address` through, when there is a route.
std::optional<std::string> uplink_device(const std::string& address) {
  auto r = run_tool({"ip", "-j", "route", "get", address});
  if (!r) return std::nullopt;
  const auto doc = nlohmann::json::parse(r.value(), nullptr, false);
  if (!doc.is_array() || doc.empty() || !doc[0].is_object() || !doc[0].contains("dev") ||
      !doc[0]["dev"].is_string())
    return std::nullopt;
  auto dev = doc[0]["dev"].get<std::string>();
  if (dev.empty() || dev.size() > 15 || dev.find('/') != std::string::npos || dev == "." ||
      dev == "..")
    return std::nullopt;
  return dev;
}

// Opens a fresh network namespace without naming it anywhere: a short-lived thread
// unshares and keeps a reference as an fd.
Result<int> new_anonymous_netns() {
  int fd = -1;
  int err = 0;
  std::thread t([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      err = errno;
      return;
    }
    fd = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (fd < 0) err = errno;
  });
  t.join();
  if (fd < 0) {
    return Result<int>::failure("cannot create a network namespace: " + errno_text(err) +
                                (err == EPERM ? " (--simulate-container needs root)" : ""));
  }
  return fd;
}

}  // namespace

Result<std::unique_ptr<SimulatedContainer>> SimulatedContainer::create(const Options& options) {
  using R = Result<std::unique_ptr<SimulatedContainer>>;
  auto state = std::make_shared<State>();
  std::unique_ptr<SimulatedContainer> sim(new SimulatedContainer());  // private constructor
  sim->state_ = state;
  SignalGuard::instance().add(state);
  // From here on the destructor undoes whatever was done, also when a step fails.

  auto ns = new_anonymous_netns();
  if (!ns) return R::failure(ns.error().message);
  state->ns_fd = UniqueFd(ns.value());
  const std::string ns_path =
      "/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(state->ns_fd.get());
  struct stat st {};
  ::fstat(state->ns_fd.get(), &st);

  const std::string suffix = base36(static_cast<unsigned long>(::getpid())) +
                             random_chars(4, "0123456789abcdefghijklmnopqrstuvwxyz");
  state->veth = "imdsim" + suffix;
  state->nft_table = "imds_probe_sim_" + suffix;

  auto subnet = pick_ipv4_subnet();
  if (!subnet) return R::failure("--simulate-container: " + subnet.error().message);
  const std::string host4 = ipv4_text(subnet.value() + 1);
  const std::string cont4 = ipv4_text(subnet.value() + 2);
  const std::string net4 = ipv4_text(subnet.value()) + "/30";
  const std::string ula =
      "fd" + random_chars(2, "0123456789abcdef") + ":" + random_chars(4, "0123456789abcdef") + ":" +
      random_chars(4, "0123456789abcdef") + ":" + random_chars(4, "0123456789abcdef");
  const std::string host6 = ula + "::1";
  const std::string cont6 = ula + "::2";
  const std::string net6 = ula + "::/64";

  auto fail = [&](const std::string& what) { return R::failure("--simulate-container: " + what); };

  if (auto r = run_tool({"ip", "link", "add", state->veth, "type", "veth", "peer", "name", "eth0",
                         "netns", ns_path});
      !r)
    return fail(r.error().message);
  state->veth_created = true;

  std::string host_batch = "addr add " + host4 + "/30 dev " + state->veth + "\n";
  if (options.ipv6) host_batch += "addr add " + host6 + "/64 dev " + state->veth + " nodad\n";
  host_batch += "link set " + state->veth + " up\n";
  if (auto r = run_tool({"ip", "-batch", "-"}, host_batch); !r) return fail(r.error().message);

  std::string inner = "link set lo up\naddr add " + cont4 + "/30 dev eth0\n";
  if (options.ipv6) inner += "addr add " + cont6 + "/64 dev eth0 nodad\n";
  inner += "link set eth0 up\nroute add default via " + host4 + "\n";
  if (options.ipv6) inner += "route add default via " + host6 + "\n";  // family from the gateway
  if (auto r = run_tool({"nsenter", "--net=" + ns_path, "ip", "-batch", "-"}, inner); !r)
    return fail(r.error().message);

  // Wait until both ends report carrier: a SYN sent before that is lost, and its
  // retransmission comes a second later, as long as a whole connect timeout.
  auto link_up = [](std::vector<std::string> argv) {
    auto r = run_tool(argv);
    if (!r) return false;
    const auto doc = nlohmann::json::parse(r.value(), nullptr, false);
    return doc.is_array() && !doc.empty() && doc[0].is_object() &&
           doc[0].value("operstate", "") == "UP";
  };
  bool up = false;
  for (int i = 0; i < 200 && !up; ++i) {
    up = link_up({"ip", "-j", "link", "show", "dev", state->veth}) &&
         link_up({"nsenter", "--net=" + ns_path, "ip", "-j", "link", "show", "dev", "eth0"});
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!up) return fail("the veth pair " + state->veth + " did not come up within 2 s");

  // Forwarding: per device for IPv4 (the veth and the uplink towards the IMDS), globally
  // for IPv6 (the kernel has no per-device switch that forwarding honours). Old values are
  // restored on teardown.
  auto set_sysctl = [&](const std::string& path) -> std::optional<std::string> {
    const auto old = read_capped(path, 64);
    if (!old) return "cannot read " + path + ": " + errno_text(errno);
    const std::string value = trim(*old);
    if (value == "1") return std::nullopt;
    std::string error;
    if (!write_file(path, "1", error)) return error;
    state->sysctls.emplace_back(path, value);
    return std::nullopt;
  };
  std::vector<std::string> forward = {"/proc/sys/net/ipv4/conf/" + state->veth + "/forwarding"};
  if (auto dev = uplink_device(options.imds_v4)) {
    forward.push_back("/proc/sys/net/ipv4/conf/" + *dev + "/forwarding");
  } else {
    forward.emplace_back("/proc/sys/net/ipv4/ip_forward");
  }
  if (options.ipv6) forward.emplace_back("/proc/sys/net/ipv6/conf/all/forwarding");
  for (const auto& path : forward) {
    if (auto error = set_sysctl(path)) return fail(*error);
  }

  std::string nft = "table inet " + state->nft_table + " {\n";
  nft += "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n";
  nft += "    ip saddr " + net4 + " oifname != \"" + state->veth + "\" masquerade\n";
  if (options.ipv6)
    nft += "    ip6 saddr " + net6 + " oifname != \"" + state->veth + "\" masquerade\n";
  nft += "  }\n}\n";
  if (auto r = run_tool({"nft", "-f", "-"}, nft); !r) return fail(r.error().message);
  state->nft_created = true;

  sim->target_.name = "simulated";
  sim->target_.path = ns_path;
  sim->target_.inode = static_cast<std::uint64_t>(st.st_ino);
  sim->target_.source = TargetSource::simulated;
  return sim;
}

std::vector<std::string> SimulatedContainer::remove() {
  if (!state_) return {};
  auto errors = state_->teardown();
  SignalGuard::instance().remove(state_);
  state_.reset();
  return errors;
}

SimulatedContainer::~SimulatedContainer() { remove(); }

}  // namespace imds
