// Findings: what the inference means for people, with the exact fix. Pure functions.
#pragma once

#include <vector>

#include "model.hpp"

namespace imds {

// Reads the filled `inference` too. Findings come sorted by severity (worst first); the
// order within one severity is stable. Namespaces that share a finding (same id, wording
// and fix) are one finding listing them as subjects.
std::vector<Finding> make_findings(const Diagnosis& diagnosis);

// No finding at warning or worse.
bool is_healthy(const Diagnosis& diagnosis);

}  // namespace imds
