// Running the tools the simulated container needs (ip, nft).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "result.hpp"

namespace imds {

// Runs argv (no shell) and returns its stdout, or an error quoting its stderr.
// argv[0] is looked up in a fixed PATH (/usr/sbin:/usr/bin:/sbin:/bin).
Result<std::string> run_tool(const std::vector<std::string>& argv, std::string_view input = {});

}  // namespace imds
