// When to probe next and what: interval with jitter, exponential backoff on errors and
// throttling, rare tokenless GETs, and spreading big namespace sets over cycles.
// Pure (time and randomness come in as arguments), so it is unit-tested directly.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
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
  // The last take_v1() that said yes did so because of want_v1_soon(), not the interval.
  [[nodiscard]] bool last_v1_forced() const { return v1_forced_; }

 private:
  AgentConfig config_;
  unsigned failures_ = 0;
  Millis backoff_{0};
  std::optional<SteadyTime> last_v1_;
  bool v1_soon_ = false;
  bool v1_forced_ = false;
};

// The container namespaces one cycle asks for: at most `max`, from `cursor` on in a rotation
// over them, so each is probed in turn (all of them when they fit, still starting there).
std::vector<NetnsTarget> select_window(const std::vector<NetnsTarget>& containers, std::size_t max,
                                       std::size_t cursor);

// The cursor of the next cycle: just past the last namespace of `window` (from
// select_window(present, max, cursor)) that the Diagnosis probed. Those the engine deferred
// (left out, or never started) are at the front of the next window. A cycle that probed
// none of them keeps the cursor.
std::size_t cursor_after(std::size_t present, std::size_t cursor,
                         const std::vector<NetnsTarget>& window, const Diagnosis& d);

// How many container namespaces one cycle can afford under the request-rate bound: the host
// needs `host` permits, each container `each`; `available` are held now and the cycle may
// wait up to `max_wait` for more at `per_second`.
std::size_t affordable_namespaces(double available, double per_second,
                                  std::chrono::milliseconds max_wait, std::size_t host,
                                  std::size_t each);
// How long taking `needed` permits waits when `available` are held now.
std::chrono::milliseconds permit_wait(double available, double per_second, std::size_t needed);

// When discovery finds more namespaces than the agent keeps at a time, which of them it
// keeps (DiscoveryConfig::start): the same slice until every namespace in it has been
// probed or has gone, then the next one, so the tail is reached instead of cut off.
class DiscoveryRotation {
 public:
  [[nodiscard]] std::size_t start() const { return start_; }
  // After each discovery: `found` namespaces in all, `kept` of them from start().
  void discovered(std::size_t found, const std::vector<NetnsTarget>& kept);
  // After each cycle: the namespaces it probed.
  void probed(const Diagnosis& d);

 private:
  std::size_t start_ = 0;
  std::size_t found_ = 0;
  std::size_t slice_ = 0;
  bool fresh_ = true;                 // the next discovery starts a new slice
  std::vector<std::uint64_t> waiting_;  // inodes of the slice not probed yet (sorted)
};

}  // namespace imds::agent
