// Collection: runs every request of every target namespace concurrently on one curl multi
// handle, reads SYN-ACK and response TTLs with packet sockets, and returns plain Observations.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model.hpp"
#include "request_rate.hpp"

namespace imds {

inline constexpr std::size_t kMaxTargets = 4096;
// The most requests one namespace sends: per family a token PUT, a GET with the token, the
// listing, three identity GETs (host only) and a tokenless GET; two families.
inline constexpr std::size_t kMaxRequestsPerTarget = 14;

struct CollectConfig {
  // Base URLs without a path, IP addresses only (parse_endpoint in endpoint.hpp). --endpoint
  // may replace them (e.g. http://127.0.0.1:8080); the packet-socket filter follows the
  // address and port given here.
  std::string endpoint_v4 = "http://169.254.169.254";
  std::string endpoint_v6 = "http://[fd00:ec2::254]";
  bool probe_v6 = true;
  bool probe_v1 = true;        // tokenless GET (counts in MetadataNoToken)
  bool probe_listing = true;   // GET /latest/meta-data/ (tags/ or not)
  bool probe_identity = true;  // host only: ami-id, placement/region, placement/availability-zone
  std::string probe_path = "/latest/meta-data/instance-id";
  int token_ttl_seconds = 60;  // 1..21600
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds request_timeout{2000};  // per request, from its start
  std::chrono::milliseconds deadline{8000};         // hard bound for the whole run
  bool packet_ttl = true;               // try AF_PACKET (needs CAP_NET_RAW); silent fallback
  bool exact_hop_limit_search = false;  // IP_MINTTL binary search from the host (no privileges)
  std::chrono::milliseconds search_timeout{500};  // per PUT of the search
  std::size_t max_body_bytes = std::size_t{64} * 1024;
  std::size_t max_parallel = 64;  // concurrent connections (far below the 1024 pps limit)
  // When set, every request takes a permit from it (also the IP_MINTTL search), and it may
  // be shared: the agent keeps one across cycles. A namespace starts only once the permits
  // for all its requests (planned_requests) are taken, so none is left half-probed by the
  // bound; those unused are given back. Namespaces whose permits would come too late for
  // the deadline are not started (SkipReason::not_started) and counted as deferred.
  std::shared_ptr<RequestBucket> request_bucket;
  // The User-Agent of every request; "" is "imds-probe/VERSION" (the agent says imds-agent,
  // so that its passive caller watch can leave its own requests out).
  std::string user_agent;
};

// The most requests collect() sends from one namespace with `config` (the search aside).
std::size_t planned_requests(const CollectConfig& config, bool is_host);

struct CollectResult {
  // One entry per input target, same order. Each has, per probed family (v4, then v6 when
  // probe_v6), in this order: token_put, v2_get, listing, identity x3 (host with
  // probe_identity only), v1_get. Requests not sent are present as Outcome::skipped with
  // HttpResult::skip saying why (SkipReason); a token PUT aborted because the host's packet
  // TTLs prove its response would be dropped is SkipReason::predicted_drop with the
  // DropPrediction. Requests in flight at the deadline end as Outcome::timeout with
  // cut_by_deadline. distance is set here and only here (hops.hpp; host: 0).
  std::vector<TargetObservations> targets;
  bool packet_ttl_available = false;      // at least one packet socket could be opened
  std::optional<int> searched_hop_limit;  // IP_MINTTL search result (exact_hop_limit_search)
  ProxyEnvironment proxy;                 // from this process's environment
};

// Never throws for network or namespace failures: those are values in the result
// (Observation outcomes, TargetObservations::error). Throws std::invalid_argument for an
// unusable configuration (bad endpoint URL, more than kMaxTargets targets, a probe_path
// that is forbidden, token TTL out of range, a request bucket whose burst is smaller than
// one namespace's requests).
CollectResult collect(const CollectConfig& config, const std::vector<NetnsTarget>& targets);

// Proxy variables that would send SDK/curl traffic for http://169.254.169.254 to a proxy:
// http_proxy, HTTP_PROXY, all_proxy, ALL_PROXY (first one set wins), and whether
// no_proxy/NO_PROXY exempts 169.254.169.254 (exact, "*", domain-suffix or CIDR match).
ProxyEnvironment proxy_environment(const std::function<const char*(const char*)>& getenv_fn);
ProxyEnvironment collect_proxy_environment();  // proxy_environment(::getenv)

// True for paths a probe must never request: they carry secrets
// (iam/security-credentials, identity-credentials, user-data).
bool is_forbidden_path(std::string_view path);

}  // namespace imds
