// The policy checks: each expectation (--expect, the agent's expect=) against what is known
// of the instance's options. One engine for the probe's findings and the agent's drift
// events, so the two can never disagree. Pure.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model.hpp"

namespace imds {

enum class PolicyOption { http_tokens, hop_limit, endpoint, ipv6, tags };
enum class PolicyState { met, violated, unknown };

// What is known of the options; unknown where nothing proves a value.
struct ObservedOptions {
  HttpTokens http_tokens = HttpTokens::unknown;
  bool v1_probed = true;  // whether a tokenless GET was sent (why HttpTokens may be unknown)
  HopLimit hop_limit;     // method none: unknown
  std::optional<bool> endpoint_enabled;
  std::optional<bool> ipv6;
  std::optional<bool> tags;
};

struct PolicyCheck {
  PolicyOption option = PolicyOption::http_tokens;
  PolicyState state = PolicyState::unknown;
  std::string expected;  // "required", ">=2", "2", "enabled"
  std::string actual;    // "optional", ">=2", "unknown", ...
  std::string reason;    // why it cannot be known, when state == unknown
};

// One check per expectation that is set, in PolicyOption order.
std::vector<PolicyCheck> check_policy(const Expectations& expected, const ObservedOptions& known);

// The EC2 API's name of an option: "HttpTokens", "HttpPutResponseHopLimit", "HttpEndpoint",
// "HttpProtocolIpv6", "InstanceMetadataTags".
std::string_view option_name(PolicyOption option);
std::string_view to_string(PolicyState state);  // "met", "violated", "unknown"

// The options that a Diagnosis's inference proves.
ObservedOptions observed_options(const Diagnosis& diagnosis);

}  // namespace imds
