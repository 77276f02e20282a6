// Stable lowercase names of the model's enums: used in JSON, the journal, metrics and text.
#include "model.hpp"

namespace imds {

std::string_view to_string(Family value) {
  switch (value) {
    case Family::v4:
      return "ipv4";
    case Family::v6:
      return "ipv6";
  }
  return "unknown";
}

std::string_view to_string(Outcome value) {
  switch (value) {
    case Outcome::http:
      return "http";
    case Outcome::timeout:
      return "timeout";
    case Outcome::reset:
      return "reset";
    case Outcome::refused:
      return "refused";
    case Outcome::unreachable:
      return "unreachable";
    case Outcome::blocked:
      return "blocked";
    case Outcome::error:
      return "error";
    case Outcome::skipped:
      return "skipped";
  }
  return "unknown";
}

std::string_view to_string(Step value) {
  switch (value) {
    case Step::token_put:
      return "token_put";
    case Step::v2_get:
      return "v2_get";
    case Step::v1_get:
      return "v1_get";
    case Step::listing:
      return "listing";
    case Step::identity:
      return "identity";
  }
  return "unknown";
}

std::string_view to_string(Tristate value) {
  switch (value) {
    case Tristate::yes:
      return "yes";
    case Tristate::no:
      return "no";
    case Tristate::unknown:
      return "unknown";
  }
  return "unknown";
}

std::string_view to_string(HttpTokens value) {
  switch (value) {
    case HttpTokens::optional:
      return "optional";
    case HttpTokens::required:
      return "required";
    case HttpTokens::unknown:
      return "unknown";
  }
  return "unknown";
}

std::string_view to_string(EndpointState value) {
  switch (value) {
    case EndpointState::enabled:
      return "enabled";
    case EndpointState::disabled:
      return "disabled";
    case EndpointState::unreachable:
      return "unreachable";
    case EndpointState::unknown:
      return "unknown";
  }
  return "unknown";
}

std::string_view to_string(UnreachableReason value) {
  switch (value) {
    case UnreachableReason::none:
      return "none";
    case UnreachableReason::refused:
      return "refused";
    case UnreachableReason::no_route:
      return "no-route";
    case UnreachableReason::blackholed:
      return "blackholed";
    case UnreachableReason::firewalled:
      return "firewalled";
    case UnreachableReason::timeout:
      return "timeout";
    case UnreachableReason::intercepted_error:
      return "intercepted-error";
  }
  return "unknown";
}

std::string_view to_string(SkipReason value) {
  switch (value) {
    case SkipReason::none:
      return "none";
    case SkipReason::not_started:
      return "not-started";
    case SkipReason::v1_disabled:
      return "v1-disabled";
    case SkipReason::listing_disabled:
      return "listing-disabled";
    case SkipReason::no_token:
      return "no-token";
    case SkipReason::namespace_not_entered:
      return "namespace-not-entered";
    case SkipReason::predicted_drop:
      return "predicted-drop";
  }
  return "unknown";
}

std::string_view to_string(TargetSource value) {
  switch (value) {
    case TargetSource::host:
      return "host";
    case TargetSource::netns_dir:
      return "netns-dir";
    case TargetSource::proc:
      return "proc";
    case TargetSource::pid:
      return "pid";
    case TargetSource::container:
      return "container";
    case TargetSource::simulated:
      return "simulated";
    case TargetSource::path:
      return "path";
  }
  return "unknown";
}

std::string_view to_string(HopLimitMethod value) {
  switch (value) {
    case HopLimitMethod::none:
      return "none";
    case HopLimitMethod::bounds:
      return "bounds";
    case HopLimitMethod::packet_ttl:
      return "packet-ttl";
    case HopLimitMethod::min_ttl_search:
      return "min-ttl-search";
  }
  return "unknown";
}

std::string_view to_string(PutDrop value) {
  switch (value) {
    case PutDrop::none:
      return "none";
    case PutDrop::timeout:
      return "timeout";
    case PutDrop::reset:
      return "reset";
    case PutDrop::predicted:
      return "predicted";
  }
  return "unknown";
}

std::string_view to_string(Severity value) {
  switch (value) {
    case Severity::info:
      return "info";
    case Severity::notice:
      return "notice";
    case Severity::warning:
      return "warning";
    case Severity::error:
      return "error";
  }
  return "unknown";
}

std::string_view to_string(EntryProblem problem) {
  switch (problem) {
    case EntryProblem::not_mounted_here:
      return "not_mounted_here";
    case EntryProblem::stale:
      return "stale";
    case EntryProblem::dangling_link:
      return "dangling_link";
    case EntryProblem::not_a_namespace_file:
      return "not_a_namespace_file";
    case EntryProblem::other_namespace_type:
      return "other_namespace_type";
    case EntryProblem::permission_denied:
      return "permission_denied";
    case EntryProblem::unreadable:
      return "unreadable";
  }
  return "unreadable";
}

std::string_view to_string(NetnsDirLook::State value) {
  switch (value) {
    case NetnsDirLook::State::absent:
      return "absent";
    case NetnsDirLook::State::unreadable:
      return "unreadable";
    case NetnsDirLook::State::read:
      return "read";
  }
  return "absent";
}

std::size_t discovered_targets(const Diagnosis& d) {
  std::size_t n = 0;
  for (const auto& t : d.targets) {
    if (t.target.source == TargetSource::netns_dir || t.target.source == TargetSource::proc) ++n;
  }
  return n;
}

}  // namespace imds
