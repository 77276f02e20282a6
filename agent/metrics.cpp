// Prometheus text format 0.0.4. No client library for it is packaged in Debian 12, so the
// few lines are written here; tests check the output with promtool and a strict parser.
#include "metrics.hpp"

#include <fmt/format.h>

#include "words.hpp"

namespace imds::agent {
namespace {

void family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

std::string number(double v) { return fmt::format("{}", v); }

}  // namespace

void DurationHistogram::observe(std::chrono::duration<double> d) {
  const double s = d.count();
  for (std::size_t i = 0; i < kBounds.size(); ++i) {
    if (s <= kBounds.at(i)) ++buckets_.at(i);
  }
  ++count_;
  sum_ += s;
}

std::string escape_label_value(std::string_view raw) {
  // The text format is UTF-8: one namespace name that is not must not break the scrape.
  const std::string v = valid_utf8(raw);
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string render_metrics(const Snapshot& s, const HostImdsv2& host_imdsv2,
                           const ProbeStats& stats, std::string_view version,
                           const EngineStats* engine) {
  std::string out;
  const auto& o = s.options;
  if (o.http_tokens && *o.http_tokens != HttpTokens::unknown) {
    family(out, "imds_http_tokens_required", "gauge",
           "1 when the IMDS requires session tokens (HttpTokens=required), 0 when optional.");
    out += fmt::format("imds_http_tokens_required {}\n",
                       *o.http_tokens == HttpTokens::required ? 1 : 0);
  }
  if (o.hop_limit) {
    if (o.hop_limit->exact) {
      family(out, "imds_hop_limit", "gauge", "HttpPutResponseHopLimit, measured exactly.");
      out += fmt::format("imds_hop_limit {}\n", *o.hop_limit->exact);
    } else {
      family(out, "imds_hop_limit_lower", "gauge", "Proven lower bound of the hop limit.");
      out += fmt::format("imds_hop_limit_lower {}\n", o.hop_limit->lower);
      family(out, "imds_hop_limit_upper", "gauge", "Proven upper bound of the hop limit.");
      out += fmt::format("imds_hop_limit_upper {}\n", o.hop_limit->upper);
    }
  }
  if (s.probed) {
    family(out, "imds_endpoint_up", "gauge",
           "1 when the IMDS answers the host namespace with its endpoint enabled.");
    const bool up = s.reachable == true && o.endpoint_enabled == true;
    out += fmt::format("imds_endpoint_up {}\n", up ? 1 : 0);
  }
  if (o.ipv6) {
    family(out, "imds_ipv6_enabled", "gauge", "1 when the IPv6 endpoint answers.");
    out += fmt::format("imds_ipv6_enabled {}\n", *o.ipv6 ? 1 : 0);
  }
  if (o.tags) {
    family(out, "imds_tags_enabled", "gauge", "1 when instance tags are in the metadata.");
    out += fmt::format("imds_tags_enabled {}\n", *o.tags ? 1 : 0);
  }
  family(out, "imds_target_imdsv2_ok", "gauge",
         "1 when the namespace gets an IMDSv2 token and data over the address family, 0 when "
         "it does not.");
  // container_name: Docker's name where readable (validated and at most 128 bytes, one per
  // container: the label set stays as bounded as the containers are).
  const auto target_line = [&out](std::string_view netns, std::string_view container_id,
                                  std::string_view container_name, std::string_view family_name,
                                  bool ok) {
    out += fmt::format(
        "imds_target_imdsv2_ok{{netns=\"{}\",container_id=\"{}\",container_name=\"{}\","
        "family=\"{}\"}} {}\n",
        escape_label_value(std::string(netns)), escape_label_value(std::string(container_id)),
        escape_label_value(std::string(container_name)), family_name, ok ? 1 : 0);
  };
  if (host_imdsv2.ipv4) target_line("host", "", "", "ipv4", *host_imdsv2.ipv4);
  if (host_imdsv2.ipv6) target_line("host", "", "", "ipv6", *host_imdsv2.ipv6);
  for (const auto& [key, c] : s.containers) {
    const std::string netns = c.path.empty() ? c.name : c.path;
    const std::string id = c.container_id.value_or("");
    const std::string name = c.container_name.value_or("");
    if (c.imdsv2 != Tristate::unknown) {
      target_line(netns, id, name, "ipv4", c.imdsv2 == Tristate::yes);
    }
    if (c.imdsv2_ipv6 != Tristate::unknown) {
      target_line(netns, id, name, "ipv6", c.imdsv2_ipv6 == Tristate::yes);
    }
  }
  family(out, "imds_container_namespaces", "gauge", "Container network namespaces known.");
  out += fmt::format("imds_container_namespaces {}\n", s.containers.size());
  family(out, "imds_policy_violations", "gauge",
         "Options that contradict the expected policy (expect= settings).");
  out += fmt::format("imds_policy_violations {}\n", s.violations.size());

  family(out, "imds_probe_duration_seconds", "histogram", "Wall time of one probe cycle.");
  for (std::size_t i = 0; i < DurationHistogram::kBounds.size(); ++i) {
    out += fmt::format("imds_probe_duration_seconds_bucket{{le=\"{}\"}} {}\n",
                       number(DurationHistogram::kBounds.at(i)), stats.durations.bucket(i));
  }
  out += fmt::format("imds_probe_duration_seconds_bucket{{le=\"+Inf\"}} {}\n",
                     stats.durations.count());
  out += fmt::format("imds_probe_duration_seconds_sum {}\n", number(stats.durations.sum()));
  out += fmt::format("imds_probe_duration_seconds_count {}\n", stats.durations.count());
  family(out, "imds_probe_errors_total", "counter",
         "Probe cycles that failed, found the IMDS unreachable or were throttled.");
  out += fmt::format("imds_probe_errors_total {}\n", stats.errors);
  family(out, "imds_probe_throttled_total", "counter", "Probe cycles that saw HTTP 429 or 503.");
  out += fmt::format("imds_probe_throttled_total {}\n", stats.throttled);
  family(out, "imds_probe_cycles_total", "counter", "Probe cycles run.");
  out += fmt::format("imds_probe_cycles_total {}\n", stats.cycles);
  if (engine != nullptr) {
    const RequestRateStats& r = engine->requests;
    family(out, "imds_requests_sent_total", "counter",
           "Requests sent to the IMDS, every namespace and address family.");
    out += fmt::format("imds_requests_sent_total {}\n", r.sent);
    family(out, "imds_requests_delayed_total", "counter",
           "Requests that waited for the request-rate bound before being sent.");
    out += fmt::format("imds_requests_delayed_total {}\n", r.delayed);
    family(out, "imds_namespaces_deferred_total", "counter",
           "Namespace probes moved to a later cycle by the request-rate bound.");
    out += fmt::format("imds_namespaces_deferred_total {}\n", r.deferred);
    family(out, "imds_request_rate_limit", "gauge",
           "The configured bound on requests per second to the IMDS (request-rate).");
    out += fmt::format("imds_request_rate_limit {}\n", number(r.rate.per_second));
    family(out, "imds_request_burst_limit", "gauge",
           "Requests sent at once before the rate bound paces them (request-burst).");
    out += fmt::format("imds_request_burst_limit {}\n", r.rate.burst);
    family(out, "imds_discovery_namespaces_found", "gauge",
           "Container network namespaces the last discovery found.");
    out += fmt::format("imds_discovery_namespaces_found {}\n", engine->namespaces_found);
    family(out, "imds_discovery_truncated", "gauge",
           "Namespaces the last discovery found but did not keep (they come in later cycles).");
    out += fmt::format("imds_discovery_truncated {}\n", engine->namespaces_not_kept);
    family(out, "imds_discovery_unusable_entries", "gauge",
           "Entries of a namespace directory that the last discovery could not use, by problem "
           "(not_mounted_here: a namespace bind mount this mount namespace does not see).");
    for (const NetnsDirLook& dir : engine->look.dirs) {
      const std::string label = escape_label_value(valid_utf8(dir.dir));
      for (std::size_t i = 0; i < kEntryProblems; ++i) {
        out += fmt::format("imds_discovery_unusable_entries{{dir=\"{}\",problem=\"{}\"}} {}\n",
                           label, to_string(static_cast<EntryProblem>(i)),
                           dir.unusable.at(i));
      }
    }
    family(out, "imds_discovery_unreadable_dirs", "gauge",
           "Namespace directories the last discovery could not read.");
    out += fmt::format("imds_discovery_unreadable_dirs {}\n", engine->look.unreadable_dirs());
    family(out, "imds_discovery_unlisted_container_namespaces", "gauge",
           "Namespaces of container processes that no namespace directory lists (counted with "
           "the /proc scan off; their containers are not probed).");
    out += fmt::format("imds_discovery_unlisted_container_namespaces {}\n",
                       engine->look.unlisted_container_namespaces);
  }
  family(out, "imds_build_info", "gauge", "Version of imds-agent; always 1.");
  out += fmt::format("imds_build_info{{version=\"{}\"}} 1\n", escape_label_value(version));
  return out;
}

}  // namespace imds::agent
