// Confirmation, minimum gap and flapping of reported changes (confirm.hpp): pure, no I/O.
#include "confirm.hpp"

#include <algorithm>

#include "duration.hpp"
#include "policy.hpp"
#include "words.hpp"

namespace imds::agent {
namespace {

constexpr std::string_view kOptionPrefix = "option:";
constexpr std::string_view kContainerPrefix = "container:";

std::string option_subject(PolicyOption o) {
  return std::string(kOptionPrefix) + std::string(option_name(o));
}

std::string window_text(std::chrono::milliseconds w) { return format_duration(w); }

Event gate_event(EventKind kind, const std::string& label) {
  Event e{kind, spec_of(kind).priority, {}};
  e.fields.push_back({"IMDS_SUBJECT", label});
  return e;
}

// A reading that, as the first one of its subject, would be an alarm.
bool is_alarm(const SubjectReading& r) {
  return (r.subject == kImdsSubject && r.reading.value == "unreachable") ||
         (r.subject.starts_with(kContainerPrefix) && r.reading.value == "no");
}

}  // namespace

bool Reading::agrees_with(const Reading& other) const {
  if (hop_limit && other.hop_limit) return !hop_limits_disjoint(*hop_limit, *other.hop_limit);
  return value == other.value;
}

std::vector<SubjectReading> readings_of(const Diagnosis& d, const Snapshot& observed) {
  std::vector<SubjectReading> out;
  const Inference& inf = d.inference;
  if (inf.endpoint == EndpointState::unknown) return out;
  out.push_back({std::string(kImdsSubject),
                 "IMDS at " + observed.endpoint,
                 {observed.reachable == false ? "unreachable" : "reachable", std::nullopt}});
  if (inf.endpoint == EndpointState::unreachable) return out;
  const auto option = [&](PolicyOption o, Reading r) {
    out.push_back({option_subject(o), "option " + std::string(option_name(o)), std::move(r)});
  };
  option(PolicyOption::endpoint, {switch_word(inf.endpoint == EndpointState::enabled), {}});
  // What observe() learns only while the endpoint answers.
  if (inf.endpoint != EndpointState::enabled) return out;
  const OptionKnowledge& o = observed.options;
  if (inf.http_tokens != HttpTokens::unknown) {
    option(PolicyOption::http_tokens, {http_tokens_word(o.http_tokens), {}});
  }
  if (hop_limit_proves_something(inf.hop_limit) && o.hop_limit) {
    option(PolicyOption::hop_limit, {hop_limit_range(*o.hop_limit), o.hop_limit});
  }
  if (inf.ipv6 != Tristate::unknown) option(PolicyOption::ipv6, {switch_word(o.ipv6), {}});
  if (inf.tags != Tristate::unknown) option(PolicyOption::tags, {switch_word(o.tags), {}});
  for (std::size_t i = 0; i < d.targets.size() && i < inf.targets.size(); ++i) {
    if (d.targets[i].target.is_host || inf.targets[i].v4.imdsv2 == Tristate::unknown) continue;
    const std::string key = container_key(d.targets[i].target);
    const auto c = observed.containers.find(key);
    if (c == observed.containers.end()) continue;
    out.push_back({std::string(kContainerPrefix) + key,
                   "container namespace " + c->second.name,
                   {std::string(to_string(c->second.imdsv2)), std::nullopt}});
  }
  return out;
}

ChangeGate::Step ChangeGate::step(const std::vector<SubjectReading>& readings,
                                  std::chrono::system_clock::time_point now) {
  Step out;
  for (const SubjectReading& r : readings) {
    auto [it, fresh] = tracks_.try_emplace(r.subject);
    Track& t = it->second;
    t.label = r.label;
    if (fresh) {
      t.run = t.confirmed = r.reading;
      t.run_length = 1;
      t.run_since = now;
      // The first reading is what there is, unless it is an alarm: an IMDS unreachable
      // or a container without IMDSv2 is confirmed like any change before it is said.
      if (!is_alarm(r)) {
        t.reported = r.reading;
        continue;
      }
      t.confirmed = Reading{};
    } else if (r.reading.agrees_with(t.run)) {
      ++t.run_length;
      t.run = r.reading;  // the latest: a tighter hop-limit range replaces a wider one
    } else {
      // While flapping there are no re-probes: every change read counts.
      if (t.flapping) t.changes.push_back(now);
      t.run = r.reading;
      t.run_length = 1;
      t.run_since = now;
    }
    const bool confirmed = t.run_length >= 1 + config_.confirmations;
    if (!t.run.agrees_with(t.confirmed)) {
      // Only confirmed changes count towards flapping: a lost exchange is not one.
      if (confirmed) {
        if (!t.flapping && !t.confirmed.value.empty()) t.changes.push_back(now);
        t.confirmed = t.run;
      }
    } else {
      t.confirmed = t.run;
    }
    while (!t.changes.empty() && now - t.changes.front() >= config_.flap_window) {
      t.changes.pop_front();
    }
    if (!t.flapping && config_.flap_changes > 0 && t.changes.size() >= config_.flap_changes) {
      t.flapping = true;
      ++flapping_;
      Event e = gate_event(EventKind::flapping, t.label);
      e.fields.push_back({"IMDS_CHANGES", std::to_string(t.changes.size())});
      e.fields.push_back({"IMDS_WINDOW", window_text(config_.flap_window)});
      e.fields.push_back({"IMDS_OLD_VALUE", t.reported.value});
      e.fields.push_back({"IMDS_NEW_VALUE", t.run.value});
      out.events.push_back(std::move(e));
    } else if (t.flapping && t.changes.empty()) {  // held still for a whole window
      t.flapping = false;
      Event e = gate_event(EventKind::flapping_ended, t.label);
      e.fields.push_back({"IMDS_WINDOW", window_text(config_.flap_window)});
      e.fields.push_back({"IMDS_NEW_VALUE", t.run.value});
      out.events.push_back(std::move(e));
    }

    // Never reported yet (a first reading that was an alarm): a reading that is none is
    // what there is.
    const bool first = t.reported.value.empty();
    if (r.reading.agrees_with(t.reported) || (first && !is_alarm(r))) {
      if (t.suspected && t.waiting_for == "confirmation") ++transient_;
      t.suspected = false;
      t.reported = r.reading;  // more knowledge of the same (hop-limit bounds)
      continue;
    }
    const bool gap_passed = !t.last_report || now - *t.last_report >= config_.min_event_gap;
    if (confirmed && gap_passed && !t.flapping) {
      t.reported = r.reading;
      t.last_report = now;
      t.suspected = false;
      continue;
    }
    out.held.insert(r.subject);
    t.suspected = true;
    t.waiting_for = t.flapping ? "flapping" : !confirmed ? "confirmation" : "min-event-gap";
    if (!confirmed && !t.flapping) {
      out.confirm_soon = true;
      if (r.subject.starts_with(kContainerPrefix)) {
        out.confirm_containers.push_back(r.subject.substr(kContainerPrefix.size()));
      }
      if (r.subject == option_subject(PolicyOption::http_tokens)) out.confirm_http_tokens = true;
    }
  }
  return out;
}

void ChangeGate::forget_containers_except(const std::map<std::string, ContainerState>& present) {
  std::erase_if(tracks_, [&](const auto& kv) {
    return kv.first.starts_with(kContainerPrefix) &&
           !present.contains(kv.first.substr(kContainerPrefix.size()));
  });
}

std::vector<Suspicion> ChangeGate::suspicions() const {
  std::vector<Suspicion> out;
  for (const auto& [subject, t] : tracks_) {
    if (!t.suspected) continue;
    out.push_back({subject, t.label, t.reported.value, t.run.value, t.run_length, t.run_since,
                   t.waiting_for});
  }
  return out;
}

std::optional<std::chrono::system_clock::time_point> ChangeGate::since(
    const std::string& subject) const {
  const auto it = tracks_.find(subject);
  if (it == tracks_.end()) return std::nullopt;
  return it->second.run_since;
}

Snapshot hold_back(const Snapshot& reported, Snapshot observed, const std::set<std::string>& held,
                   const ChangeGate& gate) {
  Snapshot& out = observed;  // the result
  const std::string imds(kImdsSubject);
  for (const std::string& s : held) {
    if (s == imds) {
      out.reachable = reported.reachable;
      out.unreachable_reason = reported.unreachable_reason;
      out.unreachable_since = reported.unreachable_since;
      out.reachable_since = reported.reachable_since;
    } else if (s == option_subject(PolicyOption::http_tokens)) {
      out.options.http_tokens = reported.options.http_tokens;
    } else if (s == option_subject(PolicyOption::hop_limit)) {
      out.options.hop_limit = reported.options.hop_limit;
    } else if (s == option_subject(PolicyOption::endpoint)) {
      out.options.endpoint_enabled = reported.options.endpoint_enabled;
    } else if (s == option_subject(PolicyOption::ipv6)) {
      out.options.ipv6 = reported.options.ipv6;
    } else if (s == option_subject(PolicyOption::tags)) {
      out.options.tags = reported.options.tags;
    } else if (s.starts_with(kContainerPrefix)) {
      const std::string key = s.substr(kContainerPrefix.size());
      const auto was = reported.containers.find(key);
      const auto now = out.containers.find(key);
      if (now == out.containers.end()) continue;
      // Never reported (its first reading was an alarm): undecided, so not yet announced.
      now->second.imdsv2 =
          was != reported.containers.end() ? was->second.imdsv2 : Tristate::unknown;
      now->second.verdict = was != reported.containers.end() ? was->second.verdict : "";
    }
  }
  if (!held.contains(imds)) {
    // A change of reachability reported now began with its first reading.
    if (out.reachable == false && reported.reachable != false) {
      out.unreachable_since = gate.since(imds).value_or(out.observed_at);
    }
    if (out.reachable == true && reported.reachable == false)
      out.reachable_since = gate.since(imds);
  }
  out.violations = policy_violations(out.options, out.expectations);
  return observed;
}

GatedCycle gated_cycle(ChangeGate& gate, const Snapshot& reported, const Diagnosis& d,
                       const std::vector<NetnsTarget>* present, const Expectations& expectations,
                       std::chrono::system_clock::time_point now, bool first_may_wait) {
  Snapshot observed = observe(reported, d, present, expectations, now);
  GatedCycle out;
  out.step = gate.step(readings_of(d, observed), now);
  gate.forget_containers_except(observed.containers);
  out.next = hold_back(reported, std::move(observed), out.step.held, gate);
  if (!reported.probed && first_may_wait && !out.step.held.empty()) {
    // The first verdict waits for its alarms (an IMDS unreachable, a container without
    // IMDSv2) to be confirmed or dismissed, so that it says what holds; what this probe
    // learnt is kept for it.
    out.next.probed = false;
    return out;
  }
  // The gate's own events first: a flapping-ended comes before the change it lets through.
  out.events = out.step.events;
  for (Event& e : diff(reported, out.next)) out.events.push_back(std::move(e));
  return out;
}

}  // namespace imds::agent
