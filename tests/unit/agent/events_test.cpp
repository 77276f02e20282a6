// diff(): exactly one event per change between two agent snapshots, nothing otherwise.
#include "events.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "fixtures.hpp"
#include "snapshot.hpp"

namespace imds::agent {
namespace {

using namespace testing;
using Clock = std::chrono::system_clock;

class Tracker {
 public:
  explicit Tracker(Expectations e = {}) : expect_(e) {}
  std::vector<Event> feed(const Diagnosis& d, const std::vector<NetnsTarget>* present = nullptr) {
    now_ += std::chrono::seconds(60);
    auto next = observe(snap_, d, present, expect_, now_);
    auto events = diff(snap_, next);
    snap_ = std::move(next);
    return events;
  }
  [[nodiscard]] const Snapshot& snapshot() const { return snap_; }

 private:
  Expectations expect_;
  Snapshot snap_;
  Clock::time_point now_{};
};

std::vector<EventKind> kinds(const std::vector<Event>& events) {
  std::vector<EventKind> out;
  out.reserve(events.size());
  for (const auto& e : events) out.push_back(e.kind);
  return out;
}

std::string field(const Event& e, std::string_view key) {
  const auto* v = e.field(key);
  return v ? *v : "<absent>";
}

TEST(Journal, ANamespaceNameCannotForgeALineInTheMessage) {
  Tracker t;
  t.feed(diagnosis(HttpTokens::required, exact(2), {}));
  const auto events = t.feed(diagnosis(HttpTokens::required, exact(2),
                                       {{"evil\nimds-agent: IMDS back\x1b[2J", 11, Tristate::no}}));
  ASSERT_FALSE(events.empty());
  const JournalEntry entry = to_journal_entry(events.back());
  EXPECT_EQ(entry.message.find('\n'), std::string::npos) << entry.message;
  EXPECT_EQ(entry.message.find('\x1b'), std::string::npos) << entry.message;
  EXPECT_EQ(field(events.back(), "IMDS_TARGET"), "evil\nimds-agent: IMDS back\x1b[2J");
}

TEST(Observe, NamespacesOfTheSameNameKeepTheirOwnVerdicts) {
  // /run/netns/a and /run/docker/netns/a: same name, two namespaces (two inodes).
  Tracker t;
  auto d = diagnosis(HttpTokens::required, exact(2), {{"a", 11, Tristate::yes}, {"a", 12, Tristate::no}});
  d.targets[2].target.path = "/run/docker/netns/a";
  t.feed(d);
  const auto& containers = t.snapshot().containers;
  ASSERT_EQ(containers.size(), 2U);
  EXPECT_EQ(containers.at("ino:11").imdsv2, Tristate::yes);
  EXPECT_EQ(containers.at("ino:12").imdsv2, Tristate::no);
}

TEST(Observe, TheIpv6VerdictIsKeptBesideTheIpv4One) {
  Tracker t;
  auto d = diagnosis(HttpTokens::required, exact(2), {{"c1", 11, Tristate::yes}});
  d.inference.ipv6 = Tristate::yes;
  d.inference.targets[1].v6.probed = true;
  d.inference.targets[1].v6.imdsv2 = Tristate::no;
  d.inference.targets[1].v6.summary = "IMDS unreachable: no route (network unreachable)";
  const auto events = t.feed(d);
  const auto& c = t.snapshot().containers.at("ino:11");
  EXPECT_EQ(c.imdsv2, Tristate::yes);
  EXPECT_EQ(c.imdsv2_ipv6, Tristate::no);
  EXPECT_EQ(c.verdict_ipv6, "IMDS unreachable: no route (network unreachable)");
}

TEST(Diff, FirstProbeReportsOnlyTheVerdict) {
  Tracker t;
  auto events = t.feed(diagnosis(HttpTokens::required, exact(2), {{"c1", 11}}));
  ASSERT_EQ(kinds(events), std::vector{EventKind::first_verdict});
  EXPECT_EQ(events[0].priority, Priority::info);
  EXPECT_EQ(field(events[0], "IMDS_HTTP_TOKENS"), "required");
  EXPECT_EQ(field(events[0], "IMDS_HOP_LIMIT"), "2");
  EXPECT_EQ(field(events[0], "IMDS_CONTAINERS"), "1");
  EXPECT_EQ(field(events[0], "IMDS_CONTAINERS_NO_V2"), "0");
}

TEST(Diff, FirstProbeWithABrokenContainerIsAWarningVerdict) {
  Tracker t;
  auto events = t.feed(diagnosis(HttpTokens::required, exact(1), {{"c1", 11, Tristate::no}}));
  ASSERT_EQ(kinds(events), std::vector{EventKind::first_verdict});
  EXPECT_EQ(events[0].priority, Priority::warning);
  EXPECT_EQ(field(events[0], "IMDS_CONTAINERS_NO_V2"), "1");
}

TEST(Diff, TheVerdictCarriesOneFindingFieldPerWarningOrWorse) {
  Tracker t;
  auto d = diagnosis(HttpTokens::optional, exact(1), {{"c1", 11, Tristate::no}});
  d.findings = {{"tokens-optional", Severity::warning, {}, "", "", ""},
                {"container-no-token", Severity::error, {{"c1", std::nullopt, 1, std::nullopt}}, "", "", ""},
                {"hop-limit-info", Severity::info, {}, "", "", ""}};
  auto events = t.feed(d);
  ASSERT_EQ(events.size(), 1U);
  std::vector<std::string> ids;
  for (const auto& f : events[0].fields) {
    if (f.key.view() == "IMDS_FINDING") ids.push_back(f.value);
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"tokens-optional", "container-no-token"}));
}

