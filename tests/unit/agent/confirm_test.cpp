// Changes people can trust (confirm.hpp), over generated sequences of probe outcomes: lost
// exchanges never become events, every real change is reported exactly once within its
// confirmation, a flapping subject yields one event, and a return sooner than min-event-gap
// waits for it. The agent's cycle (gated_cycle) runs as in imds-agent: a regular probe, then
// the re-probes the gate asks for, min-probe-gap apart.
#include "confirm.hpp"

#include <gtest/gtest.h>

#include <random>

#include "fixtures.hpp"

namespace imds::agent {
namespace {

using namespace testing;
using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;

constexpr auto kGap = 2s;  // min-probe-gap between re-probes

// What is true of the instance while a probe runs.
struct Truth {
  bool host_up = true;
  Tristate c1 = Tristate::yes;
  int hop = 2;
  bool operator==(const Truth&) const = default;
};

// A lost exchange: the host's probe gets no answer, or c1's token PUT answer is lost.
enum class Loss { none, host, c1 };

Diagnosis probe_of(const Truth& t, Loss loss) {
  if (!t.host_up || loss == Loss::host) {
    return diagnosis(HttpTokens::unknown, HopLimit{}, {{"c1", 11, t.c1}},
                     EndpointState::unreachable);
  }
  const Tristate c1 = loss == Loss::c1 ? Tristate::no : t.c1;
  return diagnosis(HttpTokens::required, exact(t.hop), {{"c1", 11, c1}});
}

struct Logged {
  Clock::time_point at;
  Event event;
};

// imds-agent's loop over a simulated world.
class Sim {
 public:
  Sim(GateConfig config, std::chrono::seconds interval) : gate_(config), interval_(interval) {}

  // A regular cycle at now(), then its re-probes; `world(time)` gives each probe's outcome.
  template <typename World>
  void cycle(World&& world) {
    const Clock::time_point start = now_;
    ChangeGate::Step step = probe(world(now_));
    for (unsigned round = 0; step.confirm_soon && round < gate_.config().confirmations + 2;
         ++round) {
      now_ += kGap;
      ++reprobes;
      step = probe(world(now_));
    }
    now_ = start + interval_;
  }
  ChangeGate::Step probe(const Diagnosis& d) {
    GatedCycle c = gated_cycle(gate_, reported_, d, nullptr, Expectations{}, now_);
    reported_ = std::move(c.next);
    for (auto& e : c.events) log.push_back({now_, std::move(e)});
    return c.step;
  }
  [[nodiscard]] Clock::time_point now() const { return now_; }
  [[nodiscard]] const Snapshot& reported() const { return reported_; }
  [[nodiscard]] const ChangeGate& gate() const { return gate_; }
  // The events after the first verdict.
  [[nodiscard]] std::vector<Logged> changes() const {
    std::vector<Logged> out;
    for (const auto& l : log) {
      if (l.event.kind != EventKind::first_verdict) out.push_back(l);
    }
    return out;
  }

  std::vector<Logged> log;
  int reprobes = 0;

 private:
  ChangeGate gate_;
  std::chrono::seconds interval_;
  Snapshot reported_;
  Clock::time_point now_ = Clock::time_point{} + 1000h;
};

std::string describe(const std::vector<Logged>& log) {
  std::string out;
  for (const auto& l : log) {
    out += std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                              l.at - (Clock::time_point{} + 1000h))
                              .count()) +
           "s " + std::string(spec_of(l.event.kind).name) + " " +
           expand_template(spec_of(l.event.kind).message, l.event.fields) + "\n";
  }
  return out;
}

// Losses in bursts of 1..`longest` consecutive probes, each burst starting with probability
// `p` and followed by at least one clean probe (else two bursts would be one longer one).
class LossProcess {
 public:
  LossProcess(unsigned seed, double p, unsigned longest) : rng_(seed), p_(p), longest_(longest) {}
  Loss next() {
    if (left_ > 0) {
      --left_;
      return kind_;
    }
    if (kind_ != Loss::none) {
      kind_ = Loss::none;
      return Loss::none;
    }
    if (!std::bernoulli_distribution(p_)(rng_)) return Loss::none;
    kind_ = std::bernoulli_distribution(0.5)(rng_) ? Loss::host : Loss::c1;
    left_ = std::uniform_int_distribution<unsigned>(1, longest_)(rng_) - 1;
    return kind_;
  }

