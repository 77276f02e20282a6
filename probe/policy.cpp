// Policy checks over known options (see policy.hpp).
#include "policy.hpp"

#include "words.hpp"

namespace imds {

namespace {

PolicyCheck check_switch(PolicyOption option, bool want, std::optional<bool> have,
                         std::string unknown_why) {
  PolicyCheck c{option, PolicyState::unknown, switch_word(want), switch_word(have), {}};
  if (!have) {
    c.reason = std::move(unknown_why);
  } else {
    c.state = *have == want ? PolicyState::met : PolicyState::violated;
  }
  return c;
}

}  // namespace

std::string_view option_name(PolicyOption option) {
  switch (option) {
    case PolicyOption::http_tokens:
      return "HttpTokens";
    case PolicyOption::hop_limit:
      return "HttpPutResponseHopLimit";
    case PolicyOption::endpoint:
      return "HttpEndpoint";
    case PolicyOption::ipv6:
      return "HttpProtocolIpv6";
    case PolicyOption::tags:
      return "InstanceMetadataTags";
  }
  return "unknown";
}

std::string_view to_string(PolicyState state) {
  switch (state) {
    case PolicyState::met:
      return "met";
    case PolicyState::violated:
      return "violated";
    case PolicyState::unknown:
      break;
  }
  return "unknown";
}

std::vector<PolicyCheck> check_policy(const Expectations& e, const ObservedOptions& o) {
  std::vector<PolicyCheck> out;
  if (e.http_tokens && *e.http_tokens != HttpTokens::unknown) {
    PolicyCheck c{PolicyOption::http_tokens, PolicyState::unknown, http_tokens_word(e.http_tokens),
                  http_tokens_word(o.http_tokens), {}};
    if (o.http_tokens == HttpTokens::unknown) {
      c.reason = o.v1_probed ? "no tokenless GET was answered, so HttpTokens is unknown"
                             : "IMDSv1 was not probed (--no-v1), so HttpTokens is unknown";
    } else {
      c.state = o.http_tokens == *e.http_tokens ? PolicyState::met : PolicyState::violated;
    }
    out.push_back(std::move(c));
  }
  if (e.hop_limit_min || e.hop_limit_max) {
    const int min = e.hop_limit_min.value_or(1);
    const int max = e.hop_limit_max.value_or(kMaxHopLimit);
    const HopLimit& h = o.hop_limit;
    PolicyCheck c{PolicyOption::hop_limit, PolicyState::unknown,
                  expected_hop_limit(e.hop_limit_min, e.hop_limit_max), hop_limit_range(h), {}};
    const int lo = h.exact.value_or(h.lower);
    const int hi = h.exact.value_or(h.upper);
    if (h.method == HopLimitMethod::none) {
      c.reason = "nothing proves the hop limit";
    } else if (hi < min || lo > max) {
      c.state = PolicyState::violated;
    } else if (lo >= min && hi <= max) {
      c.state = PolicyState::met;
    } else {
      c.reason = "the hop limit is only known as " + describe_hop_limit(h);
    }
    out.push_back(std::move(c));
  }
  if (e.endpoint_enabled) {
    out.push_back(check_switch(PolicyOption::endpoint, *e.endpoint_enabled, o.endpoint_enabled,
                               "the IMDS did not answer the host, so whether HttpEndpoint is "
                               "enabled cannot be seen"));
  }
  if (e.ipv6_enabled) {
    out.push_back(check_switch(PolicyOption::ipv6, *e.ipv6_enabled, o.ipv6,
                               "the IPv6 endpoint was not probed or only timed out"));
  }
  if (e.tags_enabled) {
    out.push_back(check_switch(PolicyOption::tags, *e.tags_enabled, o.tags,
                               "the metadata listing was not read from the host"));
  }
  return out;
}

ObservedOptions observed_options(const Diagnosis& d) {
  const Inference& inf = d.inference;
  ObservedOptions o;
  o.http_tokens = inf.http_tokens;
  o.v1_probed = d.v1_probed;
  o.hop_limit = inf.hop_limit;
  if (inf.endpoint == EndpointState::enabled || inf.endpoint == EndpointState::disabled) {
    o.endpoint_enabled = inf.endpoint == EndpointState::enabled;
  }
  if (inf.ipv6 != Tristate::unknown) o.ipv6 = inf.ipv6 == Tristate::yes;
  if (inf.tags != Tristate::unknown) o.tags = inf.tags == Tristate::yes;
  return o;
}

}  // namespace imds
