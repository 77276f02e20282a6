// Reading observations: the small predicates that inference and findings share. Pure,
// internal to the core library.
#pragma once

#include <algorithm>
#include <array>
#include <string_view>
#include <vector>

#include "model.hpp"

namespace imds::observations {

inline constexpr std::string_view kImdsServer = "EC2ws";
inline constexpr std::array kFamilies = {Family::v4, Family::v6};

inline bool answered(const HttpResult& r) { return r.outcome == Outcome::http; }
inline bool attempted(const HttpResult& r) { return r.outcome != Outcome::skipped; }
inline bool from_imds(const HttpResult& r) {
  return answered(r) && r.server && *r.server == kImdsServer;
}
inline bool ok(const HttpResult& r) { return answered(r) && r.status == 200; }
inline bool throttled(const HttpResult& r) {
  return answered(r) && (r.status == 429 || r.status == 503);
}

inline bool predicted_drop(const HttpResult& r) {
  return r.outcome == Outcome::skipped && r.skip == SkipReason::predicted_drop;
}

// What the overall deadline cut: it says nothing about the IMDS.
inline bool cut_short(const HttpResult& r) {
  return r.cut_by_deadline || (r.outcome == Outcome::skipped && r.skip == SkipReason::not_started);
}

// How a token PUT's answer was lost, if it was: what a hop limit that is too low looks like
// from the caller's side (a read timeout after the handshake, once seen as ECONNRESET).
inline PutDrop put_drop(const HttpResult& r) {
  if (predicted_drop(r)) return PutDrop::predicted;
  if (r.outcome == Outcome::reset) return PutDrop::reset;
  if (r.outcome == Outcome::timeout && r.connected && !r.cut_by_deadline) return PutDrop::timeout;
  return PutDrop::none;
}

inline const Observation* find(const TargetObservations& t, Step step, Family family) {
  for (const auto& o : t.observations) {
    if (o.step == step && o.family == family) return &o;
  }
  return nullptr;
}

inline const TargetObservations* host_of(const Diagnosis& d) {
  for (const auto& t : d.targets) {
    if (t.target.is_host) return &t;
  }
  return nullptr;
}

// Host first, then the others in their order: host evidence is the most direct.
inline std::vector<const TargetObservations*> host_first(const Diagnosis& d) {
  std::vector<const TargetObservations*> out;
  for (const auto& t : d.targets) {
    if (t.target.is_host) out.push_back(&t);
  }
  for (const auto& t : d.targets) {
    if (!t.target.is_host) out.push_back(&t);
  }
  return out;
}

// Something at the IMDS address talked to this namespace over `f`: a handshake (also the
// one behind a predicted drop) or an HTTP answer.
inline bool reached(const TargetObservations& t, Family f) {
  return std::any_of(t.observations.begin(), t.observations.end(), [f](const Observation& o) {
    const HttpResult& r = o.result;
    return o.family == f && (answered(r) || r.connected || r.outcome == Outcome::reset ||
                             predicted_drop(r));
  });
}

}  // namespace imds::observations
