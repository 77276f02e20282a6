// The verdict core against a reference it does not share: every combination of the
// instance's options, the namespace's distance and address families, what the probe could
// send and see, and how a lost PUT looks. The observations are made here the way collection
// makes them (probe/collect.hpp); the expected verdicts come from the small rule in
// `Expected` below, written from IMDS.md and not from the code under test.
#include <gtest/gtest.h>

#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "findings.hpp"
#include "inference.hpp"
#include "model.hpp"
#include "render.hpp"

namespace imds {
namespace {

enum class V4 { routed, blackholed };
enum class V6 {
  present,   // the instance serves IPv6 and the namespace routes to it
  disabled,  // HttpProtocolIpv6=disabled: refused everywhere
  no_route,  // the instance serves IPv6, the namespace has no IPv6 route
};
enum class Drop { timeout, reset };

struct Case {
  HttpTokens tokens = HttpTokens::optional;
  int hop_limit = 1;
  int distance = 0;
  V4 v4 = V4::routed;
  V6 v6 = V6::present;
  bool v1_probed = true;
  bool packet_ttl = true;
  Drop drop = Drop::timeout;
  bool predict = true;  // collection predicts the drop when it can (packet TTLs, d >= 1)

  [[nodiscard]] std::string text() const {
    std::ostringstream s;
    s << "tokens=" << to_string(tokens) << " hop_limit=" << hop_limit << " distance=" << distance
      << " v4=" << (v4 == V4::routed ? "routed" : "blackholed") << " v6="
      << (v6 == V6::present ? "present" : v6 == V6::disabled ? "disabled" : "no-route")
      << " v1=" << v1_probed << " packet_ttl=" << packet_ttl
      << " drop=" << (drop == Drop::timeout ? "timeout" : "reset") << " predict=" << predict;
    return s.str();
  }
};

constexpr int kHostSynAckTtl = 64;
const std::string kProbePath = "/latest/meta-data/instance-id";

// ---- Observations, as collection makes them ----

HttpResult answer(int status, const Case& c, int distance, std::string body = {}) {
  HttpResult r;
  r.outcome = Outcome::http;
  r.status = status;
  r.connected = true;
  r.server = "EC2ws";
  r.body = std::move(body);
  if (c.packet_ttl) r.handshake_ttl = kHostSynAckTtl - distance;
  return r;
}

HttpResult transport(Outcome outcome, const Case& c, int distance, bool connected) {
  HttpResult r;
  r.outcome = outcome;
  r.connected = connected;
  if (connected && c.packet_ttl) r.handshake_ttl = kHostSynAckTtl - distance;
  return r;
}

HttpResult not_sent(SkipReason why) {
  HttpResult r;
  r.outcome = Outcome::skipped;
  r.skip = why;
  return r;
}

// One family's observations from a namespace `distance` hops from the host. `failure` is
// the transport failure every request meets when the family does not reach the IMDS.
void add_family(TargetObservations& t, const Case& c, Family f, int distance,
                std::optional<Outcome> failure) {
  const auto add = [&](Step step, HttpResult r, std::string path) {
    t.observations.push_back(Observation{step, f, std::move(path), std::move(r)});
  };
  bool token = false;
  if (failure) {
    add(Step::token_put, transport(*failure, c, distance, false), "/latest/api/token");
  } else if (c.hop_limit > distance) {
    HttpResult put = answer(200, c, distance);
    put.token_ttl_seconds = 60;
    if (c.packet_ttl) put.ttl = c.hop_limit - distance;
    add(Step::token_put, put, "/latest/api/token");
    token = true;
  } else if (c.predict && c.packet_ttl && distance >= 1) {
    HttpResult put = not_sent(SkipReason::predicted_drop);
    put.prediction = DropPrediction{c.hop_limit, distance};
    put.connected = true;
    put.handshake_ttl = kHostSynAckTtl - distance;
    add(Step::token_put, put, "/latest/api/token");
  } else {
    add(Step::token_put,
        transport(c.drop == Drop::timeout ? Outcome::timeout : Outcome::reset, c, distance, true),
        "/latest/api/token");
  }
  add(Step::v2_get, token ? answer(200, c, distance, "i-0123456789abcdef0")
                          : not_sent(SkipReason::no_token),
      kProbePath);
  add(Step::listing, token ? answer(200, c, distance, "ami-id\ninstance-id\n")
                           : not_sent(SkipReason::no_token),
      "/latest/meta-data/");
  if (!c.v1_probed) {
    add(Step::v1_get, not_sent(SkipReason::v1_disabled), kProbePath);
  } else if (failure) {
    add(Step::v1_get, transport(*failure, c, distance, false), kProbePath);
  } else {
    add(Step::v1_get,
        c.tokens == HttpTokens::optional ? answer(200, c, distance, "i-0123456789abcdef0")
                                         : answer(401, c, distance),
        kProbePath);
  }
}

Diagnosis observe(const Case& c) {
  Diagnosis d;
  d.endpoint_v4 = "http://169.254.169.254";
  d.endpoint_v6 = "http://[fd00:ec2::254]";
  d.v1_probed = c.v1_probed;
  d.packet_ttl_available = c.packet_ttl;

  TargetObservations host;
  host.target = {"host", "/proc/self/ns/net", 4026531840ULL, TargetSource::host, {}, {}, {}, true};
  host.distance = 0;
  add_family(host, c, Family::v4, 0, std::nullopt);
  add_family(host, c, Family::v6, 0,
             c.v6 == V6::disabled ? std::optional(Outcome::refused) : std::nullopt);

  TargetObservations ns;
  ns.target = {"ns", "/run/netns/ns", 4026532001ULL, TargetSource::netns_dir, {}, {}, {}, false};
  // Collection knows a distance only from SYN-ACK TTLs.
  if (c.packet_ttl) ns.distance = c.distance;
  add_family(ns, c, Family::v4, c.distance,
             c.v4 == V4::blackholed ? std::optional(Outcome::blocked) : std::nullopt);
  std::optional<Outcome> v6_failure;
  if (c.v6 == V6::disabled) v6_failure = Outcome::refused;
  if (c.v6 == V6::no_route) v6_failure = Outcome::unreachable;
  add_family(ns, c, Family::v6, c.distance, v6_failure);

  d.targets = {std::move(host), std::move(ns)};
  d.inference = infer(d);
  d.findings = make_findings(d);
  return d;
}

// ---- The reference ----

struct Expected {
  Tristate v4_imdsv2;
  Tristate v4_reachable;
  Tristate v4_imdsv1;
  Tristate v6_imdsv2;
  Tristate v6_reachable;
  bool predicted;
  PutDrop v4_put_drop;
  bool healthy;
  HttpTokens http_tokens;
  std::optional<int> exact_hop_limit;
};

Expected reference(const Case& c) {
  Expected e{};
  const bool gets_token = c.hop_limit > c.distance;  // IMDS.md: PUT succeeds iff H > N
  const bool v4_reaches = c.v4 == V4::routed;
  const bool v6_reaches = c.v6 == V6::present;
  e.v4_reachable = v4_reaches ? Tristate::yes : Tristate::no;
  e.v4_imdsv2 = v4_reaches && gets_token ? Tristate::yes : Tristate::no;
  e.v6_reachable = v6_reaches ? Tristate::yes : Tristate::no;
  e.v6_imdsv2 = v6_reaches && gets_token ? Tristate::yes : Tristate::no;
  e.predicted = v4_reaches && !gets_token && c.predict && c.packet_ttl && c.distance >= 1;
  e.v4_put_drop = !v4_reaches || gets_token ? PutDrop::none
                  : e.predicted            ? PutDrop::predicted
                  : c.drop == Drop::reset  ? PutDrop::reset
                                           : PutDrop::timeout;
  // HttpTokens only from the answer to a tokenless GET.
  e.http_tokens = c.v1_probed ? c.tokens : HttpTokens::unknown;
  if (!v4_reaches) {
    e.v4_imdsv1 = Tristate::no;
  } else if (c.v1_probed) {
    e.v4_imdsv1 = c.tokens == HttpTokens::optional ? Tristate::yes : Tristate::no;
  } else {
    e.v4_imdsv1 = Tristate::unknown;
  }
  // Only a TTL measures the hop limit.
  if (c.packet_ttl) e.exact_hop_limit = c.hop_limit;
  // What a person must be told about: a routed namespace without a token, IPv4 blocked
  // while IPv6 reaches, and IMDSv1 proven open.
  const bool no_token_with_route = v4_reaches && !gets_token;
  const bool block_bypassed = !v4_reaches && v6_reaches;
  const bool v1_open = c.v1_probed && c.tokens == HttpTokens::optional;
  e.healthy = !no_token_with_route && !block_bypassed && !v1_open;
  return e;
}

std::vector<Case> all_cases() {
  std::vector<Case> out;
  for (HttpTokens tokens : {HttpTokens::optional, HttpTokens::required}) {
    for (int hop_limit = 1; hop_limit <= 4; ++hop_limit) {
      for (int distance = 0; distance <= 3; ++distance) {
        for (V4 v4 : {V4::routed, V4::blackholed}) {
          for (V6 v6 : {V6::present, V6::disabled, V6::no_route}) {
            for (bool v1 : {true, false}) {
              for (bool ttl : {true, false}) {
                for (Drop drop : {Drop::timeout, Drop::reset}) {
                  for (bool predict : {true, false}) {
                    out.push_back({tokens, hop_limit, distance, v4, v6, v1, ttl, drop, predict});
                  }
                }
              }
            }
          }
        }
      }
    }
  }
  return out;
}

std::string words(Tristate t) { return std::string(to_string(t)); }

TEST(VerdictMatrix, EveryGeneratedCaseMatchesTheReferenceAndNoBrokenNamespaceIsHealthy) {
  const std::vector<Case> cases = all_cases();
  ASSERT_GE(cases.size(), 2000U);
  std::size_t disagreements = 0;
  const auto check = [&](bool ok, const Case& c, const std::string& what) {
    if (ok) return;
    if (++disagreements <= 25) ADD_FAILURE() << c.text() << ": " << what;
  };
  for (const Case& c : cases) {
    const Diagnosis d = observe(c);
    const Expected e = reference(c);
    ASSERT_EQ(d.inference.targets.size(), 2U);
    const TargetVerdict& v = d.inference.targets[1];
    const FamilyVerdict& h = v.headline();
    check(h.imdsv2 == e.v4_imdsv2, c, "IPv4 IMDSv2 " + words(h.imdsv2) + " (" + h.summary + ")");
    check(h.reachable == e.v4_reachable, c, "IPv4 reachable " + words(h.reachable));
    check(h.imdsv1 == e.v4_imdsv1, c, "IPv4 IMDSv1 " + words(h.imdsv1));
    check(h.predicted == e.predicted, c, "predicted " + std::to_string(h.predicted));
    check(h.put_drop == e.v4_put_drop, c, "put drop " + std::string(to_string(h.put_drop)));
    check(v.v6.imdsv2 == e.v6_imdsv2, c, "IPv6 IMDSv2 " + words(v.v6.imdsv2) + " (" +
                                             v.v6.summary + ")");
    check(v.v6.reachable == e.v6_reachable, c, "IPv6 reachable " + words(v.v6.reachable));
    const bool healthy = is_healthy(d);
    std::string ids;
    for (const auto& f : d.findings) ids += " " + f.id + "/" + std::string(to_string(f.severity));
    check(healthy == e.healthy, c, "healthy " + std::to_string(healthy) + ", findings:" + ids);
    check(exit_code(d) == (e.healthy ? kExitHealthy : kExitFindings), c,
          "exit code " + std::to_string(exit_code(d)));
    // The invariant, stated on its own: a namespace that reaches the IMDS over IPv4 and gets
    // no token is never healthy.
    if (h.reachable == Tristate::yes && h.imdsv2 == Tristate::no) {
      check(!healthy && exit_code(d) != kExitHealthy, c, "healthy although IPv4 gets no token");
    }
    check(d.inference.http_tokens == e.http_tokens, c,
          "HttpTokens " + std::string(to_string(d.inference.http_tokens)));
    check(d.inference.hop_limit.exact == e.exact_hop_limit, c,
          "exact hop limit " + (d.inference.hop_limit.exact
                                    ? std::to_string(*d.inference.hop_limit.exact)
                                    : std::string("none")));
    if (d.inference.hop_limit.exact) {
      check(d.inference.hop_limit.method == HopLimitMethod::packet_ttl ||
                d.inference.hop_limit.method == HopLimitMethod::min_ttl_search,
            c, "exact hop limit without a measurement");
    }
  }
  EXPECT_EQ(disagreements, 0U) << "of " << cases.size() << " generated cases";
  std::cout << "[ verdict matrix ] " << cases.size() << " generated cases, " << disagreements
            << " disagreements\n";
}

}  // namespace
}  // namespace imds
