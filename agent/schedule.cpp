// Scheduling decisions; see schedule.hpp.
#include "schedule.hpp"

#include <algorithm>
#include <cmath>
#include <iterator>

#include "observations.hpp"

namespace imds::agent {

CycleResult classify(const Diagnosis& d) {
  // Only the host's throttling backs the agent off: a container's 429/503 is that
  // container's verdict (often a metadata proxy in its path), not a reason to stop reporting.
  for (const auto& t : d.targets) {
    if (!t.target.is_host) continue;
    for (const auto& o : t.observations) {
      if (observations::throttled(o.result)) {
        return CycleResult::throttled;
      }
    }
  }
  if (d.inference.endpoint == EndpointState::unreachable) return CycleResult::error;
  return CycleResult::ok;
}

Millis Schedule::finished(CycleResult result, std::mt19937_64& rng) {
  if (result == CycleResult::ok) {
    failures_ = 0;
    backoff_ = Millis(0);
    const double spread = config_.jitter * static_cast<double>(config_.interval.count());
    std::uniform_real_distribution<double> dist(-spread, spread);
    const Millis delay(config_.interval.count() + static_cast<long>(dist(rng)));
    return std::max<Millis>(delay, config_.min_probe_gap);
  }
  ++failures_;
  // interval * 2^(failures-1) after errors: the first keeps the normal pace (a blip),
  // then it doubles; never more than backoff-max, never less than the interval.
  // Throttling (429/503) doubles at once: the service asked us to slow down.
  auto shift = std::min(failures_ - (result == CycleResult::throttled ? 0U : 1U), 20U);
  const Millis delay(config_.interval.count() * (1L << shift));
  backoff_ = std::min<Millis>(std::max<Millis>(delay, config_.interval), config_.backoff_max);
  backoff_ = std::max<Millis>(backoff_, config_.min_probe_gap);
  return backoff_;
}

bool Schedule::take_v1(SteadyTime now) {
  if (!config_.v1_interval) return false;
  if (!v1_soon_ && last_v1_ && now - *last_v1_ < *config_.v1_interval) return false;
  v1_forced_ = v1_soon_;
  v1_soon_ = false;
  last_v1_ = now;
  return true;
}

std::vector<NetnsTarget> select_window(const std::vector<NetnsTarget>& containers, std::size_t max,
                                       std::size_t cursor) {
  std::vector<NetnsTarget> out;
  if (containers.empty()) return out;
  const std::size_t n = std::min(max, containers.size());
  out.reserve(n);
  cursor %= containers.size();
  for (std::size_t i = 0; i < n; ++i) out.push_back(containers[(cursor + i) % containers.size()]);
  return out;
}

namespace {

bool same_namespace(const NetnsTarget& a, const NetnsTarget& b) {
  return a.inode == b.inode && a.path == b.path;
}

// Probed: in the Diagnosis with at least one request that was sent (or predicted).
bool probed_in(const NetnsTarget& t, const Diagnosis& d) {
  return std::any_of(d.targets.begin(), d.targets.end(), [&](const TargetObservations& o) {
    if (!same_namespace(o.target, t)) return false;
    return std::any_of(o.observations.begin(), o.observations.end(), [](const Observation& x) {
      return x.result.skip != SkipReason::not_started;
    });
  });
}

}  // namespace

std::size_t cursor_after(std::size_t present, std::size_t cursor,
                         const std::vector<NetnsTarget>& window, const Diagnosis& d) {
  if (present == 0) return 0;
  std::size_t past = 0;
  for (std::size_t i = 0; i < window.size(); ++i) {
    if (probed_in(window[i], d)) past = i + 1;
  }
  return (cursor % present + past) % present;
}

std::size_t affordable_namespaces(double available, double per_second,
                                  std::chrono::milliseconds max_wait, std::size_t host,
                                  std::size_t each) {
  const double budget =
      available + per_second * std::chrono::duration<double>(max_wait).count();
  if (each == 0 || budget < static_cast<double>(host)) return 0;
  return static_cast<std::size_t>((budget - static_cast<double>(host)) /
                                  static_cast<double>(each));
}

std::chrono::milliseconds permit_wait(double available, double per_second, std::size_t needed) {
  const double missing = static_cast<double>(needed) - available;
  if (missing <= 0.0 || per_second <= 0.0) return std::chrono::milliseconds{0};
  return std::chrono::milliseconds{static_cast<long>(std::ceil(missing / per_second * 1000.0))};
}

void DiscoveryRotation::discovered(std::size_t found, const std::vector<NetnsTarget>& kept) {
  if (found <= kept.size()) {  // everything fits: no rotation
    *this = DiscoveryRotation{};
    return;
  }
  found_ = found;
  slice_ = kept.size();
  std::vector<std::uint64_t> now;
  now.reserve(kept.size());
  for (const auto& t : kept) now.push_back(t.inode);
  std::sort(now.begin(), now.end());
  if (fresh_) {
    waiting_ = std::move(now);
    fresh_ = false;
    return;
  }
  // Namespaces of the slice that have gone no longer wait.
  std::vector<std::uint64_t> still;
  std::set_intersection(waiting_.begin(), waiting_.end(), now.begin(), now.end(),
                        std::back_inserter(still));
  waiting_ = std::move(still);
  if (waiting_.empty()) {
    start_ = (start_ + slice_) % found_;
    fresh_ = true;
  }
}

void DiscoveryRotation::probed(const Diagnosis& d) {
  if (found_ == 0 || fresh_) return;
  for (const auto& t : d.targets) {
    if (t.target.is_host) continue;
    const bool sent = std::any_of(t.observations.begin(), t.observations.end(),
                                  [](const Observation& x) {
                                    return x.result.skip != SkipReason::not_started;
                                  });
    if (!sent) continue;
    const auto at = std::lower_bound(waiting_.begin(), waiting_.end(), t.target.inode);
    if (at != waiting_.end() && *at == t.target.inode) waiting_.erase(at);
  }
  if (waiting_.empty()) {
    start_ = (start_ + slice_) % found_;
    fresh_ = true;
  }
}

}  // namespace imds::agent
