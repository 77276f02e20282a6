// `imds-probe callers --watch`: listens to the IMDS traffic of this namespace for a while
// (packet sockets, CAP_NET_RAW) and says who called the IMDS and how, attributing forwarded
// traffic to the container namespace that owns its source address. Sends nothing itself.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "callers.hpp"
#include "endpoint.hpp"
#include "result.hpp"
#include "targets.hpp"

namespace imds {

struct WatchOptions {
  std::chrono::milliseconds duration{std::chrono::seconds(60)};
  std::vector<ImdsAddress> imds;  // whose traffic is watched (both families by default)
  DiscoveryConfig discovery;      // which namespaces the source addresses are looked up in
};

struct WatchReport {
  CallerBook book;
  ExchangeTracker::Counters counters;
  std::chrono::milliseconds watched{};
  std::size_t namespaces = 0;  // container namespaces whose addresses were known
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

 private:
  std::map<std::pair<Family, std::array<std::uint8_t, 16>>, CallerPlace> by_address_;
  std::size_t namespaces_ = 0;
};

// Watches for `options.duration` (or until *stop). Errors: no packet socket (CAP_NET_RAW).
Result<WatchReport> watch_callers(const WatchOptions& options, const std::atomic<bool>* stop);

nlohmann::json callers_to_json(const WatchReport& report);
std::string render_callers_text(const WatchReport& report);

}  // namespace imds
