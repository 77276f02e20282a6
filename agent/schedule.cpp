// Scheduling decisions; see schedule.hpp.
#include "schedule.hpp"

#include <algorithm>

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
  v1_soon_ = false;
  last_v1_ = now;
  return true;
}

std::vector<NetnsTarget> select_window(const std::vector<NetnsTarget>& containers, std::size_t max,
                                       std::size_t& cursor) {
  if (containers.size() <= max) return containers;
  std::vector<NetnsTarget> out;
  out.reserve(max);
  cursor %= containers.size();
  for (std::size_t i = 0; i < max; ++i) out.push_back(containers[(cursor + i) % containers.size()]);
  cursor = (cursor + max) % containers.size();
  return out;
}

}  // namespace imds::agent