 private:
  std::mt19937 rng_;
  double p_;
  unsigned longest_;
  unsigned left_ = 0;
  Loss kind_ = Loss::none;
};

TEST(ChangeGate, LostExchangesNeverBecomeEventsWhateverTheirPattern) {
  const GateConfig config;  // the defaults: 2 confirmations
  for (unsigned seed = 1; seed <= 40; ++seed) {
    Sim sim(config, 60s);
    // Bursts as long as the confirmations: a burst needs one more probe to be believed.
    LossProcess losses(seed, 0.05, config.confirmations);
    const Truth truth;
    for (int i = 0; i < 500; ++i) {
      sim.cycle([&](Clock::time_point) { return probe_of(truth, losses.next()); });
    }
    // A container whose first reading was a loss is announced when its verdict is known:
    // that is no alarm (it gets a token).
    std::vector<Logged> alarms;
    for (const auto& l : sim.changes()) {
      const bool announced =
          l.event.kind == EventKind::container_appeared && *l.event.field("IMDS_IMDSV2") == "yes";
      if (!announced) alarms.push_back(l);
    }
    EXPECT_EQ(describe(alarms), "") << "seed " << seed;
    EXPECT_GT(sim.gate().transient_total(), 0U) << "seed " << seed;
    EXPECT_EQ(sim.reported().reachable, true);
    EXPECT_EQ(sim.reported().containers.begin()->second.imdsv2, Tristate::yes);
  }
}

TEST(ChangeGate, ALossAsLongAsTheConfirmationsPlusOneIsAnOutage) {
  // The boundary: with 2 confirmations, 3 probes in a row that see the IMDS unreachable are
  // an outage (the first sighting and both re-probes agree).
  Sim sim(GateConfig{}, 60s);
  int probes = 0;
  const Truth truth;
  sim.cycle([&](Clock::time_point) { return probe_of(truth, Loss::none); });
  sim.cycle(
      [&](Clock::time_point) { return probe_of(truth, ++probes <= 3 ? Loss::host : Loss::none); });
  ASSERT_EQ(sim.changes().size(), 1U) << describe(sim.changes());
  EXPECT_EQ(sim.changes()[0].event.kind, EventKind::imds_unreachable);
  EXPECT_EQ(sim.reprobes, 2);
}

TEST(ChangeGate, EveryRealChangeIsReportedExactlyOnceWithinItsConfirmation) {
  const GateConfig config;
  const auto interval = 60s;
  for (unsigned seed = 1; seed <= 30; ++seed) {
    std::mt19937 rng(seed);
    Sim sim(config, interval);
    // The truth over time: a change every 8..20 cycles (fewer than flap-changes per
    // flap-window), to one subject at a time; c1 and the hop limit change only while the
    // host reaches the IMDS (behind an outage nothing can see them).
    std::vector<std::pair<Clock::time_point, Truth>> timeline{{sim.now(), Truth{}}};
    Clock::time_point t = sim.now();
    for (int k = 0; k < 20; ++k) {
      t += interval * std::uniform_int_distribution<int>(8, 20)(rng) + 7s;
      Truth next = timeline.back().second;
      const int what = next.host_up ? std::uniform_int_distribution<int>(0, 2)(rng) : 0;
      if (what == 0) next.host_up = !next.host_up;
      if (what == 1) next.c1 = next.c1 == Tristate::yes ? Tristate::no : Tristate::yes;
      if (what == 2) next.hop = next.hop == 2 ? 3 : 2;
      timeline.emplace_back(t, next);
    }
    const auto truth_at = [&](Clock::time_point when) {
      Truth out = timeline.front().second;
      for (const auto& [since, truth] : timeline) {
        if (since <= when) out = truth;
      }
      return out;
    };
    // Isolated lost exchanges on top (one probe each).
    LossProcess losses(seed, 0.02, 1);
    while (sim.now() < t + interval * 5) {
      sim.cycle([&](Clock::time_point when) { return probe_of(truth_at(when), losses.next()); });
    }
    // One event per change of the truth, of the right kind, in order, each within two
    // regular cycles plus its re-probes of the change.
    const auto events = sim.changes();
    ASSERT_EQ(events.size(), timeline.size() - 1) << "seed " << seed << "\n" << describe(events);
    for (std::size_t i = 1; i < timeline.size(); ++i) {
      const Truth& a = timeline[i - 1].second;
      const Truth& b = timeline[i].second;
      const Logged& e = events[i - 1];
      EventKind want = EventKind::option_changed;
      if (a.host_up != b.host_up) {
        want = b.host_up ? EventKind::imds_back : EventKind::imds_unreachable;
      } else if (a.c1 != b.c1) {
        want = b.c1 == Tristate::no ? EventKind::container_imdsv2_lost
                                    : EventKind::container_imdsv2_gained;
      }
      EXPECT_EQ(e.event.kind, want) << "seed " << seed << " change " << i << "\n"
                                    << describe(events);
      EXPECT_GE(e.at, timeline[i].first);
      EXPECT_LE(e.at, timeline[i].first + 2 * interval + (config.confirmations + 2) * kGap)
          << "seed " << seed << " change " << i;
    }
    EXPECT_EQ(sim.gate().suspicions().size(), 0U);
  }
}

