// `imds-probe callers --watch`: listens to the IMDS traffic of this namespace for a while
// (packet sockets, CAP_NET_RAW) and says who called the IMDS and how, attributing forwarded
// traffic to the container namespace that owns its source address. Sends nothing itself.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "callers.hpp"
#include "endpoint.hpp"
#include "netns.hpp"
#include "result.hpp"
#include "targets.hpp"

namespace imds {

struct WatchOptions {
  std::chrono::milliseconds duration{std::chrono::seconds(60)};
  std::vector<ImdsAddress> imds;  // whose traffic is watched (both families by default)
  DiscoveryConfig discovery;      // which namespaces the source addresses are looked up in
  // Requests whose User-Agent product is this are not booked (the agent's own probes).
  std::string ignore_product;
  // Look up the process behind each new connection (NETLINK_SOCK_DIAG, /proc/*/fd).
  bool processes = true;
  // The connection table's bounds (memory: a few hundred bytes per connection followed).
  ExchangeTracker::Limits limits;
};

struct WatchReport {
  CallerBook book;
  ExchangeTracker::Counters counters;
  std::uint64_t processes_found = 0;      // connections whose owning process was found
  std::uint64_t processes_not_found = 0;  // ... was not (closed first, gone, not visible)
  std::uint64_t processes_not_looked_up = 0;  // over the per-step bound of lookups
  std::chrono::milliseconds watched{};
  std::size_t namespaces = 0;  // container namespaces whose addresses were known
  std::uint64_t ignored = 0;   // requests of WatchOptions::ignore_product
  std::uint64_t kernel_drops = 0;  // packets the kernel dropped (socket buffer full)
  std::vector<std::string> notes;
};

// The addresses of the container namespaces, for attributing forwarded traffic: read from
// each namespace with a NETLINK_ROUTE dump made inside it. Bounded: at most 64 addresses per
// namespace are kept.
class NamespaceAddresses {
 public:
  void refresh(const DiscoveryConfig& discovery, std::vector<std::string>* notes);
  [[nodiscard]] CallerPlace place_of(const FlowOrigin& origin) const;
  [[nodiscard]] std::size_t namespaces() const noexcept { return namespaces_; }
  // The namespace file of a mapped namespace (by its inode), to look a socket up in it.
  [[nodiscard]] const std::string* path_of(std::uint64_t inode) const;

 private:
  std::map<std::pair<Family, std::array<std::uint8_t, 16>>, CallerPlace> by_address_;
  std::map<std::uint64_t, std::string> paths_;
  std::size_t namespaces_ = 0;
};

// A watch in steps, for a caller that runs it on a thread of its own (imds-agent) or for a
// while (watch_callers). Not thread-safe: one thread calls everything.
class CallerWatcher {
 public:
  // Opens the packet sockets (CAP_NET_RAW) and maps the container namespaces' addresses.
  static Result<std::unique_ptr<CallerWatcher>> open(WatchOptions options);
  // Waits up to `wait` for packets, reads what came and books the exchanges that ended.
  void step(std::chrono::milliseconds wait);
  // Books what is still waiting as it would end (its answer time runs out): the end of a watch.
  void settle();
  // Reads the namespaces' addresses again (new containers, addresses given to others).
  void refresh_places();
  void forget_before(std::chrono::system_clock::time_point before) { report_.book.forget_before(before); }
  // What was seen so far (counters and time watched brought up to date).
  [[nodiscard]] WatchReport report();

  struct Capture {
    UniqueFd fd;
    int protocol;
  };
  CallerWatcher(WatchOptions options, std::vector<Capture> captures, std::vector<SocketName> ends);

 private:
  void book(const std::vector<Exchange>& exchanges);
  void look_up_processes();

  WatchOptions options_;
  NetnsSocketFactory factory_;
  std::vector<Capture> captures_;
  ExchangeTracker tracker_;
  NamespaceAddresses places_;
  WatchReport report_;
  WatchClock::time_point start_;
  std::chrono::system_clock::time_point wall_start_;
  WatchClock::time_point refreshed_;
};

// Watches for `options.duration` (or until *stop). Errors: no packet socket (CAP_NET_RAW).
Result<WatchReport> watch_callers(const WatchOptions& options, const std::atomic<bool>* stop);

// A caller that breaks under HttpTokens=required or loses its token PUTs.
bool needs_attention(const CallerStats& s);
// The report's callers, those that need attention first, each group in the book's order.
std::vector<std::pair<const CallerKey*, const CallerStats*>> callers_in_order(
    const WatchReport& report);

// The record as JSON (man imds-probe, CALLERS): at most `max_listed` callers, in
// callers_in_order's order, the rest counted in "callers_omitted".
nlohmann::json callers_to_json(const WatchReport& report,
                               std::size_t max_listed = std::numeric_limits<std::size_t>::max());
// The text report of a callers document (callers_to_json, or imds-agent's GET /v1/callers).
// Throws nlohmann::json::exception when a value has the wrong type.
std::string render_callers_text(const nlohmann::json& doc);

}  // namespace imds
