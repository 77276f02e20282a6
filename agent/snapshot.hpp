// The state the agent tracks between probes (Snapshot), the pure function that folds one more
// Diagnosis into it (observe) and the one that turns two snapshots into change events (diff).
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "events.hpp"
#include "model.hpp"
#include "policy.hpp"

namespace imds::agent {

// Last *known* value of each instance option: an unknown reading (IMDS down, nothing
// proven) keeps the previous knowledge, so an outage does not look like an option change.
struct OptionKnowledge {
  std::optional<HttpTokens> http_tokens;
  std::optional<HopLimit> hop_limit;  // set once anything was proven
  std::optional<bool> endpoint_enabled;
  std::optional<bool> ipv6;
  std::optional<bool> tags;
};

struct ContainerState {
  std::string key;   // identity: "ino:<nsfs inode>" (or the name when the inode is unknown)
  std::string name;  // NetnsTarget::name
  std::string path;
  std::optional<std::string> container_id;
  std::optional<std::string> container_name;  // Docker's, when its state is readable
  Tristate imdsv2 = Tristate::unknown;  // last known, IPv4 (the headline)
  std::optional<int> distance;
  std::string verdict;                       // the IPv4 verdict's summary
  Tristate imdsv2_ipv6 = Tristate::unknown;  // last known over IPv6
  std::string verdict_ipv6;                  // the IPv6 verdict's summary
};

// A violated check of the policy engine (policy.hpp), the one the probe's findings use.
struct PolicyViolation {
  PolicyOption option = PolicyOption::http_tokens;  // option_name(): "HttpTokens", ...
  std::string expected;                             // "required", ">=2", "2", "enabled"
  std::string actual;
  bool operator==(const PolicyViolation&) const = default;
};

// What discovery could not see, as the events compare it (DiscoveryLook, counted).
struct DiscoveryGaps {
  std::size_t unusable_entries = 0;  // namespace directory entries that are not usable here
  std::size_t unreadable_dirs = 0;
  std::size_t unlisted_namespaces = 0;  // of container processes, with the /proc scan off
  std::string summary;                  // describe_discovery()
  [[nodiscard]] bool any() const {
    return unusable_entries + unreadable_dirs + unlisted_namespaces > 0;
  }
  [[nodiscard]] bool same_counts(const DiscoveryGaps& o) const {
    return unusable_entries == o.unusable_entries && unreadable_dirs == o.unreadable_dirs &&
           unlisted_namespaces == o.unlisted_namespaces;
  }
};

struct Snapshot {
  bool probed = false;             // at least one Diagnosis went in
  std::optional<bool> reachable;   // host reaches the IMDS (nullopt: not yet known)
  std::string unreachable_reason;  // "refused", "timeout", ... when unreachable
  std::string endpoint;            // the IPv4 endpoint probed
  std::chrono::system_clock::time_point observed_at{};
  std::optional<std::chrono::system_clock::time_point> unreachable_since;
  // The first answer of a return from an outage that was confirmed later (confirm.hpp); the
  // downtime ends there.
  std::optional<std::chrono::system_clock::time_point> reachable_since;
  OptionKnowledge options;
  std::map<std::string, ContainerState> containers;  // by key
  Expectations expectations;                         // the policy the violations are of
  std::vector<PolicyViolation> violations;           // in PolicyOption order
  std::vector<std::string> findings;  // ids of the last diagnosis's findings at warning+
  DiscoveryGaps discovery;            // of the last diagnosis that carried a discovery
};

// The agent's view after one more Diagnosis. `present` lists every container namespace
// that exists now (discovery); a Diagnosis may cover only some of them (the per-cycle
// cap spreads big fleets over several cycles), and the others keep their last verdict.
// With `present` == nullptr the Diagnosis's targets are taken as the complete list.
Snapshot observe(const Snapshot& previous, const Diagnosis& diagnosis,
                 const std::vector<NetnsTarget>* present, const Expectations& expectations,
                 std::chrono::system_clock::time_point now);

// Violations of `expect` that the knowledge proves (unknown values violate nothing).
std::vector<PolicyViolation> policy_violations(const OptionKnowledge& options,
                                               const Expectations& expect);

// Exactly one event per change between two snapshots; nothing when nothing changed.
// For the first snapshot (previous.probed == false): first-verdict, plus imds-unreachable
// and policy-drift when those hold from the start.
std::vector<Event> diff(const Snapshot& previous, const Snapshot& next);

// One line for sd_notify STATUS= (values worded by words.hpp).
std::string status_line(const Snapshot& s);  // one line for sd_notify STATUS=

std::string container_key(const NetnsTarget& t);

// The hop-limit rules of change detection: a reading that narrows nothing proves nothing, and
// two readings contradict each other only when no single hop limit satisfies both (a tighter
// bound is more knowledge, not a change).
bool hop_limit_proves_something(const HopLimit& h);
bool hop_limits_disjoint(const HopLimit& a, const HopLimit& b);

}  // namespace imds::agent