TEST(ChangeGate, AFlappingContainerYieldsOneFlappingEventThenQuietUntilItSettles) {
  const GateConfig config;  // 3 confirmed changes in 15 min
  Sim sim(config, 60s);
  Truth truth;
  int cycle = 0;
  for (; cycle < 40; ++cycle) {  // its token comes and goes every minute
    truth.c1 = cycle % 2 == 0 ? Tristate::yes : Tristate::no;
    sim.cycle([&](Clock::time_point) { return probe_of(truth, Loss::none); });
  }
  truth.c1 = Tristate::no;
  for (; cycle < 70; ++cycle) {  // then it holds still
    sim.cycle([&](Clock::time_point) { return probe_of(truth, Loss::none); });
  }
  const auto events = sim.changes();
  std::vector<EventKind> kinds;
  kinds.reserve(events.size());
  for (const auto& e : events) kinds.push_back(e.event.kind);
  // Two changes are believed, the third makes it flapping, then nothing until 15 quiet
  // minutes have passed; then it says so, and reports the value it settled on.
  EXPECT_EQ(kinds, (std::vector{EventKind::container_imdsv2_lost,
                                EventKind::container_imdsv2_gained, EventKind::flapping,
                                EventKind::flapping_ended, EventKind::container_imdsv2_lost}))
      << describe(events);
  ASSERT_GE(events.size(), 3U);
  EXPECT_EQ(*events[2].event.field("IMDS_CHANGES"), "3");
  EXPECT_EQ(*events[2].event.field("IMDS_SUBJECT"), "container namespace c1");
  EXPECT_EQ(sim.gate().flapping_total(), 1U);
  EXPECT_EQ(sim.reported().containers.begin()->second.imdsv2, Tristate::no);
}

TEST(ChangeGate, AReturnSoonerThanTheMinimumGapWaitsAndItsDowntimeCountsFromTheFirstAnswer) {
  GateConfig config;
  config.min_event_gap = 60s;
  Sim sim(config, 10s);
  Truth truth;
  sim.cycle([&](Clock::time_point) { return probe_of(truth, Loss::none); });
  const Clock::time_point down_at = sim.now();
  const Clock::time_point up_at = down_at + 20s;
  for (int i = 0; i < 12; ++i) {
    sim.cycle([&](Clock::time_point when) {
      truth.host_up = when < down_at || when >= up_at;
      return probe_of(truth, Loss::none);
    });
  }
  const auto events = sim.changes();
  ASSERT_EQ(events.size(), 2U) << describe(events);
  EXPECT_EQ(events[0].event.kind, EventKind::imds_unreachable);
  EXPECT_EQ(events[1].event.kind, EventKind::imds_back);
  EXPECT_GE(events[1].at - events[0].at, 60s) << "no unreachable/back pair closer than the gap";
  EXPECT_EQ(*events[1].event.field("IMDS_DOWNTIME_SEC"), "20");
}

