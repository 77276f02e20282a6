// Changes people can trust: a change of the IMDS's reachability, of an instance option or of a
// container's IMDSv2 becomes a journal event only once quick re-probes saw it hold
// (ChangeGate); two reports about one subject are never closer than a minimum gap; a subject
// that keeps changing yields one flapping event, then quiet until it holds still. Until then
// the change is "suspected": visible in /v1/status, never in the journal as a fact.
// Pure: no I/O, time comes in as values. The agent feeds it each cycle (agent.cpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "events.hpp"
#include "model.hpp"
#include "snapshot.hpp"

namespace imds::agent {

struct GateConfig {
  unsigned confirmations = 2;  // re-probes that must agree before a change is reported
  std::chrono::milliseconds min_event_gap{std::chrono::minutes(1)};
  unsigned flap_changes = 3;  // confirmed changes within flap_window that make a subject flap
  std::chrono::milliseconds flap_window{std::chrono::minutes(15)};
};

// What one probe said of one subject: its value in words ("reachable", "required",
// "enabled", "yes"), and for the hop limit its proven range, since two readings of the hop
// limit agree when one hop limit fits both (a tighter bound is more knowledge, not a change).
struct Reading {
  std::string value;
  std::optional<HopLimit> hop_limit;
  [[nodiscard]] bool agrees_with(const Reading& other) const;
};

// Subjects: kImdsSubject (the host reaches the IMDS), "option:NAME" (HttpTokens, ...),
// "container:KEY" (the IPv4 IMDSv2 verdict of the container namespace KEY).
inline constexpr std::string_view kImdsSubject = "imds";
struct SubjectReading {
  std::string subject;
  std::string label;  // for people: "IMDS at http://...", "option HttpTokens", "container c1"
  Reading reading;
};

// The subjects `d` says something about (those it covered), valued as in `observed`, the
// snapshot observe() made of it. A container the cycle did not probe, an option the answers
// did not prove, or anything behind an unreachable IMDS gives no reading.
std::vector<SubjectReading> readings_of(const Diagnosis& d, const Snapshot& observed);

// A change seen but not reported, for /v1/status.
struct Suspicion {
  std::string subject;
  std::string label;
  std::string reported;                         // the value the journal last said
  std::string observed;                         // the latest reading
  unsigned observations;                        // consecutive readings of `observed`
  std::chrono::system_clock::time_point since;  // the first of them
  std::string waiting_for;                      // "confirmation", "min-event-gap" or "flapping"
};

class ChangeGate {
 public:
  explicit ChangeGate(GateConfig config = {}) : config_(config) {}
  void reconfigure(GateConfig config) { config_ = config; }
  [[nodiscard]] const GateConfig& config() const { return config_; }

  struct Step {
    std::set<std::string> held;  // subjects whose reading is not to be reported (yet)
    std::vector<Event> events;   // flapping, flapping-ended
    // Suspicions still short of their confirmations: re-probe soon, these containers
    // (keys; the host is always probed) and with a tokenless GET when HttpTokens is one.
    bool confirm_soon = false;
    std::vector<std::string> confirm_containers;
    bool confirm_http_tokens = false;
  };
  // One cycle's readings. Subjects without a reading this cycle keep their state.
  Step step(const std::vector<SubjectReading>& readings, std::chrono::system_clock::time_point now);
  // Forgets the containers (container_key) not in `present`: they vanished.
  void forget_containers_except(const std::map<std::string, ContainerState>& present);

  [[nodiscard]] std::vector<Suspicion> suspicions() const;
  // When the current run of agreeing readings of `subject` began (the real start of a
  // change reported later), if the subject is known.
  [[nodiscard]] std::optional<std::chrono::system_clock::time_point> since(
      const std::string& subject) const;
  // Suspicions that ended without a report: the reading went back before it was confirmed.
  [[nodiscard]] std::uint64_t transient_total() const { return transient_; }
  [[nodiscard]] std::uint64_t flapping_total() const { return flapping_; }

 private:
  struct Track {
    std::string label;
    Reading reported;   // what the journal says (first reading, then each report)
    Reading confirmed;  // the last value that held through its re-probes
    Reading run;        // the latest reading and how many agreeing ones came in a row
    unsigned run_length = 0;
    std::chrono::system_clock::time_point run_since{};
    std::optional<std::chrono::system_clock::time_point> last_report;
    std::deque<std::chrono::system_clock::time_point> changes;  // confirmed, in the window
    bool flapping = false;
    bool suspected = false;  // the reading differs from `reported`
    std::string waiting_for;
  };
  GateConfig config_;
  std::map<std::string, Track> tracks_;
  std::uint64_t transient_ = 0;
  std::uint64_t flapping_ = 0;
};

// `observed` with the held subjects' state taken back from `reported`: what the journal may
// say now. diff(reported, result) then reports exactly the confirmed changes. A reported
// outage starts, and a reported return ends it, when its first reading came (`gate.since`).
Snapshot hold_back(const Snapshot& reported, Snapshot observed, const std::set<std::string>& held,
                   const ChangeGate& gate);

// One cycle as the agent runs it: observe() the Diagnosis on top of what was reported, step
// the gate, hold back what is not confirmed, diff: the snapshot to keep, the events to send
// (the gate's own, then the changes) and the gate's step (re-probes wanted). While the first
// verdict has unconfirmed alarms and `first_may_wait` (its re-probes are not used up),
// nothing is kept or sent: the first verdict waits for them.
struct GatedCycle {
  Snapshot next;
  std::vector<Event> events;
  ChangeGate::Step step;
};
GatedCycle gated_cycle(ChangeGate& gate, const Snapshot& reported, const Diagnosis& d,
                       const std::vector<NetnsTarget>* present, const Expectations& expectations,
                       std::chrono::system_clock::time_point now, bool first_may_wait = true);

}  // namespace imds::agent
