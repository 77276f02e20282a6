// Parsing of policy expectations ("--expect http-tokens=required" and friends).
#include "expect.hpp"

#include <charconv>
#include <system_error>

#include "quote.hpp"

namespace imds {

namespace {

constexpr std::string_view kForms =
    "http-tokens=optional|required, hop-limit=N, hop-limit=>=N (N in 1..64), "
    "imds-support=v2.0, endpoint=enabled|disabled, ipv6=enabled|disabled, "
    "tags=enabled|disabled";

std::optional<int> parse_hop_count(std::string_view digits) {
  int value = 0;
  const char* end = digits.data() + digits.size();
  const auto [ptr, ec] = std::from_chars(digits.data(), end, value);
  if (digits.empty() || ec != std::errc{} || ptr != end || value < 1 || value > kMaxHopLimit) {
    return std::nullopt;
  }
  return value;
}

std::optional<bool> parse_switch(std::string_view value) {
  if (value == "enabled") return true;
  if (value == "disabled") return false;
  return std::nullopt;
}

Error bad_value(std::string_view key, std::string_view value, std::string_view accepted) {
  return Error{"bad value " + quoted(value) + " for expectation '" + std::string(key) +
               "': expected " + std::string(accepted)};
}

}  // namespace

std::string_view expectation_forms() { return kForms; }

Status parse_expectation(std::string_view text, Expectations& out) {
  const auto eq = text.find('=');
  if (eq == std::string_view::npos) {
    return Error{"bad expectation " + quoted(text) +
                 ": expected KEY=VALUE, one of: " + std::string(kForms)};
  }
  std::string_view key = text.substr(0, eq);
  std::string_view value = text.substr(eq + 1);

  // "hop-limit>=2" splits at its '=' into "hop-limit>" and "2".
  bool at_least = false;
  if (key == "hop-limit>") {
    key = "hop-limit";
    at_least = true;
  } else if (key == "hop-limit" && value.starts_with(">=")) {
    value.remove_prefix(2);
    at_least = true;
  }

  Expectations next = out;
  if (key == "http-tokens") {
    if (value == "optional") {
      next.http_tokens = HttpTokens::optional;
    } else if (value == "required") {
      next.http_tokens = HttpTokens::required;
    } else {
      return bad_value(key, value, "optional or required");
    }
  } else if (key == "hop-limit") {
    const auto n = parse_hop_count(value);
    if (!n) {
      return bad_value(key, value, "N or >=N with N a whole number from 1 to 64");
    }
    next.hop_limit_min = *n;
    next.hop_limit_max = at_least ? std::nullopt : std::optional<int>(*n);
  } else if (key == "imds-support") {
    if (value != "v2.0") return bad_value(key, value, "v2.0");
    // The AMI attribute's effect on a launch: tokens required, hop limit 2.
    next.http_tokens = HttpTokens::required;
    next.hop_limit_min = 2;
    next.hop_limit_max = 2;
  } else if (key == "endpoint" || key == "ipv6" || key == "tags") {
    const auto on = parse_switch(value);
    if (!on) return bad_value(key, value, "enabled or disabled");
    if (key == "endpoint") {
      next.endpoint_enabled = on;
    } else if (key == "ipv6") {
      next.ipv6_enabled = on;
    } else {
      next.tags_enabled = on;
    }
  } else {
    return Error{"unknown expectation " + quoted(key) + " in " + quoted(text) +
                 ": expected one of: " + std::string(kForms)};
  }
  out = next;
  return {};
}

}  // namespace imds
