// Inference: what the observations prove about the instance's metadata options, what each
// namespace will experience, and the findings (with fixes). Pure functions, no I/O.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "model.hpp"

namespace imds {

// Reads everything in `diagnosis` except `inference` and `findings`.
Inference infer(const Diagnosis& diagnosis);

// Reads the filled `inference` too. Findings come sorted by severity (worst first); the
// order within one severity is stable.
std::vector<Finding> make_findings(const Diagnosis& diagnosis);

// No finding at warning or worse.
bool is_healthy(const Diagnosis& diagnosis);

// "2 (packet TTL)", ">= 2 (bounds)", "1..3 (bounds)", "unknown": the hop limit in words.
std::string describe_hop_limit(const HopLimit& limit);

// Validators for text that came from the IMDS, before it goes anywhere near a command
// line: infer() drops identity values that fail them.
bool is_instance_id(std::string_view text);        // i-[0-9a-f]{8,17}
bool is_ami_id(std::string_view text);             // ami-[0-9a-f]{8,17}
bool is_region(std::string_view text);             // [a-z][a-z0-9-]{0,29}, no trailing '-'
bool is_availability_zone(std::string_view text);  // same shape, up to 32 characters

}  // namespace imds
