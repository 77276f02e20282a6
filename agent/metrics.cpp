// The agent's posture as Prometheus metrics, through prometheus-cpp (core: registry and text
// serializer; its HTTP exposer is not used, the agent's socket serves the text). Tests check
// the output with a strict parser and promtool.
#include "metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/text_serializer.h>

#include "words.hpp"

namespace imds::agent {
namespace {

prometheus::Labels labels_of(const Exposition::Labels& labels) {
  prometheus::Labels out;
  for (const auto& [name, value] : labels) {
    out.emplace(name, valid_utf8(std::string_view(value).substr(0, Exposition::kMaxLabelValue)));
  }
  return out;
}

}  // namespace

void DurationHistogram::observe(std::chrono::duration<double> d) {
  const double s = d.count();
  for (std::size_t i = 0; i < kBounds.size(); ++i) {
    if (s <= kBounds.at(i)) ++buckets_.at(i);
  }
  ++count_;
  sum_ += s;
}

void Exposition::gauge(const std::string& name, const std::string& help, double value,
                       const Labels& labels) {
  prometheus::BuildGauge().Name(name).Help(help).Register(registry_).Add(labels_of(labels)).Set(
      value);
}

void Exposition::counter(const std::string& name, const std::string& help, double value,
                         const Labels& labels) {
  prometheus::BuildCounter()
      .Name(name)
      .Help(help)
      .Register(registry_)
      .Add(labels_of(labels))
      .Increment(value);
}

void Exposition::histogram(const std::string& name, const std::string& help,
                           const DurationHistogram& h) {
  const prometheus::Histogram::BucketBoundaries bounds(DurationHistogram::kBounds.begin(),
                                                       DurationHistogram::kBounds.end());
  // The library takes each bucket's own count (the last one: above every bound); ours are
  // cumulative.
  std::vector<double> increments;
  std::uint64_t below = 0;
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    increments.push_back(static_cast<double>(h.bucket(i) - below));
    below = h.bucket(i);
  }
  increments.push_back(static_cast<double>(h.count() - below));
  prometheus::BuildHistogram()
      .Name(name)
      .Help(help)
      .Register(registry_)
      .Add({}, bounds)
      .ObserveMultiple(increments, h.sum());
}

std::string Exposition::text() const {
  return prometheus::TextSerializer().Serialize(registry_.Collect());
}

