// The agent's metrics in the Prometheus text format (0.0.4), through prometheus-cpp's core
// registry and text serializer: every metric the agent exposes, on the socket or in the
// node_exporter textfile, is added to one Exposition and written by the library.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <prometheus/registry.h>

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

// One scrape's worth of metrics. The registry checks metric and label names (it throws
// std::invalid_argument for a bad one, a bug of ours) and keeps each family's samples
// together; label values are made valid UTF-8 and bounded here, escaped by the serializer.
class Exposition {
 public:
  using Labels = std::vector<std::pair<std::string, std::string>>;
  void gauge(const std::string& name, const std::string& help, double value,
             const Labels& labels = {});
  void counter(const std::string& name, const std::string& help, double value,
               const Labels& labels = {});
  void histogram(const std::string& name, const std::string& help, const DurationHistogram& h);
  // The text format, families in the registry's order.
  [[nodiscard]] std::string text() const;

  // The longest label value written, in bytes (a character split by the cut becomes U+FFFD).
  static constexpr std::size_t kMaxLabelValue = 256;

 private:
  prometheus::Registry registry_;
};

struct ProbeStats {
  std::uint64_t cycles = 0;     // probes that produced a Diagnosis
  std::uint64_t errors = 0;     // probes that failed or saw the IMDS unreachable/throttling
  std::uint64_t throttled = 0;  // probes that saw 429/503
  std::uint64_t confirm_probes = 0;  // of `cycles`: re-probes of suspected changes only
  std::uint64_t consecutive_errors = 0;
  std::string last_error;
  DurationHistogram durations;
};

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

// The posture (options, targets), the probe's own counters and, with `engine`, the request
// bound and discovery.
void add_posture_metrics(Exposition& out, const Snapshot& snapshot, const HostImdsv2& host_imdsv2,
                         const ProbeStats& stats, std::string_view version,
                         const EngineStats* engine = nullptr);

// add_posture_metrics alone, as text.
std::string render_metrics(const Snapshot& snapshot, const HostImdsv2& host_imdsv2,
                           const ProbeStats& stats, std::string_view version,
                           const EngineStats* engine = nullptr);

}  // namespace imds::agent
