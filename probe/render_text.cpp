// The text report of a Diagnosis for people: verdict, one line per namespace, findings.
#include <algorithm>
#include <array>
#include <sstream>
#include <vector>

#include "findings.hpp"
#include "inference.hpp"
#include "render.hpp"
#include "words.hpp"

namespace imds {

namespace {

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

// Untrusted text on a terminal: no escape sequences, no line breaks, not shortened.
std::string safe(std::string_view s) { return printable(s, s.size()); }

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

std::string endpoint_text(const Inference& inf) {
  std::string s(to_string(inf.endpoint));
  if (inf.endpoint == EndpointState::unreachable && inf.unreachable_reason != UnreachableReason::none) {
    return s + " (" + unreachable_words(inf.unreachable_reason) + ")";
  }
  return s;
}

// IPv6 beside the IPv4 headline, in a word or two.
std::string ipv6_text(const FamilyVerdict& v, const Inference& inf) {
  if (!v.probed) return "not probed";
  if (v.reachable == Tristate::no) {
    if (inf.ipv6 == Tristate::no) return "endpoint off";
    return v.unreachable_reason == UnreachableReason::no_route ? "no route" : "unreachable";
  }
  if (v.imdsv2 == Tristate::yes) return "IMDSv2 works";
  if (v.imdsv2 == Tristate::no) return "no token";
  return "unknown";
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
         ", IPv6=" + switch_word(inf.ipv6) + ", tags=" + switch_word(inf.tags) + "\n";
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
  for (const auto& part : parts) line += " " + safe(part);
  return line + "\n";
}

std::string targets_block(const Diagnosis& d, const Palette& p) {
  const auto& verdicts = d.inference.targets;
  if (verdicts.empty()) return {};
  std::size_t width = 4;
  std::vector<std::string> names;
  for (std::size_t i = 0; i < verdicts.size(); ++i) {
    const auto& v = verdicts[i];
    // Docker's name beside the id: "4f2b8c1d9e0a web".
    std::string name =
        v.target.empty() ? "(unnamed)"
                         : namespace_label(v.target, i < d.targets.size()
                                                         ? d.targets[i].target.container_name
                                                         : std::nullopt);
    if (name.size() > 32) name = name.substr(0, 29) + "...";
    width = std::max(width, name.size());
    names.push_back(std::move(name));
  }
  std::string out = "targets:\n";
  for (std::size_t i = 0; i < verdicts.size(); ++i) {
    const TargetVerdict& t = verdicts[i];
    const FamilyVerdict& v = t.headline();
    const std::string distance =
        t.distance ? std::to_string(*t.distance) + (*t.distance == 1 ? " hop " : " hops")
                   : std::string("? hops");
    const std::string v2(to_string(v.imdsv2));
    const std::string v1(to_string(v.imdsv1));
    out += "  " + padded(names[i], width) + "  " + padded(distance, 7) + "  IMDSv2 " +
           p.tristate(v.imdsv2, padded(v2, 7)) + "  IMDSv1 " + p.tristate(v.imdsv1, padded(v1, 7)) +
           "  " + safe(v.summary) + (v.predicted ? p.dim(" [predicted]") : "") +
           p.dim(" | IPv6: " + ipv6_text(t.v6, d.inference)) + "\n";
  }
  return out;
}

// "namespaces: c1 (1 hop), c2 (1 hop), ... and 190 more": a grouped finding's members.
std::string subjects_text(const std::vector<FindingSubject>& subjects) {
  constexpr std::size_t kShown = 12;
  std::string out = "namespaces:";
  for (std::size_t i = 0; i < subjects.size() && i < kShown; ++i) {
    const FindingSubject& s = subjects[i];
    out += (i == 0 ? " " : ", ") + namespace_label(s.name, s.container_name);
    if (s.distance) out += " (" + hops(*s.distance) + ")";
  }
  if (subjects.size() > kShown) out += " and " + std::to_string(subjects.size() - kShown) + " more";
  return out;
}

std::string findings_block(const Diagnosis& d, const Palette& p) {
  if (d.findings.empty()) return "findings: none\n";
  std::string out = "findings:\n";
  for (const auto& f : d.findings) {
    out += "  " + p.severity(f.severity, "[" + std::string(to_string(f.severity)) + "]") + " " +
           p.bold(safe(f.id)) + ": " + safe(f.summary) + "\n";
    if (f.subjects.size() > 1) out += wrapped(subjects_text(f.subjects), "      ", 100);
    if (!f.detail.empty()) out += wrapped(safe(f.detail), "      ", 100);
    if (!f.fix.empty()) {
      out += "      fix:\n";
      std::string_view rest = f.fix;
      while (!rest.empty()) {
        const auto nl = rest.find('\n');
        out += "        " + safe(rest.substr(0, nl)) + "\n";
        rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
      }
    }
  }
  return out;
}

// "containers: 2 found (/run/docker/netns: 2 entries, 2 usable; /run/netns: none; /proc:
// skipped)": what discovery looked at, when it ran.
std::string discovery_line(const Diagnosis& d) {
  if (!d.discovery) return "";
  const std::size_t found = discovered_targets(d);
  return "containers: " + std::to_string(found) + " found (" +
         safe(describe_discovery(*d.discovery)) + ")\n";
}

}  // namespace

std::string render_text(const Diagnosis& d, bool colour) {
  const Palette p{colour};
  return verdict_line(d, p) + instance_line(d.inference.instance) + discovery_line(d) +
         targets_block(d, p) + findings_block(d, p);
}

}  // namespace imds
