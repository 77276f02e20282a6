// The simulated container: a temporary bridge namespace one hop from the host, undone
// exactly (also on SIGINT/SIGTERM/SIGHUP).
#include "simulated.hpp"


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
#include "subprocess.hpp"
#include "sys.hpp"

extern char** environ;
namespace imds {

using namespace sys;


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
  auto link_up = [](const std::vector<std::string>& argv) {
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