TEST(ChangeGate, AFirstVerdictWithAnAlarmWaitsForItsReProbesAndThenSaysWhatHolds) {
  Sim sim(GateConfig{}, 60s);
  const auto broken = diagnosis(HttpTokens::required, exact(1), {{"c1", 11, Tristate::no}});
  EXPECT_TRUE(sim.probe(broken).confirm_soon);
  EXPECT_TRUE(sim.log.empty()) << describe(sim.log);
  sim.probe(broken);
  EXPECT_TRUE(sim.log.empty()) << describe(sim.log);
  sim.probe(broken);
  ASSERT_EQ(sim.log.size(), 1U) << describe(sim.log);
  EXPECT_EQ(sim.log[0].event.kind, EventKind::first_verdict);
  EXPECT_EQ(*sim.log[0].event.field("IMDS_CONTAINERS_NO_V2"), "1");
  // What the first probe learnt and its re-probes did not ask again is kept for it.
  Sim tokens(GateConfig{}, 60s);
  tokens.probe(diagnosis(HttpTokens::optional, exact(1), {{"c1", 11, Tristate::no}}));
  tokens.probe(diagnosis(HttpTokens::unknown, exact(1), {{"c1", 11, Tristate::no}}));
  tokens.probe(diagnosis(HttpTokens::unknown, exact(1), {{"c1", 11, Tristate::no}}));
  ASSERT_EQ(tokens.log.size(), 1U) << describe(tokens.log);
  EXPECT_EQ(*tokens.log[0].event.field("IMDS_HTTP_TOKENS"), "optional");
  // A first alarm that a re-probe dismisses is never said.
  Sim other(GateConfig{}, 60s);
  other.probe(diagnosis(HttpTokens::unknown, HopLimit{}, {}, EndpointState::unreachable));
  other.probe(diagnosis(HttpTokens::required, exact(1)));
  ASSERT_EQ(other.log.size(), 1U) << describe(other.log);
  EXPECT_EQ(*other.log[0].event.field("IMDS_HTTP_ENDPOINT"), "enabled");
}

TEST(ChangeGate, ATighterHopLimitBoundIsKnowledgeNeverASuspicion) {
  Sim sim(GateConfig{}, 60s);
  sim.probe(diagnosis(HttpTokens::required, bounds(2, 64)));
  const auto step = sim.probe(diagnosis(HttpTokens::required, exact(2)));
  EXPECT_FALSE(step.confirm_soon);
  EXPECT_TRUE(step.held.empty());
  EXPECT_EQ(sim.reported().options.hop_limit->exact, 2);
  EXPECT_TRUE(sim.changes().empty()) << describe(sim.changes());
}

TEST(ChangeGate, ReProbesAskForTheSuspectedContainersAndTokensOnly) {
  Sim sim(GateConfig{}, 60s);
  sim.probe(diagnosis(HttpTokens::optional, exact(2), {{"c1", 11}, {"c2", 12}}));
  auto step =
      sim.probe(diagnosis(HttpTokens::required, exact(2), {{"c1", 11}, {"c2", 12, Tristate::no}}));
  EXPECT_TRUE(step.confirm_soon);
  EXPECT_EQ(step.confirm_containers, std::vector<std::string>{"ino:12"});
  EXPECT_TRUE(step.confirm_http_tokens);
  EXPECT_EQ(step.held, (std::set<std::string>{"container:ino:12", "option:HttpTokens"}));
}

TEST(ChangeGate, WithoutConfirmationsAndGapEveryChangeIsReportedAtOnce) {
  GateConfig config;
  config.confirmations = 0;
  config.min_event_gap = 0s;
  Sim sim(config, 60s);
  const Truth truth;
  sim.cycle([&](Clock::time_point) { return probe_of(truth, Loss::none); });
  sim.cycle([&](Clock::time_point) { return probe_of(truth, Loss::host); });
  sim.cycle([&](Clock::time_point) { return probe_of(truth, Loss::none); });
  std::vector<EventKind> kinds;
  for (const auto& e : sim.changes()) kinds.push_back(e.event.kind);
  EXPECT_EQ(kinds, (std::vector{EventKind::imds_unreachable, EventKind::imds_back}));
  EXPECT_EQ(sim.reprobes, 0);
}

}  // namespace
}  // namespace imds::agent