TEST(Diff, UnreachableAtStartIsReportedWithTheVerdict) {
  Tracker t;
  auto events = t.feed(diagnosis(HttpTokens::unknown, HopLimit{}, {}, EndpointState::unreachable));
  EXPECT_EQ(kinds(events), (std::vector{EventKind::first_verdict, EventKind::imds_unreachable}));
  EXPECT_EQ(field(events[1], "IMDS_REASON"), "connection refused");
  EXPECT_EQ(events[1].priority, Priority::err);
}

TEST(Diff, WhatDiscoveryCannotSeeIsReportedOncePerChange) {
  Tracker t;
  auto d = diagnosis(HttpTokens::required, exact(2), {{"c1", 11}});
  DiscoveryLook look;
  NetnsDirLook dir;
  dir.dir = "/run/docker/netns";
  dir.state = NetnsDirLook::State::read;
  dir.entries = 1;
  dir.usable = 1;
  look.dirs = {dir};
  d.discovery = look;
  EXPECT_EQ(kinds(t.feed(d)), std::vector{EventKind::first_verdict}) << "all seen: nothing more";
  EXPECT_TRUE(t.feed(d).empty());
  // Two containers' namespace files turn invisible (the agent lost the mount propagation).
  look.dirs[0].entries = 3;
  look.dirs[0].unusable.at(static_cast<std::size_t>(EntryProblem::not_mounted_here)) = 2;
  d.discovery = look;
  auto events = t.feed(d);
  ASSERT_EQ(kinds(events), std::vector{EventKind::discovery_changed});
  EXPECT_EQ(events[0].priority, Priority::warning);
  EXPECT_EQ(field(events[0], "IMDS_UNUSABLE_ENTRIES"), "2");
  EXPECT_NE(field(events[0], "IMDS_DISCOVERY").find("2 not mounted here"), std::string::npos)
      << field(events[0], "IMDS_DISCOVERY");
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(t.feed(d).empty()) << "no repeat while it holds";
  // A diagnosis without a discovery (a demand probe of one namespace) changes nothing.
  auto without = d;
  without.discovery.reset();
  EXPECT_TRUE(t.feed(without).empty());
  look.dirs[0].unusable = {};
  look.dirs[0].entries = 1;
  d.discovery = look;
  events = t.feed(d);
  ASSERT_EQ(kinds(events), std::vector{EventKind::discovery_changed});
  EXPECT_EQ(events[0].priority, Priority::notice) << "it sees everything again";
}