void add_posture_metrics(Exposition& out, const Snapshot& s, const HostImdsv2& host_imdsv2,
                         const ProbeStats& stats, std::string_view version,
                         const EngineStats* engine) {
  const auto& o = s.options;
  if (o.http_tokens && *o.http_tokens != HttpTokens::unknown) {
    out.gauge("imds_http_tokens_required",
              "1 when the IMDS requires session tokens (HttpTokens=required), 0 when optional.",
              *o.http_tokens == HttpTokens::required ? 1 : 0);
  }
  if (o.hop_limit) {
    if (o.hop_limit->exact) {
      out.gauge("imds_hop_limit", "HttpPutResponseHopLimit, measured exactly.",
                *o.hop_limit->exact);
    } else {
      out.gauge("imds_hop_limit_lower", "Proven lower bound of the hop limit.",
                o.hop_limit->lower);
      out.gauge("imds_hop_limit_upper", "Proven upper bound of the hop limit.",
                o.hop_limit->upper);
    }
  }
  if (s.probed) {
    const bool up = s.reachable == true && o.endpoint_enabled == true;
    out.gauge("imds_endpoint_up",
              "1 when the IMDS answers the host namespace with its endpoint enabled.", up ? 1 : 0);
  }
  if (o.ipv6) out.gauge("imds_ipv6_enabled", "1 when the IPv6 endpoint answers.", *o.ipv6 ? 1 : 0);
  if (o.tags) {
    out.gauge("imds_tags_enabled", "1 when instance tags are in the metadata.", *o.tags ? 1 : 0);
  }
  // container_name: Docker's name where readable (validated and at most 128 bytes, one per
  // container: the label set stays as bounded as the containers are).
  const auto target = [&out](const std::string& netns, const std::string& container_id,
                             const std::string& container_name, const std::string& family_name,
                             bool ok) {
    out.gauge("imds_target_imdsv2_ok",
              "1 when the namespace gets an IMDSv2 token and data over the address family, 0 "
              "when it does not.",
              ok ? 1 : 0,
              {{"netns", netns},
               {"container_id", container_id},
               {"container_name", container_name},
               {"family", family_name}});
  };
  if (host_imdsv2.ipv4) target("host", "", "", "ipv4", *host_imdsv2.ipv4);
  if (host_imdsv2.ipv6) target("host", "", "", "ipv6", *host_imdsv2.ipv6);
  for (const auto& [key, c] : s.containers) {
    const std::string netns = c.path.empty() ? c.name : c.path;
    const std::string id = c.container_id.value_or("");
    const std::string name = c.container_name.value_or("");
    if (c.imdsv2 != Tristate::unknown) target(netns, id, name, "ipv4", c.imdsv2 == Tristate::yes);
    if (c.imdsv2_ipv6 != Tristate::unknown) {
      target(netns, id, name, "ipv6", c.imdsv2_ipv6 == Tristate::yes);
    }
  }
  out.gauge("imds_container_namespaces", "Container network namespaces known.",
            static_cast<double>(s.containers.size()));
  out.gauge("imds_policy_violations",
            "Options that contradict the expected policy (expect= settings).",
            static_cast<double>(s.violations.size()));

  out.histogram("imds_probe_duration_seconds", "Wall time of one probe cycle.", stats.durations);
  out.counter("imds_probe_errors_total",
              "Probe cycles that failed, found the IMDS unreachable or were throttled.",
              static_cast<double>(stats.errors));
  out.counter("imds_probe_throttled_total", "Probe cycles that saw HTTP 429 or 503.",
              static_cast<double>(stats.throttled));
  out.counter("imds_probe_cycles_total", "Probe cycles run.", static_cast<double>(stats.cycles));
  if (engine != nullptr) {
    const RequestRateStats& r = engine->requests;
    out.counter("imds_requests_sent_total",
                "Requests sent to the IMDS, every namespace and address family.",
                static_cast<double>(r.sent));
    out.counter("imds_requests_delayed_total",
                "Requests that waited for the request-rate bound before being sent.",
                static_cast<double>(r.delayed));
    out.counter("imds_namespaces_deferred_total",
                "Namespace probes moved to a later cycle by the request-rate bound.",
                static_cast<double>(r.deferred));
    out.gauge("imds_request_rate_limit",
              "The configured bound on requests per second to the IMDS (request-rate).",
              r.rate.per_second);
    out.gauge("imds_request_burst_limit",
              "Requests sent at once before the rate bound paces them (request-burst).",
              static_cast<double>(r.rate.burst));
    out.gauge("imds_discovery_namespaces_found",
              "Container network namespaces the last discovery found.",
              static_cast<double>(engine->namespaces_found));
    out.gauge("imds_discovery_truncated",
              "Namespaces the last discovery found but did not keep (they come in later cycles).",
              static_cast<double>(engine->namespaces_not_kept));
    for (const NetnsDirLook& dir : engine->look.dirs) {
      for (std::size_t i = 0; i < kEntryProblems; ++i) {
        out.gauge("imds_discovery_unusable_entries",
                  "Entries of a namespace directory that the last discovery could not use, by "
                  "problem (not_mounted_here: a namespace bind mount this mount namespace does "
                  "not see).",
                  static_cast<double>(dir.unusable.at(i)),
                  {{"dir", dir.dir},
                   {"problem", std::string(to_string(static_cast<EntryProblem>(i)))}});
      }
    }
    out.gauge("imds_discovery_unreadable_dirs",
              "Namespace directories the last discovery could not read.",
              static_cast<double>(engine->look.unreadable_dirs()));
    out.gauge("imds_discovery_unlisted_container_namespaces",
              "Namespaces of container processes that no namespace directory lists (counted "
              "with the /proc scan off; their containers are not probed).",
              static_cast<double>(engine->look.unlisted_container_namespaces));
  }
  out.gauge("imds_build_info", "Version of imds-agent; always 1.", 1,
            {{"version", std::string(version)}});
}

std::string render_metrics(const Snapshot& s, const HostImdsv2& host_imdsv2,
                           const ProbeStats& stats, std::string_view version,
                           const EngineStats* engine) {
  Exposition out;
  add_posture_metrics(out, s, host_imdsv2, stats, version, engine);
  return out.text();
}

}  // namespace imds::agent
