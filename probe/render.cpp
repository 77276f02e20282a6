// Renderers: the versioned JSON document, the text report and the exit code.
#include "render.hpp"

#include <algorithm>
#include <array>
#include <sstream>
#include <vector>

#include "inference.hpp"

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
json text(const std::string& s) {
  return json::parse(json(s).dump(-1, ' ', false, json::error_handler_t::replace));
}

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
      {"skip_reason", text(r.skip_reason)},
  };
}

json target_json(const TargetObservations& t) {
  json observations = json::array();
  for (const auto& o : t.observations) observations.push_back(observation_json(o));
  return {
      {"name", text(t.target.name)},
      {"path", text(t.target.path)},
      {"inode", t.target.inode},
      {"source", text(t.target.source)},
      {"container_id", optional_text(t.target.container_id)},
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

json inference_json(const Inference& inf) {
  json verdicts = json::array();
  for (const auto& v : inf.targets) {
    verdicts.push_back({
        {"target", text(v.target)},
        {"distance", optional_value(v.distance)},
        {"imdsv2", to_string(v.imdsv2)},
        {"imdsv1", to_string(v.imdsv1)},
        {"reachable", to_string(v.reachable)},
        {"summary", text(v.summary)},
        {"predicted", v.predicted},
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
           {"method", text(inf.hop_limit.method)},
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
  return {
      {"id", text(f.id)},           {"severity", to_string(f.severity)}, {"target", text(f.target)},
      {"summary", text(f.summary)}, {"detail", text(f.detail)},          {"fix", text(f.fix)},
  };
}

// ---- Text ----

struct Palette {
  bool on = false;
  [[nodiscard]] std::string paint(std::string_view code, std::string_view s) const {
    if (!on) return std::string(s);
    return "\x1b[" + std::string(code) + "m" + std::string(s) + "\x1b[0m";
  }
  [[nodiscard]] std::string bold(std::string_view s) const { return paint("1", s); }
  [[nodiscard]] std::string dim(std::string_view s) const { return paint("2", s); }
  [[nodiscard]] std::string good(std::string_view s) const { return paint("32", s); }
  [[nodiscard]] std::string bad(std::string_view s) const { return paint("1;31", s); }
  [[nodiscard]] std::string severity(Severity sev, std::string_view s) const {
    switch (sev) {
      case Severity::error:
        return paint("1;31", s);
      case Severity::warning:
        return paint("33", s);
      case Severity::notice:
        return paint("36", s);
      case Severity::info:
        return paint("2", s);
    }
    return std::string(s);
  }
  [[nodiscard]] std::string tristate(Tristate t, std::string_view s) const {
    switch (t) {
      case Tristate::yes:
        return good(s);
      case Tristate::no:
        return paint("31", s);
      case Tristate::unknown:
        return dim(s);
    }
    return std::string(s);
  }
};

// Untrusted text on a terminal: no escape sequences, no line breaks.
std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? '?' : c;
  }
  return out;
}

std::string padded(std::string s, std::size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

// Word-wraps `s` at `width` columns, each line prefixed by `indent`.
std::string wrapped(std::string_view s, std::string_view indent, std::size_t width) {
  std::string out;
  std::string line;
  std::istringstream words{std::string(s)};
  std::string word;
  while (words >> word) {
    if (!line.empty() && indent.size() + line.size() + 1 + word.size() > width) {
      out += std::string(indent) + line + "\n";
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
  }
  if (!line.empty()) out += std::string(indent) + line + "\n";
  return out;
}

std::string switch_text(Tristate t) {
  switch (t) {
    case Tristate::yes:
      return "enabled";
    case Tristate::no:
      return "disabled";
    case Tristate::unknown:
      return "unknown";
  }
  return "unknown";
}

std::string endpoint_text(const Inference& inf) {
  std::string s(to_string(inf.endpoint));
  if (inf.endpoint == EndpointState::unreachable) {
    switch (inf.unreachable_reason) {
      case UnreachableReason::refused:
        return s + " (connection refused)";
      case UnreachableReason::blackholed:
        return s + " (no route)";
      case UnreachableReason::firewalled:
        return s + " (connect timed out)";
      case UnreachableReason::timeout:
        return s + " (no HTTP answer)";
      case UnreachableReason::intercepted_error:
        return s + " (intercepted)";
      case UnreachableReason::none:
        break;
    }
  }
  return s;
}

std::string verdict_line(const Diagnosis& d, const Palette& p) {
  std::array<int, 4> counts{};
  for (const auto& f : d.findings) ++counts.at(static_cast<std::size_t>(f.severity));
  std::string head;
  if (is_healthy(d)) {
    head = p.good(p.bold("healthy"));
  } else {
    std::vector<std::string> parts;
    if (counts[3] > 0)
      parts.push_back(std::to_string(counts[3]) + " error" + (counts[3] > 1 ? "s" : ""));
    if (counts[2] > 0)
      parts.push_back(std::to_string(counts[2]) + " warning" + (counts[2] > 1 ? "s" : ""));
    std::string list;
    for (const auto& part : parts) list += (list.empty() ? "" : ", ") + part;
    head = p.bad("NOT HEALTHY") + " (" + list + ")";
  }
  const Inference& inf = d.inference;
  return "verdict: " + head + "; HttpTokens=" + std::string(to_string(inf.http_tokens)) +
         ", hop limit=" + describe_hop_limit(inf.hop_limit) + ", endpoint=" + endpoint_text(inf) +
         ", IPv6=" + switch_text(inf.ipv6) + ", tags=" + switch_text(inf.tags) + "\n";
}

std::string instance_line(const InstanceIdentity& id) {
  std::vector<std::string> parts;
  if (id.instance_id) parts.push_back(*id.instance_id);
  if (id.ami_id) parts.push_back(*id.ami_id);
  if (id.availability_zone) {
    parts.push_back(*id.availability_zone);
  } else if (id.region) {
    parts.push_back(*id.region);
  }
  if (parts.empty()) return {};
  std::string line = "instance:";
  for (const auto& part : parts) line += " " + printable(part);
  return line + "\n";
}

std::string targets_block(const Diagnosis& d, const Palette& p) {
  const auto& verdicts = d.inference.targets;
  if (verdicts.empty()) return {};
  std::size_t width = 4;
  std::vector<std::string> names;
  for (const auto& v : verdicts) {
    std::string name = v.target.empty() ? "(unnamed)" : printable(v.target);
    if (name.size() > 24) name = name.substr(0, 21) + "...";
    width = std::max(width, name.size());
    names.push_back(std::move(name));
  }
  std::string out = "targets:\n";
  for (std::size_t i = 0; i < verdicts.size(); ++i) {
    const TargetVerdict& v = verdicts[i];
    const std::string distance =
        v.distance ? std::to_string(*v.distance) + (*v.distance == 1 ? " hop " : " hops")
                   : std::string("? hops");
    const std::string v2(to_string(v.imdsv2));
    const std::string v1(to_string(v.imdsv1));
    out += "  " + padded(names[i], width) + "  " + padded(distance, 7) + "  IMDSv2 " +
           p.tristate(v.imdsv2, padded(v2, 7)) + "  IMDSv1 " + p.tristate(v.imdsv1, padded(v1, 7)) +
           "  " + printable(v.summary) + (v.predicted ? p.dim(" [predicted]") : "") + "\n";
  }
  return out;
}

std::string findings_block(const Diagnosis& d, const Palette& p) {
  if (d.findings.empty()) return "findings: none\n";
  std::string out = "findings:\n";
  for (const auto& f : d.findings) {
    out += "  " + p.severity(f.severity, "[" + std::string(to_string(f.severity)) + "]") + " " +
           p.bold(printable(f.id)) + ": " + printable(f.summary) + "\n";
    if (!f.detail.empty()) out += wrapped(printable(f.detail), "      ", 100);
    if (!f.fix.empty()) {
      out += "      fix:\n";
      std::string_view rest = f.fix;
      while (!rest.empty()) {
        const auto nl = rest.find('\n');
        out += "        " + printable(rest.substr(0, nl)) + "\n";
        rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
      }
    }
  }
  return out;
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
      {"targets", std::move(targets)},
      {"inference", inference_json(d.inference)},
      {"findings", std::move(findings)},
  };
}

std::string render_text(const Diagnosis& d, bool colour) {
  const Palette p{colour};
  return verdict_line(d, p) + instance_line(d.inference.instance) + targets_block(d, p) +
         findings_block(d, p);
}

}  // namespace imds
