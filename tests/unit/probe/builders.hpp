// Hand-made observations for the probe's unit tests: single results, and a small model of
// an instance (`World`) that produces what collection would observe from a namespace at a
// given distance, following IMDS.md. Tests then check that inference recovers the world.
#pragma once

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "findings.hpp"
#include "inference.hpp"
#include "model.hpp"

namespace imds::test {

inline constexpr const char* kProbePath = "/latest/meta-data/instance-id";
inline constexpr const char* kTokenPath = "/latest/api/token";
inline constexpr const char* kListingPath = "/latest/meta-data/";

inline HttpResult http(int status, std::string body = {},
                       std::optional<std::string> server = std::string("EC2ws")) {
  HttpResult r;
  r.outcome = Outcome::http;
  r.status = status;
  r.connected = true;
  r.server = std::move(server);
  r.body = std::move(body);
  r.latency = std::chrono::microseconds{900};
  return r;
}

inline HttpResult token(std::optional<int> ttl = std::nullopt) {
  HttpResult r = http(200);
  r.ttl = ttl;
  r.token_ttl_seconds = 60;
  return r;
}

inline HttpResult failed(Outcome outcome, bool connected = false) {
  HttpResult r;
  r.outcome = outcome;
  r.connected = connected;
  r.latency = std::chrono::microseconds{outcome == Outcome::timeout ? 2'000'000 : 300};
  if (outcome == Outcome::timeout) r.error = "Operation timed out after 2000 milliseconds";
  if (outcome == Outcome::refused) r.error = "Connection refused";
  if (outcome == Outcome::unreachable) r.error = "Network is unreachable";
  if (outcome == Outcome::reset) r.error = "Connection reset by peer";
  return r;
}

inline HttpResult skipped(SkipReason reason) {
  HttpResult r;
  r.outcome = Outcome::skipped;
  r.skip = reason;
  return r;
}

inline HttpResult predicted(int host_ttl, int distance) {
  HttpResult r = skipped(SkipReason::predicted_drop);
  r.prediction = DropPrediction{host_ttl, distance};
  r.connected = true;
  return r;
}

inline Observation observation(Step step, HttpResult result, Family family = Family::v4,
                               std::string path = {}) {
  if (path.empty()) {
    path = step == Step::token_put ? kTokenPath : step == Step::listing ? kListingPath : kProbePath;
  }
  return Observation{step, family, std::move(path), std::move(result)};
}

// A target with nothing in it yet; add observations with `with`.
inline TargetObservations target(std::string name, std::optional<int> distance,
                                 bool is_host = false) {
  TargetObservations t;
  t.target.name = std::move(name);
  t.target.is_host = is_host;
  t.target.source = is_host ? TargetSource::host : TargetSource::netns_dir;
  t.target.path = is_host ? "/proc/self/ns/net" : "/run/netns/" + t.target.name;
  t.target.inode = is_host ? 4026531840ULL : 4026532000ULL + t.target.name.size();
  t.distance = distance;
  return t;
}

inline TargetObservations host_target() { return target("host", 0, true); }

inline TargetObservations with(TargetObservations t, std::vector<Observation> observations) {
  for (auto& o : observations) t.observations.push_back(std::move(o));
  return t;
}

// The instance being probed, as the IMDS would present it.
struct World {
  HttpTokens tokens = HttpTokens::optional;
  int hop_limit = 1;
  bool endpoint_enabled = true;
  bool ipv6 = false;
  bool tags = false;
  bool packet_ttl = true;  // collection could read TTLs (CAP_NET_RAW)
  bool probe_v1 = true;
  bool reset_dropped_puts = false;  // a dropped PUT ends in RST instead of a timeout
  std::string instance_id = "i-0123456789abcdef0";
  std::string ami_id = "ami-0abcdef1234567890";
  std::string region = "us-east-1";
  std::string availability_zone = "us-east-1a";
};

// What collection observes from a namespace `distance` hops from the host on one family.
inline std::vector<Observation> family_observations(const World& w, int distance, bool is_host,
                                                    Family family) {
  std::vector<Observation> out;
  const auto add = [&](Step step, HttpResult r, std::string path = {}) {
    if (w.packet_ttl && r.connected) r.handshake_ttl = 255 - distance;
    out.push_back(observation(step, std::move(r), family, std::move(path)));
  };
  if (family == Family::v6 && !w.ipv6) {
    // The listener is closed while IPv6 is disabled: every request is refused.
    add(Step::token_put, failed(Outcome::refused));
    add(Step::v2_get, skipped(SkipReason::no_token));
    add(Step::listing, skipped(SkipReason::no_token));
    add(Step::v1_get, w.probe_v1 ? failed(Outcome::refused) : skipped(SkipReason::v1_disabled));
    return out;
  }
  const SkipReason no_token = SkipReason::no_token;
  bool have_token = false;
  if (!w.endpoint_enabled) {
    add(Step::token_put, http(403));
  } else if (w.hop_limit > distance) {
    add(Step::token_put,
        token(w.packet_ttl ? std::optional<int>(w.hop_limit - distance) : std::nullopt));
    have_token = true;
  } else if (w.packet_ttl && distance >= 1) {
    add(Step::token_put, predicted(w.hop_limit, distance));
  } else {
    add(Step::token_put, failed(w.reset_dropped_puts ? Outcome::reset : Outcome::timeout, true));
  }
  add(Step::v2_get, have_token ? http(200, w.instance_id) : skipped(no_token));
  std::string listing = "ami-id\nhostname\ninstance-id\nplacement/\n";
  if (w.tags) listing += "tags/\n";
  add(Step::listing, have_token ? http(200, listing) : skipped(no_token));
  if (is_host) {
    const std::vector<std::pair<std::string, std::string>> identity = {
        {"/latest/meta-data/ami-id", w.ami_id},
        {"/latest/meta-data/placement/region", w.region},
        {"/latest/meta-data/placement/availability-zone", w.availability_zone},
    };
    for (const auto& [path, value] : identity) {
      add(Step::identity, have_token ? http(200, value) : skipped(no_token), path);
    }
  }
  if (!w.probe_v1) {
    add(Step::v1_get, skipped(SkipReason::v1_disabled));
  } else if (!w.endpoint_enabled) {
    add(Step::v1_get, http(403));
  } else if (w.tokens == HttpTokens::required) {
    add(Step::v1_get, http(401, "<?xml version=\"1.0\"?><title>401 - Unauthorized</title>"));
  } else {
    add(Step::v1_get, http(200, w.instance_id));
  }
  return out;
}

inline TargetObservations observe(const World& w, TargetObservations t) {
  const int distance = t.distance.value_or(1);
  // Read before t is moved into with(): its arguments are evaluated in no fixed order.
  const bool is_host = t.target.is_host;
  // Both families, as collection does: a verdict that forgets one cannot be tested.
  t = with(std::move(t), family_observations(w, distance, is_host, Family::v4));
  t = with(std::move(t), family_observations(w, distance, is_host, Family::v6));
  return t;
}

inline TargetObservations observe_host(const World& w) { return observe(w, host_target()); }
inline TargetObservations observe_container(const World& w, std::string name, int distance) {
  return observe(w, target(std::move(name), distance));
}

// A namespace whose packets to the IMDS go nowhere: every request fails the same way.
inline TargetObservations cut_off(TargetObservations t, Outcome outcome) {
  for (Step step : {Step::token_put, Step::v2_get, Step::listing, Step::v1_get}) {
    t.observations.push_back(observation(step, failed(outcome)));
  }
  return t;
}

inline Diagnosis diagnosis(std::vector<TargetObservations> targets, const World& w = {}) {
  Diagnosis d;
  d.tool_version = "0.1.0";
  d.started_at = "2026-11-29T02:00:00Z";
  d.duration = std::chrono::milliseconds{42};
  d.endpoint_v4 = "http://169.254.169.254";
  d.endpoint_v6 = "http://[fd00:ec2::254]";
  d.v1_probed = w.probe_v1;
  d.packet_ttl_available = w.packet_ttl;
  d.targets = std::move(targets);
  return d;
}

// Runs the pure pipeline the way diagnose() does: inference, then findings.
inline Diagnosis finish(Diagnosis d) {
  d.inference = infer(d);
  d.findings = make_findings(d);
  return d;
}

inline Diagnosis world_diagnosis(const World& w,
                                 const std::vector<std::pair<std::string, int>>& containers = {}) {
  std::vector<TargetObservations> targets{observe_host(w)};
  for (const auto& [name, distance] : containers) {
    targets.push_back(observe_container(w, name, distance));
  }
  return finish(diagnosis(std::move(targets), w));
}

inline const Finding* find_finding(const Diagnosis& d, std::string_view id,
                                   std::string_view target = {}) {
  for (const auto& f : d.findings) {
    const bool about =
        target.empty() || std::any_of(f.subjects.begin(), f.subjects.end(),
                                      [&](const auto& s) { return s.name == target; });
    if (f.id == id && about) return &f;
  }
  return nullptr;
}

inline const TargetVerdict* verdict(const Diagnosis& d, std::string_view name) {
  for (const auto& v : d.inference.targets) {
    if (v.target == name) return &v;
  }
  return nullptr;
}

}  // namespace imds::test
