// Wires the agent to the probing engine. The agent discovers namespaces itself (so it can
// spread them over cycles and keep their container labels) and hands the resolved targets
// to diagnose_targets(), the same collect -> infer -> findings path imds-probe runs.
// The request-rate bound lives here, one bucket for the process, shared by every cycle.
#include "engine.hpp"

#include <algorithm>
#include <memory>
#include <mutex>

#include "callers_watch.hpp"
#include "collect.hpp"
#include "config.h"
#include "diagnose.hpp"
#include "render.hpp"
#include "request_rate.hpp"
#include "targets.hpp"

namespace imds::agent {

namespace {

// How long a cycle may wait for request permits beyond its own deadline. With the 120 s
// stuck-probe watchdog in agent.cpp and a deadline of at most 30 s, a cycle stays under a
// minute. What does not fit is deferred to the next cycle, never reported as unreachable.
constexpr Millis kMaxPermitWait{30'000};

// State that outlives one cycle: the bucket and the discovery slice.
struct EngineState {
  std::shared_ptr<RequestBucket> bucket;
  std::mutex mutex;  // discovery runs on the worker, the stats are read on the loop
  DiscoveryRotation rotation;
  std::size_t found = 0;
  std::size_t not_kept = 0;
  DiscoveryLook look;  // the latest discovery's
};

RequestRate rate_of(const AgentConfig& config) {
  return RequestRate{config.request_rate, config.request_burst};
}

}  // namespace

Engine make_engine() {
  auto state = std::make_shared<EngineState>();
  state->bucket = std::make_shared<RequestBucket>(RequestRate{});
  Engine e;
  e.discover = [state](const AgentConfig& config) {
    DiscoveryConfig dc = discovery_config_of(config);
    // As many as a cycle may probe (max-namespaces) and the collector takes, so discovery
    // does not cut the list short of what the configuration allows.
    dc.max_targets = kMaxTargets - 1;  // the host is one more target
    std::lock_guard lock(state->mutex);
    dc.start = state->rotation.start();
    Discovery found = discover_containers(dc);
    state->rotation.discovered(found.found, found.targets);
    state->found = found.found;
    state->not_kept = found.not_kept();
    state->look = std::move(found.look);
    return std::move(found.targets);
  };
  e.probe = [state](const AgentConfig& config, const ProbeRequest& req) {
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
    cc.packet_ttl = config.packet_ttl;
    cc.user_agent = "imds-agent/" IMDS_VERSION;  // left out by the caller watch
    // Few connections at once: the link-local services share 1024 packets/s per instance.
    cc.max_parallel = 16;

    // The rate bound: what this cycle cannot send within kMaxPermitWait is left to the next
    // cycle (the window's tail: the cursor stops before it), and the deadline grows by the
    // wait for permits of what it does send.
    RequestBucket& bucket = *state->bucket;
    bucket.set_rate(rate_of(config));
    cc.request_bucket = state->bucket;
    const double available = bucket.available();
    const std::size_t host_needs = planned_requests(cc, true);
    const std::size_t each = planned_requests(cc, false);
    const std::size_t affordable = affordable_namespaces(available, config.request_rate,
                                                         kMaxPermitWait, host_needs, each);
    if (targets.size() - 1 > affordable) {
      bucket.count_deferred(targets.size() - 1 - affordable);
      targets.resize(1 + affordable);
    }
    const Millis wait =
        permit_wait(available, config.request_rate, host_needs + (targets.size() - 1) * each);
    // Every request runs concurrently, so a cycle lasts about two request timeouts.
    cc.deadline = std::min(config.request_timeout * 4, Millis(30'000)) + wait;

    DiscoverySeen seen;
    {
      std::lock_guard lock(state->mutex);
      if (state->not_kept > 0) {
        seen.truncated = DiscoveryTruncation{state->found, state->not_kept, true};
      }
      seen.look = state->look;
    }
    Diagnosis d = diagnose_targets(targets, cc, config.expectations, IMDS_VERSION, std::move(seen));
    std::lock_guard lock(state->mutex);
    state->rotation.probed(d);
    return d;
  };
  e.to_json = [](const Diagnosis& d) { return to_json(d); };
  e.open_watch = [](const WatchOptions& options) { return CallerWatcher::open(options); };
  e.stats = [state] {
    EngineStats s;
    s.requests = state->bucket->stats();
    std::lock_guard lock(state->mutex);
    s.namespaces_found = state->found;
    s.namespaces_not_kept = state->not_kept;
    s.look = state->look;
    return s;
  };
  return e;
}

}  // namespace imds::agent
