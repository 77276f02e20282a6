// Snapshot tracking and change detection: pure functions, no I/O.
#include "snapshot.hpp"

#include <algorithm>

#include "policy.hpp"
#include "words.hpp"

namespace imds::agent {
namespace {

std::pair<int, int> hop_range(const HopLimit& h) {
  if (h.exact) return {*h.exact, *h.exact};
  return {h.lower, h.upper};
}

void add_hop_fields(std::vector<JournalField>& f, const HopLimit& h) {
  auto [lo, hi] = hop_range(h);
  if (h.exact) f.push_back({"IMDS_HOP_LIMIT", std::to_string(*h.exact)});
  f.push_back({"IMDS_HOP_LIMIT_MIN", std::to_string(lo)});
  f.push_back({"IMDS_HOP_LIMIT_MAX", std::to_string(hi)});
  f.push_back({"IMDS_HOP_LIMIT_RANGE", hop_limit_range(h)});
}

std::string tristate_text(Tristate t) { return std::string(to_string(t)); }

std::string duration_text(std::chrono::seconds s) {
  auto n = s.count();
  if (n < 120) return std::to_string(n) + "s";
  if (n < 7200) return std::to_string(n / 60) + "min";
  return std::to_string(n / 3600) + "h";
}

void add_container_fields(std::vector<JournalField>& f, const ContainerState& c) {
  f.push_back({"IMDS_TARGET", c.name});
  f.push_back({"IMDS_NETNS", c.path});
  if (c.container_id) f.push_back({"IMDS_CONTAINER_ID", *c.container_id});
  if (c.container_name) f.push_back({"IMDS_CONTAINER_NAME", *c.container_name});
  if (c.distance) f.push_back({"IMDS_DISTANCE", std::to_string(*c.distance)});
  f.push_back({"IMDS_IMDSV2", tristate_text(c.imdsv2)});
  f.push_back({"IMDS_VERDICT", c.verdict.empty() ? tristate_text(c.imdsv2) : c.verdict});
  f.push_back({"IMDS_IMDSV2_IPV6", tristate_text(c.imdsv2_ipv6)});
  if (!c.verdict_ipv6.empty()) f.push_back({"IMDS_VERDICT_IPV6", c.verdict_ipv6});
}

Event option_event(std::string_view option, std::string old_value, std::string new_value) {
  Event e{EventKind::option_changed, spec_of(EventKind::option_changed).priority, {}};
  e.fields.push_back({"IMDS_OPTION", std::string(option)});
  e.fields.push_back({"IMDS_OLD_VALUE", std::move(old_value)});
  e.fields.push_back({"IMDS_NEW_VALUE", std::move(new_value)});
  return e;
}

Event policy_event(EventKind kind, const PolicyViolation& v, std::string actual) {
  Event e{kind, spec_of(kind).priority, {}};
  e.fields.push_back({"IMDS_OPTION", std::string(option_name(v.option))});
  e.fields.push_back({"IMDS_EXPECTED", v.expected});
  e.fields.push_back({"IMDS_NEW_VALUE", std::move(actual)});
  return e;
}

ObservedOptions observed(const OptionKnowledge& o) {
  ObservedOptions out;
  out.http_tokens = o.http_tokens.value_or(HttpTokens::unknown);
  out.hop_limit = o.hop_limit.value_or(HopLimit{});
  out.endpoint_enabled = o.endpoint_enabled;
  out.ipv6 = o.ipv6;
  out.tags = o.tags;
  return out;
}

// The value an option has now, for policy-compliant-again: the policy engine's own words.
std::string current_value(const OptionKnowledge& o, const Expectations& e, PolicyOption option) {
  for (const PolicyCheck& c : check_policy(e, observed(o))) {
    if (c.option == option) return c.actual;
  }
  return "unknown";
}

}  // namespace

bool hop_limit_proves_something(const HopLimit& h) {
  return h.exact.has_value() || h.lower > 1 || h.upper < kMaxHopLimit;
}

bool hop_limits_disjoint(const HopLimit& a, const HopLimit& b) {
  auto [alo, ahi] = hop_range(a);
  auto [blo, bhi] = hop_range(b);
  return ahi < blo || bhi < alo;
}

std::string container_key(const NetnsTarget& t) {
  return t.inode != 0 ? "ino:" + std::to_string(t.inode) : "name:" + t.name;
}

std::vector<PolicyViolation> policy_violations(const OptionKnowledge& o, const Expectations& e) {
  std::vector<PolicyViolation> out;
  for (const PolicyCheck& c : check_policy(e, observed(o))) {
    if (c.state == PolicyState::violated) out.push_back({c.option, c.expected, c.actual});
  }
  return out;
}

Snapshot observe(const Snapshot& previous, const Diagnosis& d,
                 const std::vector<NetnsTarget>* present, const Expectations& expectations,
                 std::chrono::system_clock::time_point now) {
  Snapshot next = previous;
  next.probed = true;
  next.endpoint = d.endpoint_v4;
  next.observed_at = now;
  const Inference& inf = d.inference;

  switch (inf.endpoint) {
    case EndpointState::enabled:
    case EndpointState::disabled:
      next.reachable = true;
      next.unreachable_reason.clear();
      next.unreachable_since.reset();
      next.options.endpoint_enabled = inf.endpoint == EndpointState::enabled;
      break;
    case EndpointState::unreachable:
      if (previous.reachable != false) next.unreachable_since = now;
      next.reachable_since.reset();
      next.reachable = false;
      next.unreachable_reason = unreachable_words(inf.unreachable_reason);
      break;
    case EndpointState::unknown:
      break;
  }
  const bool answering = inf.endpoint == EndpointState::enabled;
  if (answering) {
    if (inf.http_tokens != HttpTokens::unknown) next.options.http_tokens = inf.http_tokens;
    if (hop_limit_proves_something(inf.hop_limit)) next.options.hop_limit = inf.hop_limit;
    if (inf.ipv6 != Tristate::unknown) next.options.ipv6 = inf.ipv6 == Tristate::yes;
    if (inf.tags != Tristate::unknown) next.options.tags = inf.tags == Tristate::yes;
  }

  std::vector<NetnsTarget> from_diagnosis;
  if (present == nullptr) {
    for (const auto& t : d.targets) {
      if (!t.target.is_host) from_diagnosis.push_back(t.target);
    }
    present = &from_diagnosis;
  }
  // Verdicts belong to namespaces by identity (container_key), never by name: two
  // directories may hold entries of the same name.
  std::map<std::string, const TargetVerdict*> verdicts;
  for (std::size_t i = 0; i < d.targets.size() && i < inf.targets.size(); ++i) {
    verdicts.emplace(container_key(d.targets[i].target), &inf.targets[i]);
  }
  next.containers.clear();
  for (const auto& t : *present) {
    if (t.is_host) continue;
    auto key = container_key(t);
    auto old = previous.containers.find(key);
    ContainerState c = old != previous.containers.end() ? old->second : ContainerState{};
    c.key = key;
    c.name = t.name;
    c.path = t.path;
    if (t.container_id) c.container_id = t.container_id;
    c.container_name = t.container_name;  // follows `docker rename`
    // Container verdicts only mean something while the IMDS answers the host: an outage
    // or a disabled endpoint is reported once, as such, not as every container losing v2.
    if (const auto found = verdicts.find(key); answering && found != verdicts.end()) {
      const TargetVerdict& v = *found->second;
      if (v.v4.imdsv2 != Tristate::unknown) {
        c.imdsv2 = v.v4.imdsv2;
        c.verdict = v.v4.summary;
      }
      // IPv6 IMDSv2 is a question only while the instance serves IPv6.
      if (v.v6.probed) c.verdict_ipv6 = v.v6.summary;
      if (v.v6.probed && inf.ipv6 == Tristate::yes) c.imdsv2_ipv6 = v.v6.imdsv2;
      if (v.distance) c.distance = v.distance;
    }
    next.containers.emplace(key, std::move(c));
  }
  next.expectations = expectations;
  next.violations = policy_violations(next.options, expectations);
  next.findings.clear();
  for (const auto& f : d.findings) {
    if (f.severity >= Severity::warning) next.findings.push_back(f.id);
  }
  if (d.discovery) {
    next.discovery.unusable_entries = d.discovery->unusable_total();
    next.discovery.unreadable_dirs = d.discovery->unreadable_dirs();
    next.discovery.unlisted_namespaces = d.discovery->unlisted_container_namespaces;
    next.discovery.summary = describe_discovery(*d.discovery);
  }
  return next;
}

std::vector<Event> diff(const Snapshot& prev, const Snapshot& next) {
  std::vector<Event> events;
  auto unreachable_event = [&] {
    Event e{EventKind::imds_unreachable, spec_of(EventKind::imds_unreachable).priority, {}};
    e.fields.push_back({"IMDS_ENDPOINT", next.endpoint});
    e.fields.push_back({"IMDS_REASON", next.unreachable_reason});
    return e;
  };
  auto drift_events = [&](const std::vector<PolicyViolation>& before) {
    for (const auto& v : next.violations) {
      bool known = std::any_of(before.begin(), before.end(),
                               [&](const auto& b) { return b.option == v.option; });
      if (!known) events.push_back(policy_event(EventKind::policy_drift, v, v.actual));
    }
  };

  // Once when what discovery cannot see changes (and at the start when it cannot see all).
  auto discovery_event = [&] {
    Event e{EventKind::discovery_changed, spec_of(EventKind::discovery_changed).priority, {}};
    if (next.discovery.any()) e.priority = Priority::warning;
    e.fields.push_back({"IMDS_DISCOVERY", next.discovery.summary});
    e.fields.push_back({"IMDS_UNUSABLE_ENTRIES", std::to_string(next.discovery.unusable_entries)});
    e.fields.push_back({"IMDS_UNREADABLE_DIRS", std::to_string(next.discovery.unreadable_dirs)});
    e.fields.push_back(
        {"IMDS_UNLISTED_NAMESPACES", std::to_string(next.discovery.unlisted_namespaces)});
    return e;
  };

  if (!prev.probed) {
    Event e{EventKind::first_verdict, spec_of(EventKind::first_verdict).priority, {}};
    std::string endpoint_state = next.reachable == false ? "unreachable"
                                 : next.options.endpoint_enabled
                                     ? switch_word(*next.options.endpoint_enabled)
                                     : "unknown";
    int no_v2 = 0;
    for (const auto& [k, c] : next.containers) no_v2 += c.imdsv2 == Tristate::no ? 1 : 0;
    e.fields.push_back({"IMDS_ENDPOINT", next.endpoint});
    e.fields.push_back({"IMDS_HTTP_ENDPOINT", endpoint_state});
    e.fields.push_back({"IMDS_HTTP_TOKENS", http_tokens_word(next.options.http_tokens)});
    add_hop_fields(e.fields, next.options.hop_limit.value_or(HopLimit{}));
    if (next.options.ipv6) e.fields.push_back({"IMDS_IPV6", switch_word(*next.options.ipv6)});
    if (next.options.tags) e.fields.push_back({"IMDS_TAGS", switch_word(*next.options.tags)});
    e.fields.push_back({"IMDS_CONTAINERS", std::to_string(next.containers.size())});
    e.fields.push_back({"IMDS_CONTAINERS_NO_V2", std::to_string(no_v2)});
    e.fields.push_back({"IMDS_POLICY_VIOLATIONS", std::to_string(next.violations.size())});
    // journald keeps repeated fields: one IMDS_FINDING= per finding at warning or worse.
    for (const auto& id : next.findings) e.fields.push_back({"IMDS_FINDING", id});
    if (next.reachable == false || no_v2 > 0 || !next.violations.empty()) {
      e.priority = Priority::warning;
    }
    events.push_back(std::move(e));
    if (next.reachable == false) events.push_back(unreachable_event());
    drift_events({});
    if (next.discovery.any()) events.push_back(discovery_event());
    return events;
  }
  if (!prev.discovery.same_counts(next.discovery)) events.push_back(discovery_event());

  if (prev.reachable != false && next.reachable == false) events.push_back(unreachable_event());
  if (prev.reachable == false && next.reachable == true) {
    Event e{EventKind::imds_back, spec_of(EventKind::imds_back).priority, {}};
    e.fields.push_back({"IMDS_ENDPOINT", next.endpoint});
    auto since = prev.unreachable_since.value_or(prev.observed_at);
    // A return confirmed later (confirm.hpp) ended when its first answer came.
    auto until = next.reachable_since.value_or(next.observed_at);
    if (until < since) until = next.observed_at;
    auto down = std::chrono::duration_cast<std::chrono::seconds>(until - since);
    e.fields.push_back({"IMDS_DOWNTIME", duration_text(down)});
    e.fields.push_back({"IMDS_DOWNTIME_SEC", std::to_string(down.count())});
    events.push_back(std::move(e));
  }

  const auto& po = prev.options;
  const auto& no = next.options;
  if (po.http_tokens && no.http_tokens && *po.http_tokens != *no.http_tokens) {
    auto e = option_event(option_name(PolicyOption::http_tokens), http_tokens_word(po.http_tokens),
                          http_tokens_word(no.http_tokens));
    e.fields.push_back({"IMDS_HTTP_TOKENS", http_tokens_word(no.http_tokens)});
    if (*no.http_tokens == HttpTokens::optional) e.priority = Priority::warning;
    events.push_back(std::move(e));
  }
  if (po.hop_limit && no.hop_limit && hop_limits_disjoint(*po.hop_limit, *no.hop_limit)) {
    auto e = option_event(option_name(PolicyOption::hop_limit), hop_limit_range(*po.hop_limit),
                          hop_limit_range(*no.hop_limit));
    add_hop_fields(e.fields, *no.hop_limit);
    events.push_back(std::move(e));
  }
  auto bool_option = [&](std::string_view option, JournalKey key, std::optional<bool> a,
                         std::optional<bool> b) {
    if (a && b && *a != *b) {
      auto e = option_event(option, switch_word(*a), switch_word(*b));
      e.fields.push_back({key, switch_word(*b)});
      events.push_back(std::move(e));
    }
  };
  bool_option(option_name(PolicyOption::endpoint), "IMDS_HTTP_ENDPOINT", po.endpoint_enabled,
              no.endpoint_enabled);
  bool_option(option_name(PolicyOption::ipv6), "IMDS_IPV6", po.ipv6, no.ipv6);
  bool_option(option_name(PolicyOption::tags), "IMDS_TAGS", po.tags, no.tags);

  drift_events(prev.violations);
  for (const auto& v : prev.violations) {
    bool still = std::any_of(next.violations.begin(), next.violations.end(),
                             [&](const auto& n) { return n.option == v.option; });
    if (!still) {
      events.push_back(policy_event(EventKind::policy_compliant_again, v,
                                    current_value(next.options, next.expectations, v.option)));
    }
  }

  // A container is announced once it has a verdict; before that it is only "discovered".
  for (const auto& [key, c] : next.containers) {
    auto old = prev.containers.find(key);
    bool was_known = old != prev.containers.end() && old->second.imdsv2 != Tristate::unknown;
    if (c.imdsv2 == Tristate::unknown) continue;
    std::optional<EventKind> kind;
    if (!was_known) {
      kind = EventKind::container_appeared;
    } else if (old->second.imdsv2 == Tristate::yes && c.imdsv2 == Tristate::no) {
      kind = EventKind::container_imdsv2_lost;
    } else if (old->second.imdsv2 == Tristate::no && c.imdsv2 == Tristate::yes) {
      kind = EventKind::container_imdsv2_gained;
    }
    if (!kind) continue;
    Event e{*kind, spec_of(*kind).priority, {}};
    // A new container that cannot get a token is worth more than a debug line.
    if (*kind == EventKind::container_appeared && c.imdsv2 == Tristate::no) {
      e.priority = Priority::warning;
    }
    add_container_fields(e.fields, c);
    events.push_back(std::move(e));
  }
  for (const auto& [key, c] : prev.containers) {
    if (c.imdsv2 == Tristate::unknown || next.containers.contains(key)) continue;
    Event e{EventKind::container_vanished, spec_of(EventKind::container_vanished).priority, {}};
    add_container_fields(e.fields, c);
    events.push_back(std::move(e));
  }
  return events;
}

std::string status_line(const Snapshot& s) {
  if (!s.probed) return "Probing the IMDS for the first time";
  if (s.reachable == false) return "IMDS unreachable (" + s.unreachable_reason + ")";
  int no_v2 = 0;
  for (const auto& [k, c] : s.containers) no_v2 += c.imdsv2 == Tristate::no ? 1 : 0;
  std::string out = "HttpTokens " + http_tokens_word(s.options.http_tokens) + ", hop limit " +
                    (s.options.hop_limit ? hop_limit_range(*s.options.hop_limit) : "unknown");
  if (s.options.endpoint_enabled == false) out = "HttpEndpoint disabled";
  out += "; " + std::to_string(s.containers.size()) + " container(s), " + std::to_string(no_v2) +
         " without IMDSv2";
  if (!s.violations.empty()) {
    out += "; policy drift: " + std::to_string(s.violations.size()) + " option(s)";
  }
  return out;
}

}  // namespace imds::agent