TEST(Diff, ADiscoveryThatCannotSeeAllFromTheStartIsReportedWithTheVerdict) {
  Tracker t;
  auto d = diagnosis(HttpTokens::required, exact(2), {});
  DiscoveryLook look;
  look.unlisted_container_processes = 4;
  look.unlisted_container_namespaces = 2;
  d.discovery = look;
  auto events = t.feed(d);
  ASSERT_EQ(kinds(events), (std::vector{EventKind::first_verdict, EventKind::discovery_changed}));
  EXPECT_EQ(field(events[1], "IMDS_UNLISTED_NAMESPACES"), "2");
  EXPECT_EQ(events[1].priority, Priority::warning);
}

TEST(Diff, RepeatedIdenticalDiagnosesReportNothing) {
  Tracker t;
  auto d = diagnosis(HttpTokens::required, exact(2), {{"c1", 11}, {"c2", 12, Tristate::no, 2}});
  t.feed(d);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(t.feed(d).empty());
}

TEST(Diff, HttpTokensChangeIsExactlyOneOptionChangedEvent) {
  Tracker t;
  t.feed(diagnosis(HttpTokens::optional, exact(2)));
  auto events = t.feed(diagnosis(HttpTokens::required, exact(2)));
  ASSERT_EQ(kinds(events), std::vector{EventKind::option_changed});
  EXPECT_EQ(field(events[0], "IMDS_OPTION"), "HttpTokens");
  EXPECT_EQ(field(events[0], "IMDS_OLD_VALUE"), "optional");
  EXPECT_EQ(field(events[0], "IMDS_NEW_VALUE"), "required");
  EXPECT_EQ(field(events[0], "IMDS_HTTP_TOKENS"), "required");
  EXPECT_EQ(events[0].priority, Priority::notice);
  EXPECT_TRUE(t.feed(diagnosis(HttpTokens::required, exact(2))).empty());
}

TEST(Diff, TokensBecomingOptionalIsAWarning) {
  Tracker t;
  t.feed(diagnosis(HttpTokens::required, exact(2)));
  auto events = t.feed(diagnosis(HttpTokens::optional, exact(2)));
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].priority, Priority::warning);
}

TEST(Diff, HopLimitChangeIsExactlyOneOptionChangedEventWithItsFields) {
  Tracker t;
  t.feed(diagnosis(HttpTokens::required, exact(1)));
  auto events = t.feed(diagnosis(HttpTokens::required, exact(3)));
  ASSERT_EQ(kinds(events), std::vector{EventKind::option_changed});
  EXPECT_EQ(field(events[0], "IMDS_OPTION"), "HttpPutResponseHopLimit");
  EXPECT_EQ(field(events[0], "IMDS_OLD_VALUE"), "1");
  EXPECT_EQ(field(events[0], "IMDS_NEW_VALUE"), "3");
  EXPECT_EQ(field(events[0], "IMDS_HOP_LIMIT"), "3");
  EXPECT_EQ(field(events[0], "IMDS_HOP_LIMIT_MIN"), "3");
}

TEST(Diff, TighterHopLimitBoundsAreKnowledgeNotAChange) {
  Tracker t;
  t.feed(diagnosis(HttpTokens::required, bounds(2, 64)));
  EXPECT_TRUE(t.feed(diagnosis(HttpTokens::required, exact(2))).empty());
  EXPECT_TRUE(t.feed(diagnosis(HttpTokens::required, bounds(2, 64))).empty());
  // Nothing proven this time (no container to learn from): keeps the last knowledge.
  EXPECT_TRUE(t.feed(diagnosis(HttpTokens::required, HopLimit{})).empty());
}

TEST(Diff, ContradictingHopLimitBoundsAreAChange) {
  Tracker t;
  t.feed(diagnosis(HttpTokens::required, bounds(1, 1)));
  auto events = t.feed(diagnosis(HttpTokens::required, bounds(2, 64)));
  ASSERT_EQ(kinds(events), std::vector{EventKind::option_changed});
  EXPECT_EQ(field(events[0], "IMDS_OLD_VALUE"), "1");
  EXPECT_EQ(field(events[0], "IMDS_NEW_VALUE"), ">=2");
  EXPECT_EQ(field(events[0], "IMDS_HOP_LIMIT"), "<absent>");
  EXPECT_EQ(field(events[0], "IMDS_HOP_LIMIT_MIN"), "2");
}

