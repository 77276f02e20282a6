// diagnose(): the whole probe in one call, targets -> collect -> infer -> findings.
// Used by imds-probe and imds-agent alike: no printing, no exit.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "collect.hpp"
#include "model.hpp"
#include "targets.hpp"

namespace imds {

// Which namespaces to probe, how, and what policy to check. The host namespace is always
// probed first; explicit targets and discovered ones follow, deduplicated by inode.
struct ProbeOptions {
  CollectConfig collect;
  bool all_containers = false;  // discover_containers(discovery)
  DiscoveryConfig discovery;
  std::vector<std::string> netns_paths;  // --netns
  std::vector<pid_t> pids;               // --pid
  std::vector<std::string> containers;   // --container (id or id prefix)
  bool simulate_container = false;       // --simulate-container
  Expectations expectations;
  std::string tool_version;  // empty: this build's version
};

// A configuration the probe cannot run with (a --pid that does not exist, a namespace it
// cannot open, --simulate-container without privileges). The message is for people.
class ProbeConfigError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// What a discovery tells the diagnosis beyond its targets (both stay empty without one).
struct DiscoverySeen {
  std::optional<DiscoveryTruncation> truncated;  // it found more than it keeps
  std::optional<DiscoveryLook> look;             // what it looked at and could not use
};

// The namespaces `options` selects, host first, deduplicated by inode; notes from discovery
// (skipped entries) are appended to `notes` when given; `seen` (when given) gets what the
// discovery, if one ran, found beyond its targets. Throws ProbeConfigError.
std::vector<NetnsTarget> resolve_targets(const ProbeOptions& options,
                                         std::vector<std::string>* notes = nullptr,
                                         DiscoverySeen* seen = nullptr);

// Runs the probe. Network and namespace failures are values in the Diagnosis; throws
// ProbeConfigError (or std::invalid_argument from collect) for an unusable configuration.
// `notes` (when given) receives things a person should know that are not part of the
// diagnosis: skipped discovery entries, leftovers the simulated container could not remove.
Diagnosis diagnose(const ProbeOptions& options, std::vector<std::string>* notes = nullptr);

// The part of diagnose() after target resolution, for callers that resolve targets
// themselves (the agent spreads discovered namespaces over cycles): collect -> infer ->
// findings, and every Diagnosis field filled. `targets` must start with the host.
Diagnosis diagnose_targets(const std::vector<NetnsTarget>& targets, const CollectConfig& config,
                           const Expectations& expectations, const std::string& tool_version = "",
                           DiscoverySeen seen = {});

// "2026-11-29T01:42:03.123Z"
std::string rfc3339_utc(std::chrono::system_clock::time_point t);

}  // namespace imds
