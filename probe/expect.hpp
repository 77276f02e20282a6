// Policy expectations (--expect KEY=VALUE, the agent's config): parsing only, no I/O.
#pragma once

#include <string_view>

#include "model.hpp"
#include "result.hpp"

namespace imds {

// Parses one expectation and merges it into `out` (later ones override earlier ones):
//   http-tokens=optional|required
//   hop-limit=N          (1..64: exactly N)
//   hop-limit=>=N        (at least N; "hop-limit>=N" is accepted too)
//   imds-support=v2.0    (what an AMI registered with --imds-support v2.0 gives:
//                         http-tokens=required and hop limit exactly 2)
//   endpoint=enabled|disabled, ipv6=enabled|disabled, tags=enabled|disabled
// The error names the bad part and the accepted forms; `out` is left
// unchanged on error.
Status parse_expectation(std::string_view text, Expectations& out);

// The accepted forms, one per line, for --help and error messages.
std::string_view expectation_forms();

}  // namespace imds