TEST(Diff, UnknownTokensAreNotAChange) {
  Tracker t;
  t.feed(diagnosis(HttpTokens::required, exact(2)));
  EXPECT_TRUE(t.feed(diagnosis(HttpTokens::unknown, exact(2))).empty());
  EXPECT_TRUE(t.feed(diagnosis(HttpTokens::required, exact(2))).empty());
}

TEST(Diff, AnOutageIsOneUnreachableAndOneBackEventAndNothingElse) {
  Tracker t;
  t.feed(diagnosis(HttpTokens::required, exact(2), {{"c1", 11}}));
  auto down = diagnosis(HttpTokens::unknown, HopLimit{}, {{"c1", 11, Tristate::no}},
                        EndpointState::unreachable);
  EXPECT_EQ(kinds(t.feed(down)), std::vector{EventKind::imds_unreachable});
  EXPECT_TRUE(t.feed(down).empty());
  auto back = t.feed(diagnosis(HttpTokens::required, exact(2), {{"c1", 11}}));
  ASSERT_EQ(kinds(back), std::vector{EventKind::imds_back});
  EXPECT_EQ(field(back[0], "IMDS_DOWNTIME_SEC"), "120");
  EXPECT_EQ(field(back[0], "IMDS_DOWNTIME"), "2min");
}

TEST(Diff, OptionsChangedDuringAnOutageAreReportedWhenItIsBack) {
  Tracker t;
  t.feed(diagnosis(HttpTokens::optional, exact(1)));
  t.feed(diagnosis(HttpTokens::unknown, HopLimit{}, {}, EndpointState::unreachable));
  auto events = t.feed(diagnosis(HttpTokens::required, exact(1)));
  EXPECT_EQ(kinds(events), (std::vector{EventKind::imds_back, EventKind::option_changed}));
}

TEST(Diff, DisablingTheEndpointIsOneOptionChange) {
  Tracker t;
  t.feed(diagnosis(HttpTokens::required, exact(2), {{"c1", 11}}));
  auto events = t.feed(diagnosis(HttpTokens::unknown, HopLimit{}, {{"c1", 11, Tristate::no}},
                                 EndpointState::disabled));
  ASSERT_EQ(kinds(events), std::vector{EventKind::option_changed});
  EXPECT_EQ(field(events[0], "IMDS_OPTION"), "HttpEndpoint");
  EXPECT_EQ(field(events[0], "IMDS_NEW_VALUE"), "disabled");
}

TEST(Diff, AContainerThatLosesItsTokenIsReportedOnceAsLost) {
  Tracker t;
  t.feed(diagnosis(HttpTokens::required, bounds(2, 64), {{"c1", 11}, {"c2", 12}}));
  auto lost = diagnosis(HttpTokens::required, bounds(1, 1), {{"c1", 11, Tristate::no}, {"c2", 12}});
  auto events = t.feed(lost);
  ASSERT_EQ(kinds(events),
            (std::vector{EventKind::option_changed, EventKind::container_imdsv2_lost}));
  EXPECT_EQ(field(events[1], "IMDS_TARGET"), "c1");
  EXPECT_EQ(field(events[1], "IMDS_NETNS"), "/run/netns/c1");
  EXPECT_EQ(field(events[1], "IMDS_IMDSV2"), "no");
  EXPECT_EQ(field(events[1], "IMDS_DISTANCE"), "1");
  EXPECT_EQ(events[1].priority, Priority::warning);
  EXPECT_TRUE(t.feed(lost).empty());
  auto regained = t.feed(diagnosis(HttpTokens::required, bounds(2, 64), {{"c1", 11}, {"c2", 12}}));
  EXPECT_EQ(kinds(regained),
            (std::vector{EventKind::option_changed, EventKind::container_imdsv2_gained}));
}

