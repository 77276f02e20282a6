// run_tool(): runs ip / nft (no shell, fixed PATH, bounded output and time).
#include "subprocess.hpp"


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
extern char** environ;

namespace imds {

using namespace sys;

namespace {

constexpr std::size_t kMaxToolOutput = std::size_t{1024} * 1024;
constexpr auto kToolTimeout = std::chrono::seconds(10);
const char* const kToolPath = "/usr/sbin:/usr/bin:/sbin:/bin";

}  // namespace


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

}  // namespace imds
