// When to probe next and what: interval with jitter, exponential backoff on errors and
// throttling, rare tokenless GETs, and spreading big namespace sets over cycles.
// Pure (time and randomness come in as arguments), so it is unit-tested directly.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "config.hpp"
#include "model.hpp"

namespace imds::agent {

using SteadyTime = std::chrono::steady_clock::time_point;

enum class CycleResult { ok, throttled, error };

// What a Diagnosis says about the health of the probing itself: throttled only when the
// host namespace saw 429/503.
CycleResult classify(const Diagnosis& d);

class Schedule {
 public:
  explicit Schedule(AgentConfig config) : config_(std::move(config)) {}
  void reconfigure(const AgentConfig& config) { config_ = config; }

  // Records a finished cycle; returns the delay until the next one (interval +- jitter,
  // or the backoff after consecutive errors/throttling, capped at backoff-max).
  Millis finished(CycleResult result, std::mt19937_64& rng);
  [[nodiscard]] Millis backoff() const { return backoff_; }
  [[nodiscard]] unsigned consecutive_failures() const { return failures_; }

  // Whether this cycle sends tokenless GETs; marks them as sent when it does.
  bool take_v1(SteadyTime now);
  // The next cycle sends them (unless v1-interval is never): another option just changed
  // or the IMDS came back, so HttpTokens may have changed too.
  void want_v1_soon() { v1_soon_ = true; }

 private:
  AgentConfig config_;
  unsigned failures_ = 0;
  Millis backoff_{0};
  std::optional<SteadyTime> last_v1_;
  bool v1_soon_ = false;
};

// The container namespaces one cycle probes: all when they fit in `max`, otherwise the
// window at `cursor` of a rotation over them, so each is probed in turn. Advances cursor.
std::vector<NetnsTarget> select_window(const std::vector<NetnsTarget>& containers, std::size_t max,
                                       std::size_t& cursor);

}  // namespace imds::agent