TEST(Diff, ANewContainerIsAnnouncedOnceAtDebugWhenItGetsAToken) {
  Tracker t;
  t.feed(diagnosis(HttpTokens::required, exact(2)));
  auto events = t.feed(diagnosis(HttpTokens::required, exact(2), {{"c9", 19}}));
  ASSERT_EQ(kinds(events), std::vector{EventKind::container_appeared});
  EXPECT_EQ(events[0].priority, Priority::debug);
  EXPECT_EQ(field(events[0], "IMDS_CONTAINER_ID").substr(0, 2), "c9");
  EXPECT_TRUE(t.feed(diagnosis(HttpTokens::required, exact(2), {{"c9", 19}})).empty());
}

TEST(Diff, ANewContainerWithoutATokenIsAWarning) {
  Tracker t;
  t.feed(diagnosis(HttpTokens::required, exact(1)));
  auto events = t.feed(diagnosis(HttpTokens::required, exact(1), {{"c9", 19, Tristate::no}}));
  ASSERT_EQ(kinds(events), std::vector{EventKind::container_appeared});
  EXPECT_EQ(events[0].priority, Priority::warning);
}

TEST(Diff, AVanishedContainerIsReportedOnce) {
  Tracker t;
  t.feed(diagnosis(HttpTokens::required, exact(2), {{"c1", 11}, {"c2", 12}}));
  auto events = t.feed(diagnosis(HttpTokens::required, exact(2), {{"c1", 11}}));
  ASSERT_EQ(kinds(events), std::vector{EventKind::container_vanished});
  EXPECT_EQ(field(events[0], "IMDS_TARGET"), "c2");
  EXPECT_TRUE(t.feed(diagnosis(HttpTokens::required, exact(2), {{"c1", 11}})).empty());
}

TEST(Diff, AContainerNotProbedThisCycleKeepsItsVerdict) {
  Tracker t;
  std::vector<NetnsTarget> present{container_target({"c1", 11}), container_target({"c2", 12})};
  t.feed(diagnosis(HttpTokens::required, exact(1), {{"c1", 11}, {"c2", 12, Tristate::no}}),
         &present);
  // The per-cycle cap: this cycle probed c1 only; c2 still exists and keeps "no".
  EXPECT_TRUE(t.feed(diagnosis(HttpTokens::required, exact(1), {{"c1", 11}}), &present).empty());
  EXPECT_EQ(t.snapshot().containers.at("ino:12").imdsv2, Tristate::no);
}

TEST(Diff, ADiscoveredButUnprobedContainerIsAnnouncedWhenFirstDiagnosed) {
  Tracker t;
  std::vector<NetnsTarget> present{container_target({"c1", 11})};
  t.feed(diagnosis(HttpTokens::required, exact(2)), &present);
  auto events = t.feed(diagnosis(HttpTokens::required, exact(2), {{"c1", 11}}), &present);
  EXPECT_EQ(kinds(events), std::vector{EventKind::container_appeared});
}

TEST(Diff, PolicyDriftIsReportedOnceAndComplianceOnceAgain) {
  Expectations v2;
  v2.http_tokens = HttpTokens::required;
  v2.hop_limit_min = 2;
  v2.hop_limit_max = 2;
  Tracker t(v2);
  EXPECT_EQ(kinds(t.feed(diagnosis(HttpTokens::required, exact(2)))),
            std::vector{EventKind::first_verdict});
  auto drift = t.feed(diagnosis(HttpTokens::optional, exact(2)));
  ASSERT_EQ(kinds(drift), (std::vector{EventKind::option_changed, EventKind::policy_drift}));
  EXPECT_EQ(field(drift[1], "IMDS_OPTION"), "HttpTokens");
  EXPECT_EQ(field(drift[1], "IMDS_EXPECTED"), "required");
  EXPECT_EQ(field(drift[1], "IMDS_NEW_VALUE"), "optional");
  EXPECT_TRUE(t.feed(diagnosis(HttpTokens::optional, exact(2))).empty());
  auto again = t.feed(diagnosis(HttpTokens::required, exact(2)));
  EXPECT_EQ(kinds(again),
            (std::vector{EventKind::option_changed, EventKind::policy_compliant_again}));
}

