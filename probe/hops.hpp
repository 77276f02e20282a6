// The hop-limit rules of IMDS.md as pure functions: the one place that says how far a
// token PUT response travels and how a distance is read from TTLs. The collector's
// prediction and inference both call these.
#pragma once

#include <optional>

#include "model.hpp"

namespace imds {

// A PUT response that arrives in the host namespace with TTL `ttl_at_host` (which equals
// the hop limit: nothing routes between the IMDS and the instance) loses one per forwarding
// hop and is dropped at 0, so it reaches a namespace `distance` hops further iff it is
// larger than the distance.
constexpr bool put_response_crosses(int ttl_at_host, int distance) {
  return ttl_at_host > distance;
}

// The hop limit a PUT response's TTL shows when it arrived `distance` hops from the host.
constexpr int hop_limit_from_ttl(int ttl_here, int distance) { return ttl_here + distance; }

// Distance of a namespace from the host, from the TTLs of the SYN-ACKs of the same IMDS
// address (never hop-limited) as they arrived in each; nullopt when it is not plausible.
constexpr std::optional<int> distance_from_handshakes(int host_ttl, int namespace_ttl) {
  const int d = host_ttl - namespace_ttl;
  if (d < 0 || d > kMaxHopLimit) return std::nullopt;
  return d;
}

}  // namespace imds
