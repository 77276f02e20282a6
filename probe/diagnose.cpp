// diagnose(): resolves the targets, builds the simulated container when asked, collects,
// infers and makes the findings. Reusable by the CLI and the agent: no output, no exit.
#include "diagnose.hpp"

#include <array>
#include <cstdio>
#include <ctime>
#include <memory>
#include <set>

#include "config.h"
#include "endpoint.hpp"
#include "findings.hpp"
#include "inference.hpp"
#include "simulated.hpp"

namespace imds {

std::string rfc3339_utc(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto secs = time_point_cast<seconds>(t);
  const auto ms = duration_cast<milliseconds>(t - secs).count();
  const std::time_t tt = system_clock::to_time_t(secs);
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  std::array<char, 32> date{};
  std::strftime(date.data(), date.size(), "%Y-%m-%dT%H:%M:%S", &tm);
  std::array<char, 48> out{};
  std::snprintf(out.data(), out.size(), "%s.%03lldZ", date.data(), static_cast<long long>(ms));
  return out.data();
}

std::vector<NetnsTarget> resolve_targets(const ProbeOptions& options,
                                         std::vector<std::string>* notes,
                                         DiscoverySeen* discovery) {
  std::vector<NetnsTarget> targets;
  std::set<std::uint64_t> seen;
  auto host = host_target();
  if (!host)
    throw ProbeConfigError("cannot identify the host network namespace: " + host.error().message);
  seen.insert(host.value().inode);
  targets.push_back(host.value());

  auto add = [&](Result<NetnsTarget> r) {
    if (!r) throw ProbeConfigError(r.error().message);
    if (!seen.insert(r.value().inode).second) {
      if (notes != nullptr)
        notes->push_back(r.value().path + " is a namespace already probed; probed once");
      return;
    }
    targets.push_back(std::move(r.value()));
  };
  for (const auto& path : options.netns_paths) add(target_for_path(path));
  const std::string& docker_root = options.discovery.docker_root;
  for (const pid_t pid : options.pids) add(target_for_pid(pid, "/proc", docker_root));
  for (const auto& id : options.containers) add(target_for_container(id, "/proc", docker_root));

  if (options.all_containers) {
    auto found = discover_containers(options.discovery);
    for (auto& t : found.targets) {
      if (seen.insert(t.inode).second) targets.push_back(std::move(t));
    }
    if (notes != nullptr) notes->insert(notes->end(), found.notes.begin(), found.notes.end());
    if (discovery != nullptr) {
      if (found.not_kept() > 0) {
        discovery->truncated = DiscoveryTruncation{found.found, found.not_kept(), false};
      }
      discovery->look = std::move(found.look);
    }
  }
  if (targets.size() > kMaxTargets) {
    throw ProbeConfigError("too many namespaces (" + std::to_string(targets.size()) +
                           "); the probe handles at most " + std::to_string(kMaxTargets));
  }
  return targets;
}

namespace {

Diagnosis assemble(CollectResult collected, const CollectConfig& config,
                   const Expectations& expectations, const std::string& tool_version,
                   std::chrono::system_clock::time_point started,
                   std::chrono::steady_clock::time_point t0,
                   DiscoverySeen seen = {}) {
  Diagnosis d;
  d.tool_version = tool_version.empty() ? IMDS_VERSION : tool_version;
  d.started_at = rfc3339_utc(started);
  d.endpoint_v4 = config.endpoint_v4;
  d.endpoint_v6 = config.probe_v6 ? config.endpoint_v6 : "";
  d.v1_probed = config.probe_v1;
  d.packet_ttl_available = collected.packet_ttl_available;
  d.searched_hop_limit = collected.searched_hop_limit;
  d.proxy = collected.proxy;
  d.discovery_truncated = seen.truncated;
  d.discovery = std::move(seen.look);
  d.expectations = expectations;
  d.targets = std::move(collected.targets);
  d.inference = infer(d);
  d.findings = make_findings(d);
  d.duration =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  return d;
}

}  // namespace

Diagnosis diagnose_targets(const std::vector<NetnsTarget>& targets, const CollectConfig& config,
                           const Expectations& expectations, const std::string& tool_version,
                           DiscoverySeen seen) {
  const auto started = std::chrono::system_clock::now();
  const auto t0 = std::chrono::steady_clock::now();
  return assemble(collect(config, targets), config, expectations, tool_version, started, t0,
                  std::move(seen));
}

Diagnosis diagnose(const ProbeOptions& options, std::vector<std::string>* notes) {
  const auto started = std::chrono::system_clock::now();
  const auto t0 = std::chrono::steady_clock::now();

  DiscoverySeen seen;
  auto targets = resolve_targets(options, notes, &seen);
  std::unique_ptr<SimulatedContainer> simulated;
  if (options.simulate_container) {
    SimulatedContainer::Options sim_options;
    sim_options.ipv6 = options.collect.probe_v6;
    // A bad endpoint is reported by collect(), below.
    const auto v4 = parse_endpoint(options.collect.endpoint_v4, Family::v4);
    if (v4) sim_options.imds_v4 = v4->host;
    const auto v6 = parse_endpoint(options.collect.endpoint_v6, Family::v6);
    if (v6) sim_options.imds_v6 = v6->host;
    auto sim = SimulatedContainer::create(sim_options);
    if (!sim) throw ProbeConfigError(sim.error().message);
    simulated = std::move(sim.value());
    targets.push_back(simulated->target());
  }

  CollectResult collected = collect(options.collect, targets);
  if (simulated) {
    for (const auto& e : simulated->remove()) {
      if (notes != nullptr) notes->push_back("simulated container teardown: " + e);
    }
  }
  return assemble(std::move(collected), options.collect, options.expectations, options.tool_version,
                  started, t0, std::move(seen));
}

}  // namespace imds
