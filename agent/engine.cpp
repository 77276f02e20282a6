// Wires the agent to the probing engine. The agent discovers namespaces itself (so it can
// spread them over cycles and keep their container labels) and hands the resolved targets
// to diagnose_targets(), the same collect -> infer -> findings path imds-probe runs.
#include "engine.hpp"

#include <algorithm>

#include "collect.hpp"
#include "config.h"
#include "diagnose.hpp"
#include "render.hpp"
#include "targets.hpp"

namespace imds::agent {

Engine make_engine() {
  Engine e;
  e.discover = [](const AgentConfig& config) {
    DiscoveryConfig dc;
    dc.netns_dirs = config.netns_dirs;
    dc.proc_scan = config.proc_scan;
    return discover_containers(dc).targets;
  };
  e.probe = [](const AgentConfig& config, const ProbeRequest& req) {
    auto host = host_target();
    if (!host)
      throw std::runtime_error("cannot identify the host network namespace: " +
                               host.error().message);
    std::vector<NetnsTarget> targets{host.value()};
    for (const auto& t : req.containers) {
      if (t.inode != host.value().inode) targets.push_back(t);
    }

    CollectConfig cc;
    cc.endpoint_v4 = config.endpoint;
    cc.endpoint_v6 = config.endpoint_v6;
    cc.probe_v6 = config.ipv6;
    cc.probe_v1 = req.probe_v1;
    cc.request_timeout = config.request_timeout;
    cc.connect_timeout = std::min(config.request_timeout, Millis(1000));
    // Every request runs concurrently, so a cycle lasts about two request timeouts.
    cc.deadline = std::min(config.request_timeout * 4, Millis(30'000));
    cc.packet_ttl = config.packet_ttl;
    // Few connections at once: the link-local services share 1024 packets/s per instance.
    cc.max_parallel = 16;
    return diagnose_targets(targets, cc, config.expectations, IMDS_VERSION);
  };
  e.to_json = [](const Diagnosis& d) { return to_json(d); };
  return e;
}

}  // namespace imds::agent
