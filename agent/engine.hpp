// The production Engine: discovery and probing through libimdsprobe.
#pragma once

#include "agent.hpp"

namespace imds::agent {

// discover: discover_containers() over the configured netns dirs and /proc.
// probe: the host namespace plus the cycle's containers -> collect -> infer -> findings.
Engine make_engine();

}  // namespace imds::agent
