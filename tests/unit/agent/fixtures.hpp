// Hand-made Diagnosis values for the agent's unit tests: no network, no engine.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "model.hpp"

namespace imds::agent::testing {

struct FakeContainer {
  std::string name;
  std::uint64_t inode;
  Tristate imdsv2 = Tristate::yes;
  int distance = 1;
};

inline NetnsTarget container_target(const FakeContainer& c) {
  NetnsTarget t;
  t.name = c.name;
  t.path = "/run/netns/" + c.name;
  t.inode = c.inode;
  t.source = TargetSource::netns_dir;
  t.container_id = std::string(64, 'a').replace(0, c.name.size(), c.name);
  return t;
}

// A verdict whose IPv4 headline is `imdsv2`; IPv6 not probed.
inline TargetVerdict verdict(std::string name, int distance, Tristate imdsv2, std::string summary) {
  TargetVerdict v;
  v.target = std::move(name);
  v.distance = distance;
  v.v4.probed = true;
  v.v4.reachable = Tristate::yes;
  v.v4.imdsv2 = imdsv2;
  v.v4.summary = std::move(summary);
  return v;
}

inline Diagnosis diagnosis(HttpTokens tokens, HopLimit hop,
                           const std::vector<FakeContainer>& containers = {},
                           EndpointState endpoint = EndpointState::enabled) {
  Diagnosis d;
  d.endpoint_v4 = "http://169.254.169.254";
  TargetObservations host;
  host.target.name = "host";
  host.target.path = "/proc/self/ns/net";
  host.target.inode = 4026531840;
  host.target.is_host = true;
  d.targets.push_back(host);
  d.inference.endpoint = endpoint;
  if (endpoint == EndpointState::unreachable) {
    d.inference.unreachable_reason = UnreachableReason::refused;
  }
  d.inference.http_tokens = tokens;
  d.inference.hop_limit = hop;
  d.inference.targets.push_back(verdict("host", 0, Tristate::yes, "gets a token"));
  for (const auto& c : containers) {
    TargetObservations t;
    t.target = container_target(c);
    t.distance = c.distance;
    d.targets.push_back(t);
    d.inference.targets.push_back(
        verdict(c.name, c.distance, c.imdsv2,
                c.imdsv2 == Tristate::yes ? "gets a token" : "no token (PUT response dropped)"));
  }
  return d;
}

inline HopLimit exact(int n) {
  HopLimit h;
  h.exact = n;
  h.lower = h.upper = n;
  h.method = HopLimitMethod::packet_ttl;
  return h;
}

inline HopLimit bounds(int lower, int upper) {
  HopLimit h;
  h.lower = lower;
  h.upper = upper;
  h.method = HopLimitMethod::bounds;
  return h;
}

}  // namespace imds::agent::testing
