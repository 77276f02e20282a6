// Prometheus text exposition (format 0.0.4) of the agent's view and its own counters.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "request_rate.hpp"
#include "snapshot.hpp"

namespace imds::agent {

// Probe durations, cumulative buckets as Prometheus wants them.
class DurationHistogram {
 public:
  static constexpr std::array<double, 10> kBounds = {0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30};
  void observe(std::chrono::duration<double> d);
  [[nodiscard]] std::uint64_t count() const { return count_; }
  [[nodiscard]] double sum() const { return sum_; }
  [[nodiscard]] std::uint64_t bucket(std::size_t i) const { return buckets_.at(i); }

 private:
  std::array<std::uint64_t, kBounds.size()> buckets_{};
  std::uint64_t count_ = 0;
  double sum_ = 0;
};

struct ProbeStats {
  std::uint64_t cycles = 0;     // probes that produced a Diagnosis
  std::uint64_t errors = 0;     // probes that failed or saw the IMDS unreachable/throttling
  std::uint64_t throttled = 0;  // probes that saw 429/503
  std::uint64_t consecutive_errors = 0;
  std::string last_error;
  DurationHistogram durations;
};

// `host_imdsv2`: the host namespace's own verdict (nullopt: unknown).
// Whether the host namespace gets IMDSv2, per family (nullopt: not known).
struct HostImdsv2 {
  std::optional<bool> ipv4;
  std::optional<bool> ipv6;
};

// What the production engine knows beyond one Diagnosis: the request-rate bound and how
// much discovery found.
struct EngineStats {
  RequestRateStats requests;
  std::size_t namespaces_found = 0;      // by the last discovery
  std::size_t namespaces_not_kept = 0;   // of those, beyond what one discovery keeps
  DiscoveryLook look;                    // what the last discovery looked at
};

std::string render_metrics(const Snapshot& snapshot, const HostImdsv2& host_imdsv2,
                           const ProbeStats& stats, std::string_view version,
                           const EngineStats* engine = nullptr);

// Label value escaping of the text format: backslash, double quote, newline.
std::string escape_label_value(std::string_view v);

}  // namespace imds::agent
