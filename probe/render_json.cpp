// The versioned JSON document of a Diagnosis (docs/json-schema.md) and the exit code.

#include <nlohmann/json.hpp>

#include "findings.hpp"
#include "render.hpp"
#include "words.hpp"

namespace imds {

using nlohmann::json;

int exit_code(const Diagnosis& diagnosis) {
  if (diagnosis.inference.endpoint == EndpointState::unreachable) return kExitUnreachable;
  return is_healthy(diagnosis) ? kExitHealthy : kExitFindings;
}

namespace {

// ---- JSON ----

// Names, bodies and error texts are bytes from outside; JSON needs UTF-8. Invalid
// sequences become U+FFFD instead of making dump() throw later.
json text(const std::string& s) { return valid_utf8(s); }

template <typename T>
json optional_value(const std::optional<T>& v) {
  return v ? json(*v) : json(nullptr);
}

json optional_text(const std::optional<std::string>& v) { return v ? text(*v) : json(nullptr); }

json optional_switch(const std::optional<bool>& v) {
  if (!v) return nullptr;
  return *v ? "enabled" : "disabled";
}

json observation_json(const Observation& o) {
  const HttpResult& r = o.result;
  // Token responses are never kept by collection; refuse to emit one all the same.
  const bool token = o.step == Step::token_put;
  return {
      {"step", to_string(o.step)},
      {"family", to_string(o.family)},
      {"path", text(o.path)},
      {"outcome", to_string(r.outcome)},
      {"status", r.outcome == Outcome::http ? json(r.status) : json(nullptr)},
      {"latency_us", r.latency.count()},
      {"connected", r.connected},
      {"ttl", optional_value(r.ttl)},
      {"handshake_ttl", optional_value(r.handshake_ttl)},
      {"server", optional_text(r.server)},
      {"token_ttl_seconds", optional_value(r.token_ttl_seconds)},
      {"body", token ? json("") : text(r.body)},
      {"body_truncated", token ? false : r.body_truncated},
      {"error", text(r.error)},
      {"skip", to_string(r.skip)},
      {"skip_reason", r.outcome == Outcome::skipped ? json(skip_words(r)) : json("")},
      {"prediction", r.prediction ? json{{"host_ttl", r.prediction->host_ttl},
                                         {"distance", r.prediction->distance}}
                                  : json(nullptr)},
      {"cut_by_deadline", r.cut_by_deadline},
      {"retried", r.retried},
  };
}

json target_json(const TargetObservations& t) {
  json observations = json::array();
  for (const auto& o : t.observations) observations.push_back(observation_json(o));
  return {
      {"name", text(t.target.name)},
      {"path", text(t.target.path)},
      {"inode", t.target.inode},
      {"source", to_string(t.target.source)},
      {"container_id", optional_text(t.target.container_id)},
      {"container_name", optional_text(t.target.container_name)},
      {"runtime", optional_text(t.target.runtime)},
      {"is_host", t.target.is_host},
      {"distance", optional_value(t.distance)},
      {"error", text(t.error)},
      {"observations", std::move(observations)},
  };
}

json expectations_json(const Expectations& e) {
  return {
      {"http_tokens", e.http_tokens ? json(to_string(*e.http_tokens)) : json(nullptr)},
      {"hop_limit_min", optional_value(e.hop_limit_min)},
      {"hop_limit_max", optional_value(e.hop_limit_max)},
      {"endpoint", optional_switch(e.endpoint_enabled)},
      {"ipv6", optional_switch(e.ipv6_enabled)},
      {"tags", optional_switch(e.tags_enabled)},
  };
}

json family_json(const FamilyVerdict& v) {
  return {
      {"probed", v.probed},
      {"reachable", to_string(v.reachable)},
      {"unreachable_reason", to_string(v.unreachable_reason)},
      {"imdsv2", to_string(v.imdsv2)},
      {"imdsv1", to_string(v.imdsv1)},
      {"put_drop", to_string(v.put_drop)},
      {"predicted", v.predicted},
      {"summary", text(v.summary)},
  };
}

json inference_json(const Inference& inf) {
  json verdicts = json::array();
  for (const auto& v : inf.targets) {
    const FamilyVerdict& h = v.headline();
    verdicts.push_back({
        {"target", text(v.target)},
        {"distance", optional_value(v.distance)},
        {"imdsv2", to_string(h.imdsv2)},
        {"imdsv1", to_string(h.imdsv1)},
        {"reachable", to_string(h.reachable)},
        {"summary", text(h.summary)},
        {"predicted", h.predicted},
        {"families", {{"ipv4", family_json(v.v4)}, {"ipv6", family_json(v.v6)}}},
    });
  }
  json proxy_warnings = json::array();
  for (const auto& p : inf.proxy_warnings) proxy_warnings.push_back(text(p));
  return {
      {"endpoint", to_string(inf.endpoint)},
      {"unreachable_reason", to_string(inf.unreachable_reason)},
      {"http_tokens", to_string(inf.http_tokens)},
      {"hop_limit",
       {
           {"exact", optional_value(inf.hop_limit.exact)},
           {"lower", inf.hop_limit.lower},
           {"upper", inf.hop_limit.upper},
           {"method", to_string(inf.hop_limit.method)},
       }},
      {"ipv6", to_string(inf.ipv6)},
      {"tags", to_string(inf.tags)},
      {"interception", to_string(inf.interception)},
      {"proxy_warnings", std::move(proxy_warnings)},
      {"instance",
       {
           {"instance_id", optional_text(inf.instance.instance_id)},
           {"ami_id", optional_text(inf.instance.ami_id)},
           {"region", optional_text(inf.instance.region)},
           {"availability_zone", optional_text(inf.instance.availability_zone)},
       }},
      {"targets", std::move(verdicts)},
  };
}

json finding_json(const Finding& f) {
  json subjects = json::array();
  for (const auto& s : f.subjects) {
    subjects.push_back({{"name", text(s.name)},
                        {"container_id", optional_text(s.container_id)},
                        {"container_name", optional_text(s.container_name)},
                        {"distance", optional_value(s.distance)}});
  }
  return {
      {"id", text(f.id)},           {"severity", to_string(f.severity)},
      {"subjects", subjects},       {"summary", text(f.summary)},
      {"detail", text(f.detail)},   {"fix", text(f.fix)},
  };
}

json discovery_json(const Diagnosis& d) {
  if (!d.discovery) return nullptr;
  const DiscoveryLook& look = *d.discovery;
  const std::size_t found = discovered_targets(d);
  json dirs = json::array();
  for (const NetnsDirLook& dir : look.dirs) {
    json unusable = json::object();
    for (std::size_t i = 0; i < kEntryProblems; ++i) {
      if (dir.unusable.at(i) > 0) {
        unusable[std::string(to_string(static_cast<EntryProblem>(i)))] = dir.unusable.at(i);
      }
    }
    json examples = json::array();
    for (const auto& e : dir.examples) examples.push_back(text(e));
    dirs.push_back({
        {"dir", text(dir.dir)},
        {"state", to_string(dir.state)},
        {"error", dir.error.empty() ? json(nullptr) : json(text(dir.error))},
        {"entries", dir.entries},
        {"usable", dir.usable},
        {"unusable", std::move(unusable)},
        {"unusable_examples", std::move(examples)},
    });
  }
  return {
      {"containers_found", found},
      {"summary", text(describe_discovery(look))},
      {"netns_dirs", std::move(dirs)},
      {"proc_scanned", look.proc_scanned},
      {"proc_namespaces", look.proc_namespaces},
      {"unlisted_container_processes", look.unlisted_container_processes},
      {"unlisted_container_namespaces", look.unlisted_container_namespaces},
      {"runtimes", look.runtimes},
  };
}

}  // namespace

json to_json(const Diagnosis& d) {
  json targets = json::array();
  for (const auto& t : d.targets) targets.push_back(target_json(t));
  json findings = json::array();
  for (const auto& f : d.findings) findings.push_back(finding_json(f));
  return {
      {"schema_version", d.schema_version},
      {"tool_version", text(d.tool_version)},
      {"started_at", text(d.started_at)},
      {"duration_ms", d.duration.count()},
      {"endpoints", {{"ipv4", text(d.endpoint_v4)}, {"ipv6", text(d.endpoint_v6)}}},
      {"v1_probed", d.v1_probed},
      {"packet_ttl_available", d.packet_ttl_available},
      {"searched_hop_limit", optional_value(d.searched_hop_limit)},
      {"proxy",
       {{"variable", optional_text(d.proxy.variable)},
        {"no_proxy_covers_imds", d.proxy.no_proxy_covers_imds}}},
      {"expectations", expectations_json(d.expectations)},
      {"healthy", is_healthy(d)},
      {"exit_code", exit_code(d)},
      {"discovery", discovery_json(d)},
      {"targets", std::move(targets)},
      {"inference", inference_json(d.inference)},
      {"findings", std::move(findings)},
  };
}

}  // namespace imds
