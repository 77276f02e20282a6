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
    case UnreachableReason::blackholed:
      return "blackholed";
    case UnreachableReason::firewalled:
      return "firewalled";
    case UnreachableReason::timeout:
      return "timeout";
    case UnreachableReason::intercepted_error:
      return "intercepted_error";
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

}  // namespace imds
