// Inference: what the observations prove about the instance's metadata options and what
// each namespace will experience, per address family. Pure functions, no I/O.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "model.hpp"

namespace imds {

// Reads everything in `diagnosis` except `inference` and `findings`.
Inference infer(const Diagnosis& diagnosis);

// The hop limit the observations prove, and the evidence that contradicts it (in words).
struct HopResolution {
  HopLimit limit;
  std::vector<std::string> conflicts;
};
HopResolution resolve_hop_limit(const Diagnosis& diagnosis);

// Validators for text that came from the IMDS, before it goes anywhere near a command
// line: infer() drops identity values that fail them.
bool is_instance_id(std::string_view text);        // i-[0-9a-f]{8,17}
bool is_ami_id(std::string_view text);             // ami-[0-9a-f]{8,17}
bool is_region(std::string_view text);             // [a-z][a-z0-9-]{0,29}, no trailing '-'
bool is_availability_zone(std::string_view text);  // same shape, up to 32 characters

}  // namespace imds