TEST(Diff, PolicyDriftFromTheStartIsReportedWithTheVerdict) {
  Expectations e;
  e.hop_limit_min = 2;
  Tracker t(e);
  auto events = t.feed(diagnosis(HttpTokens::required, bounds(1, 1)));
  ASSERT_EQ(kinds(events), (std::vector{EventKind::first_verdict, EventKind::policy_drift}));
  EXPECT_EQ(field(events[1], "IMDS_EXPECTED"), ">=2");
  EXPECT_EQ(field(events[1], "IMDS_NEW_VALUE"), "1");
}

TEST(Diff, UnprovenHopLimitDoesNotViolateThePolicy) {
  Expectations e;
  e.hop_limit_min = 2;
  e.hop_limit_max = 2;
  OptionKnowledge o;
  o.hop_limit = bounds(2, 64);  // consistent with 2: not proven wrong
  EXPECT_TRUE(policy_violations(o, e).empty());
  o.hop_limit = bounds(3, 64);
  ASSERT_EQ(policy_violations(o, e).size(), 1U);
  EXPECT_EQ(policy_violations(o, e)[0].actual, ">=3");
}

TEST(Events, MessagesAreTheTemplateFilledFromTheFields) {
  Tracker t;
  t.feed(diagnosis(HttpTokens::optional, exact(2)));
  auto events = t.feed(diagnosis(HttpTokens::required, exact(2)));
  auto entry = to_journal_entry(events.at(0));
  EXPECT_EQ(entry.message, "IMDS option HttpTokens changed from optional to required");
  EXPECT_EQ(entry.message_id, "82f6000580cd4b1190daebc52835d1bf");
  ASSERT_NE(entry.field("IMDS_EVENT"), nullptr);
  EXPECT_EQ(*entry.field("IMDS_EVENT"), "option-changed");
  EXPECT_NE(std::string(entry.where.file_name()).find("events_test.cpp"), std::string::npos);
}

TEST(Events, EveryEventHasAUniqueIdNameAndATemplateWhoseFieldsAreValidKeys) {
  std::set<std::string_view> ids;
  std::set<std::string_view> names;
  const std::regex id_re("^[0-9a-f]{32}$");
  for (const auto& s : kEventSpecs) {
    EXPECT_TRUE(std::regex_match(std::string(s.message_id), id_re)) << s.name;
    EXPECT_TRUE(ids.insert(s.message_id).second) << s.name;
    EXPECT_TRUE(names.insert(s.name).second) << s.name;
    EXPECT_EQ(spec_of(s.kind).name, s.name);
    std::string m(s.message);
    std::regex field_re("@([^@]*)@");
    for (auto it = std::sregex_iterator(m.begin(), m.end(), field_re); it != std::sregex_iterator();
         ++it) {
      EXPECT_TRUE(is_valid_journal_key((*it)[1].str())) << s.name << ": " << (*it)[1];
    }
  }
}

TEST(Catalog, HasOneCompleteEntryPerMessageId) {
  std::ifstream in(IMDS_AGENT_CATALOG);
  ASSERT_TRUE(in) << IMDS_AGENT_CATALOG;
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  std::map<std::string, std::string> entries;  // id -> entry text
  std::regex head("^-- ([0-9a-f]{32})$");
  std::string current;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (std::regex_match(line, m, head)) {
      current = m[1];
      EXPECT_FALSE(entries.contains(current)) << "duplicate entry " << current;
      entries[current];
    } else if (!current.empty()) {
      entries[current] += line + "\n";
    }
  }
  EXPECT_EQ(entries.size(), kEventSpecs.size());
  for (const auto& s : kEventSpecs) {
    auto it = entries.find(std::string(s.message_id));
    ASSERT_NE(it, entries.end()) << "no catalog entry for " << s.name;
    for (const char* header :
         {"Subject: ", "Defined-By: imds-agent", "Documentation: ", "Support: "}) {
      EXPECT_NE(it->second.find(header), std::string::npos) << s.name << " lacks " << header;
    }
  }
}

}  // namespace
}  // namespace imds::agent
