// The agent's side of the passive caller watch: events once per caller and kind, the rate
// limit, the summary, bounded metric labels, the documents, and the watch thread's states.
#include "callers.hpp"

#include <gtest/gtest.h>

#include <regex>
#include <set>
#include <thread>

namespace imds::agent {
namespace {

using namespace std::chrono_literals;

Exchange exchange(RequestKind kind, WatchClock::time_point at, bool answered, int status = 200,
                  std::string product = "botocore") {
  Exchange e;
  e.request.kind = kind;
  e.request.category = kind == RequestKind::token_put ? PathCategory::token : PathCategory::meta_data;
  if (!product.empty()) e.request.sdk = Sdk{std::move(product), "1.29.27"};
  e.requested = at;
  e.answered = answered;
  e.reached_here = answered;
  if (answered) e.status = status;
  return e;
}

const std::string* field(const Event& e, std::string_view key) { return e.field(key); }

TEST(CallerEvents, EachCallerAndKindIsAnnouncedOnce) {
  WatchReport r;
  const auto t = WatchClock::now();
  const auto wall = std::chrono::system_clock::now();
  r.book.add({"legacy", std::string(64, 'a'), 11, std::nullopt}, exchange(RequestKind::imdsv1, t, true, 200, "curl"), wall);
  CallerEvents events;
  const auto now = std::chrono::steady_clock::now();
  auto first = events.announce(r, now);
  ASSERT_EQ(first.size(), 1U);
  EXPECT_EQ(first[0].kind, EventKind::imdsv1_caller);
  EXPECT_EQ(first[0].priority, Priority::notice);
  EXPECT_EQ(*field(first[0], "IMDS_CALLER"), "legacy");
  EXPECT_EQ(*field(first[0], "IMDS_SDK"), "curl 1.29.27");
  EXPECT_EQ(*field(first[0], "IMDS_CONTAINER_ID"), std::string(64, 'a'));
  EXPECT_EQ(*field(first[0], "IMDS_ANSWERS"), "200 (tokens optional)");
  const auto entry = to_journal_entry(first[0]);
  EXPECT_EQ(entry.message_id, "94a3a251723943f58b536e923797206a");
  EXPECT_EQ(entry.message.find('?'), std::string::npos) << entry.message;

  // More calls of the same caller: nothing new.
  r.book.add({"legacy", std::nullopt, 11, std::nullopt}, exchange(RequestKind::imdsv1, t + 1s, true, 200, "curl"), wall);
  EXPECT_TRUE(events.announce(r, now + 10s).empty());
}

TEST(CallerEvents, ACallerRefusedWithTokensRequiredIsAWarning) {
  WatchReport r;
  r.book.add({"old", std::nullopt, 3, std::nullopt}, exchange(RequestKind::imdsv1, WatchClock::now(), true, 401),
             std::chrono::system_clock::now());
  CallerEvents events;
  auto got = events.announce(r, std::chrono::steady_clock::now());
  ASSERT_EQ(got.size(), 1U);
  EXPECT_EQ(got[0].priority, Priority::warning);
  EXPECT_EQ(*field(got[0], "IMDS_ANSWERS"), "401 (tokens required)");
}

TEST(CallerEvents, LostTokenPutsSayWhereTheAnswerStopped) {
  WatchReport r;
  const auto t = WatchClock::now();
  const auto wall = std::chrono::system_clock::now();
  Exchange put = exchange(RequestKind::token_put, t, false);
  put.reached_here = true;  // reached the host, not forwarded
  put.arrival_ttl = 1;
  put.status = 200;
  r.book.add({"boto", std::nullopt, 5, std::nullopt}, put, wall);
  r.book.add({"boto", std::nullopt, 5, std::nullopt}, exchange(RequestKind::imdsv1, t + 1s, true, 200), wall);
  CallerEvents events;
  auto got = events.announce(r, std::chrono::steady_clock::now());
  ASSERT_EQ(got.size(), 1U) << "a fallback is not a deliberate IMDSv1 caller";
  EXPECT_EQ(got[0].kind, EventKind::token_puts_lost);
  EXPECT_EQ(*field(got[0], "IMDS_PUTS_LOST"), "1");
  EXPECT_EQ(*field(got[0], "IMDS_PUT_TTL"), "1");
  EXPECT_EQ(*field(got[0], "IMDS_FALLBACK_CALLS"), "1");
  EXPECT_NE(field(got[0], "IMDS_CAUSE")->find("TTL 1"), std::string::npos);
}

TEST(CallerEvents, AFloodOfNewCallersIsRateLimitedAndCounted) {
  WatchReport r;
  const auto t = WatchClock::now();
  const auto wall = std::chrono::system_clock::now();
  for (int i = 0; i < 30; ++i) {
    r.book.add({"c" + std::to_string(i), std::nullopt, static_cast<std::uint64_t>(100 + i), std::nullopt},
               exchange(RequestKind::imdsv1, t, true), wall);
  }
  CallerEvents events;
  const auto now = std::chrono::steady_clock::now();
  EXPECT_EQ(events.announce(r, now).size(), CallerEvents::kBurst);
  EXPECT_EQ(events.suppressed(), 30 - CallerEvents::kBurst);
  // Three minutes later, three new callers get three tokens' worth of events.
  for (int i = 30; i < 35; ++i) {
    r.book.add({"c" + std::to_string(i), std::nullopt, static_cast<std::uint64_t>(100 + i), std::nullopt},
               exchange(RequestKind::imdsv1, t, true), wall);
  }
  EXPECT_EQ(events.announce(r, now + 3min + 1s).size(), 3U);
  const auto summary = events.summary(r, 1h);
  ASSERT_TRUE(summary.has_value());
  EXPECT_EQ(*field(*summary, "IMDS_EVENTS_SUPPRESSED"), std::to_string(30 - CallerEvents::kBurst + 2));
}

TEST(CallerEvents, TheSummaryCountsWhatHappenedSinceTheLastOneAndIsQuietOtherwise) {
  WatchReport r;
  const auto t = WatchClock::now();
  const auto wall = std::chrono::system_clock::now();
  CallerEvents events;
  r.book.add({"host", std::nullopt, 0, std::nullopt}, exchange(RequestKind::imdsv2, t, true), wall);
  EXPECT_FALSE(events.summary(r, 1h).has_value()) << "IMDSv2 only: nothing to summarise";
  for (int i = 0; i < 4; ++i) {
    r.book.add({"legacy", std::nullopt, 2, std::nullopt}, exchange(RequestKind::imdsv1, t + 1s, true), wall);
  }
  r.book.add({"boto", std::nullopt, 3, std::nullopt}, exchange(RequestKind::token_put, t, false), wall);
  const auto first = events.summary(r, 1h);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(*field(*first, "IMDS_V1_CALLS"), "4");
  EXPECT_EQ(*field(*first, "IMDS_V1_CALLERS"), "1");
  EXPECT_EQ(*field(*first, "IMDS_PUTS_LOST"), "1");
  EXPECT_EQ(*field(*first, "IMDS_PERIOD"), "1h");
  EXPECT_FALSE(events.summary(r, 1h).has_value()) << "nothing new since";
  r.book.add({"legacy", std::nullopt, 2, std::nullopt}, exchange(RequestKind::imdsv1, t + 2s, true), wall);
  const auto second = events.summary(r, 1h);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(*field(*second, "IMDS_V1_CALLS"), "1");
}

TEST(CallerMetrics, LabelsStayBoundedAndTheTextIsWellFormed) {
  CallerWatchService::View view;
  view.state = CallerWatchService::State::running;
  auto report = std::make_shared<WatchReport>();
  const auto t = WatchClock::now();
  const auto wall = std::chrono::system_clock::now();
  for (int i = 0; i < 200; ++i) {
    report->book.add({"ns" + std::to_string(i), std::nullopt, static_cast<std::uint64_t>(i + 1), std::nullopt},
                     exchange(i % 2 ? RequestKind::imdsv1 : RequestKind::imdsv2, t, true, 200,
                              i % 3 ? "botocore" : "Weird-Client" + std::to_string(i)),
                     wall);
  }
  view.report = report;
  Exposition exposition;
  add_callers_metrics(exposition, view, 7);
  const std::string text = exposition.text();
  std::set<std::string> callers;
  std::set<std::string> sdks;
  const std::regex sample(R"re(^([a-z_]+)(\{[^}]*\})? ([0-9]+)$)re");
  const std::regex caller_label(R"re(caller="([^"]*)")re");
  const std::regex sdk_label(R"re(sdk="([^"]*)")re");
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.starts_with("# HELP ") || line.starts_with("# TYPE ")) continue;
    ASSERT_TRUE(std::regex_match(line, sample)) << line;
    std::smatch m;
    if (std::regex_search(line, m, caller_label)) callers.insert(m[1]);
    if (std::regex_search(line, m, sdk_label)) sdks.insert(m[1]);
  }
  EXPECT_EQ(callers.size(), kMaxCallerSeries + 1);  // and "other"
  EXPECT_TRUE(callers.contains("other"));
  EXPECT_TRUE(callers.contains("ns1")) << "an IMDSv1 caller is among the named ones";
  EXPECT_EQ(sdks, (std::set<std::string>{"botocore", "other"}));
  EXPECT_NE(text.find("imds_callers_watch_up 1\n"), std::string::npos);
  EXPECT_NE(text.find("imds_callers_events_suppressed_total 7\n"), std::string::npos);
  // The IMDSv1 calls add up over the series, "other" included.
  std::uint64_t v1 = 0;
  std::istringstream again(text);
  while (std::getline(again, line)) {
    if (line.starts_with("imds_observed_requests_total{") && line.find("kind=\"imdsv1\"") != std::string::npos) {
      v1 += std::stoull(line.substr(line.rfind(' ') + 1));
    }
  }
  EXPECT_EQ(v1, 100U);
}

TEST(CallersDocument, AttentionFirstAndBoundedWithWhatWasLeftOut) {
  CallerWatchService::View view;
  view.state = CallerWatchService::State::running;
  view.since = std::chrono::system_clock::now();
  auto report = std::make_shared<WatchReport>();
  const auto t = WatchClock::now();
  const auto wall = std::chrono::system_clock::now();
  for (int i = 0; i < 300; ++i) {
    report->book.add({"a" + std::to_string(1000 + i), std::nullopt, static_cast<std::uint64_t>(i + 1), std::nullopt},
                     exchange(RequestKind::imdsv2, t, true), wall);
  }
  report->book.add({"z-legacy", std::nullopt, 999, std::nullopt}, exchange(RequestKind::imdsv1, t, true), wall);
  view.report = report;
  const auto doc = callers_document(view);
  EXPECT_EQ(doc["callers"].size(), kMaxListedCallers);
  EXPECT_EQ(doc["callers_omitted"], 301 - kMaxListedCallers);
  EXPECT_EQ(doc["callers"][0]["where"], "z-legacy") << "IMDSv1 callers come first";
  EXPECT_EQ(doc["watch"]["state"], "running");
  EXPECT_TRUE(doc["watching_since"].is_string());
  // The text report reads the same document.
  const std::string text = render_callers_text(doc);
  EXPECT_NE(text.find("z-legacy (botocore) calls IMDSv1 on purpose"), std::string::npos) << text;
}

TEST(CallerWatchService, AWatchThatCannotOpenSaysWhyAndStops) {
  CallerWatchService service;
  service.start([](const WatchOptions&) -> Result<std::unique_ptr<CallerWatcher>> {
    return Error{"cannot open a packet socket: Operation not permitted"};
  }, WatchOptions{});
  for (int i = 0; i < 200 && service.view().state == CallerWatchService::State::starting; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  const auto view = service.view();
  EXPECT_EQ(view.state, CallerWatchService::State::failed);
  EXPECT_NE(view.error.find("Operation not permitted"), std::string::npos);
  EXPECT_EQ(view.report, nullptr);
  EXPECT_TRUE(service.stop(1s));
  const auto doc = callers_document(view);
  EXPECT_EQ(doc["watch"]["state"], "failed");
  EXPECT_EQ(doc["callers"].size(), 0U);
}

TEST(CallerWatchService, AnOpenerThatThrowsIsAFailureNotACrash) {
  CallerWatchService service;
  service.start([](const WatchOptions&) -> Result<std::unique_ptr<CallerWatcher>> {
    throw std::runtime_error("the caller watch cannot drop capabilities");
  }, WatchOptions{});
  for (int i = 0; i < 200 && service.view().state == CallerWatchService::State::starting; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(service.view().state, CallerWatchService::State::failed);
  EXPECT_NE(service.view().error.find("drop capabilities"), std::string::npos);
}

TEST(CallerWatchService, StoppedBeforeItStartedItNeverStarts) {
  CallerWatchService service;
  EXPECT_TRUE(service.stop(0ms));
  bool opened = false;
  service.start([&](const WatchOptions&) -> Result<std::unique_ptr<CallerWatcher>> {
    opened = true;
    return Error{"no"};
  }, WatchOptions{});
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(opened);
  EXPECT_EQ(service.view().state, CallerWatchService::State::starting);
}

TEST(WatchOptions, FollowTheAgentsEndpointsAndLeaveItsOwnRequestsOut) {
  AgentConfig c;
  c.endpoint = "http://127.0.0.1:8080";
  c.ipv6 = false;
  c.netns_dirs = {"/tmp/x"};
  const auto o = watch_options_of(c);
  ASSERT_EQ(o.imds.size(), 1U);
  EXPECT_EQ(o.imds[0].port, 8080);
  EXPECT_EQ(o.discovery.netns_dirs, (std::vector<std::string>{"/tmp/x"}));
  EXPECT_EQ(o.ignore_product, "imds-agent");
  c.ipv6 = true;
  EXPECT_EQ(watch_options_of(c).imds.size(), 2U);
  // Discovery as the probe cycle has it (names from Docker's root), process lookup switchable.
  EXPECT_EQ(o.discovery.docker_root, "/var/lib/docker");
  EXPECT_TRUE(o.processes);
  ASSERT_TRUE(apply_setting(c, "caller-processes", "no"));
  ASSERT_TRUE(apply_setting(c, "docker-root", "/srv/docker"));
  EXPECT_FALSE(watch_options_of(c).processes);
  EXPECT_EQ(watch_options_of(c).discovery.docker_root, "/srv/docker");
  EXPECT_FALSE(apply_setting(c, "caller-processes", "maybe"));
}

// Passive evidence saves the agent's own tokenless GET only when it agrees with the agent's
// own last measurement, is newer than it and within v1-interval; it never sets the verdict.
TEST(PassiveEvidence, SavesATokenlessGetOnlyWhenItConfirmsTheAgentsOwnMeasurement) {
  const auto now = std::chrono::system_clock::now();
  V1Inputs in;
  in.scheduled = true;
  in.known = HttpTokens::optional;
  in.measured = now - 2h;
  in.v1_interval = 6h;
  in.now = now;
  in.evidence = TokenlessEvidence{now - 10min, 200, "legacy"};
  EXPECT_EQ(choose_v1(in), V1Choice::skip_evidence_agrees);
  EXPECT_FALSE(evidence_contradicts(in));

  auto not_scheduled = in;
  not_scheduled.scheduled = false;
  EXPECT_EQ(choose_v1(not_scheduled), V1Choice::not_scheduled);

  auto none = in;
  none.evidence.reset();
  EXPECT_EQ(choose_v1(none), V1Choice::send);

  auto never_measured = in;  // the agent must have measured itself once
  never_measured.measured.reset();
  never_measured.known = HttpTokens::unknown;
  EXPECT_EQ(choose_v1(never_measured), V1Choice::send);
  EXPECT_FALSE(evidence_contradicts(never_measured));

  auto older = in;  // older than the agent's own measurement: says nothing new
  older.evidence->seen = now - 3h;
  EXPECT_EQ(choose_v1(older), V1Choice::send);
  EXPECT_FALSE(evidence_contradicts(older));

  auto stale = in;  // newer than the measurement but older than v1-interval
  stale.measured = now - 30h;
  stale.evidence->seen = now - 7h;
  EXPECT_EQ(choose_v1(stale), V1Choice::send);

  auto required = in;
  required.known = HttpTokens::required;
  required.evidence->status = 401;
  EXPECT_EQ(choose_v1(required), V1Choice::skip_evidence_agrees);

  auto contradicting = in;  // known optional, a workload was refused: measure again, do not skip
  contradicting.evidence->status = 401;
  EXPECT_EQ(choose_v1(contradicting), V1Choice::send);
  EXPECT_TRUE(evidence_contradicts(contradicting));
  contradicting.evidence->seen = now - 3h;  // ... unless it is older than the measurement
  EXPECT_FALSE(evidence_contradicts(contradicting));
}

}  // namespace
}  // namespace imds::agent
