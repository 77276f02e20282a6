// The daemon's loop with a fake engine: what it reports, notifies and answers.
#include "agent.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include "fixtures.hpp"
#include "render.hpp"
#include "status_api.hpp"
#include "systemd.hpp"

namespace imds::agent {
namespace {

using namespace testing;
using namespace std::chrono_literals;

// Entries arrive on the reporter's sender thread: read them after EventReporter::flush.
class RecordingSink : public JournalSink {
 public:
  bool send(const JournalEntry& e) override {
    std::lock_guard lock(mutex_);
    entries_.push_back(e);
    return true;
  }
  std::vector<JournalEntry> entries() const {
    std::lock_guard lock(mutex_);
    return entries_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<JournalEntry> entries_;
};

class RecordingNotifier : public Notifier {
 public:
  void notify(std::string_view s) override { states.emplace_back(s); }
  [[nodiscard]] std::optional<std::chrono::microseconds> watchdog_period() const override {
    return 50ms;
  }
  std::vector<std::string> states;
};

// Hands out prepared diagnoses, one per probe; the last one repeats.
class FakeEngine {
 public:
  explicit FakeEngine(std::vector<Diagnosis> d, std::chrono::milliseconds delay = 0ms)
      : queue_(d.begin(), d.end()), delay_(delay) {}
  Engine engine() {
    Engine e;
    // The namespaces "present" are those of the diagnosis the next probe returns.
    e.discover = [this](const AgentConfig&) {
      std::lock_guard lock(mutex_);
      std::vector<NetnsTarget> out;
      for (const auto& t : queue_.front().targets) {
        if (!t.target.is_host) out.push_back(t.target);
      }
      return out;
    };
    e.probe = [this](const AgentConfig&, const ProbeRequest& req) {
      std::this_thread::sleep_for(delay_);
      std::lock_guard lock(mutex_);
      ++calls;
      v1_flags.push_back(req.probe_v1);
      std::vector<std::string> names;
      names.reserve(req.containers.size());
      for (const auto& t : req.containers) names.push_back(t.name);
      asked_for.push_back(std::move(names));
      Diagnosis d = queue_.front();
      if (queue_.size() > 1) queue_.pop_front();
      return d;
    };
    if (real_json) {
      e.to_json = [](const Diagnosis& d) { return to_json(d); };
    } else {
      e.to_json = [](const Diagnosis& d) {
        return nlohmann::json{{"schema_version", d.schema_version}};
      };
    }
    return e;
  }
  std::atomic<int> calls{0};
  std::vector<bool> v1_flags;
  std::vector<std::vector<std::string>> asked_for;  // the containers each probe was asked for
  bool real_json = false;  // the probe's whole JSON document, as imds-agent serves it

 private:
  std::mutex mutex_;
  std::deque<Diagnosis> queue_;
  std::chrono::milliseconds delay_;
};

// A probe that does not come back until released (or after `limit`): an IMDS that hangs.
// Its state is shared with the lambdas, so a worker thread left behind at shutdown never
// touches a destroyed object.
struct StuckProbe {
  std::mutex mutex;
  std::condition_variable cv;
  bool released = false;
  bool entered = false;
  bool returned = false;
  void release() {
    std::lock_guard lock(mutex);
    released = true;
    cv.notify_all();
  }
  bool wait_returned(std::chrono::milliseconds limit) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, limit, [this] { return returned; });
  }
  bool has_entered() {
    std::lock_guard lock(mutex);
    return entered;
  }
};

Engine stuck_engine(const std::shared_ptr<StuckProbe>& stuck, std::chrono::milliseconds limit) {
  Engine e;
  e.discover = [](const AgentConfig&) { return std::vector<NetnsTarget>{}; };
  e.probe = [stuck, limit](const AgentConfig&, const ProbeRequest&) {
    std::unique_lock lock(stuck->mutex);
    stuck->entered = true;
    stuck->cv.wait_for(lock, limit, [&] { return stuck->released; });
    stuck->returned = true;
    stuck->cv.notify_all();
    return diagnosis(HttpTokens::required, exact(2));
  };
  e.to_json = [](const Diagnosis&) { return nlohmann::json::object(); };
  return e;
}

// A journal that takes `stall` to accept each entry (journald stuck behind a full disk).
class StalledSink : public JournalSink {
 public:
  explicit StalledSink(std::chrono::milliseconds stall) : stall_(stall) {}
  bool send(const JournalEntry&) override {
    std::this_thread::sleep_for(stall_);
    ++sent;
    return true;
  }
  std::atomic<int> sent{0};

 private:
  std::chrono::milliseconds stall_;
};

// A client of the agent's real socket.
int connect_to(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// What the peer sent until it closed, polling the io_context meanwhile so the agent runs.
std::string read_until_close(boost::asio::io_context& io, int fd, std::chrono::milliseconds limit) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    io.run_for(5ms);
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5) <= 0) continue;
    std::array<char, 4096> buf{};
    const auto n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n <= 0) break;
    out.append(buf.data(), static_cast<std::size_t>(n));
  }
  return out;
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.socket = (std::filesystem::temp_directory_path() /
                      ("imds-agent-loop-" + std::to_string(::getpid()) + ".sock"))
                         .string();
    config_.interval = 1h;
    config_.min_probe_gap = 0ms;
    config_.v1_interval.reset();
    // Changes reported at once: the tests below that are about confirmation set these.
    config_.confirm = 0;
    config_.min_event_gap = 0ms;
  }
  // Owned by the fixture: it must outlive the agent's worker thread.
  FakeEngine& fake(std::vector<Diagnosis> d, std::chrono::milliseconds delay = 0ms) {
    fake_ = std::make_unique<FakeEngine>(std::move(d), delay);
    return *fake_;
  }
  void start(FakeEngine& fake) {
    agent_ = std::make_unique<Agent>(io_, config_, sources_, fake.engine(), reporter_, notifier_);
    auto err = agent_->start();
    ASSERT_FALSE(err.has_value()) << *err;
  }
  template <typename Pred>
  bool run_until(Pred pred, std::chrono::milliseconds limit = 5s) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred() && std::chrono::steady_clock::now() < deadline) io_.run_for(10ms);
    return pred();
  }
  ApiResponse call(const std::string& method, const std::string& target) {
    std::optional<ApiResponse> got;
    agent_->handle({method, target, ""}, [&](ApiResponse r) { got = std::move(r); });
    run_until([&] { return got.has_value(); });
    return got.value_or(ApiResponse{0, "", "", {}});
  }
  // The journal entries sent so far, once the reporter's queue is empty.
  std::vector<JournalEntry> journal() {
    EXPECT_TRUE(reporter_.flush(2s));
    return sink_.entries();
  }
  std::vector<std::string> event_names() {
    std::vector<std::string> out;
    for (const auto& e : journal()) out.push_back(*e.field("IMDS_EVENT"));
    return out;
  }
  void TearDown() override {
    if (agent_) agent_->stop();
    io_.run_for(50ms);
    agent_.reset();
  }

  boost::asio::io_context io_;
  AgentConfig config_;
  ConfigSources sources_;
  RecordingSink sink_;
  EventReporter reporter_{sink_, false};
  RecordingNotifier notifier_;
  std::unique_ptr<FakeEngine> fake_;
  std::unique_ptr<Agent> agent_;
};

TEST_F(AgentTest, TheFirstProbeReportsStartedAndTheVerdictThenNotifiesReady) {
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2))});
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  EXPECT_EQ(event_names(), (std::vector<std::string>{"started", "first-verdict"}));
  EXPECT_EQ(journal().at(0).message_id, "3c502ce89a38470a8b5401cc076d14ba");
  auto ready = std::find_if(notifier_.states.begin(), notifier_.states.end(),
                            [](const auto& s) { return s.starts_with("READY=1\nSTATUS="); });
  ASSERT_NE(ready, notifier_.states.end());
  EXPECT_NE(ready->find("HttpTokens required, hop limit 2"), std::string::npos) << *ready;
}

TEST_F(AgentTest, TheWatchdogIsFedFromTheLoopWhileAProbeIsSlow) {
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2))}, 400ms);
  start(fake);
  run_until([&] { return false; }, 300ms);  // the first probe is still running
  auto pings = std::count(notifier_.states.begin(), notifier_.states.end(), "WATCHDOG=1");
  EXPECT_GE(pings, 3);
}

TEST_F(AgentTest, AnOptionChangeBetweenCyclesIsExactlyOneJournalEntry) {
  auto& fake = this->fake(
      {diagnosis(HttpTokens::optional, exact(2)), diagnosis(HttpTokens::required, exact(2))});
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  EXPECT_EQ(call("POST", "/v1/probe").status, 200U);
  EXPECT_EQ(call("POST", "/v1/probe").status, 200U);
  EXPECT_EQ(event_names(),
            (std::vector<std::string>{"started", "first-verdict", "option-changed"}));
  EXPECT_EQ(journal().back().priority, Priority::notice);
}

TEST_F(AgentTest, ConcurrentProbeRequestsShareOneProbe) {
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2))}, 200ms);
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  std::vector<ApiResponse> answers;
  for (int i = 0; i < 3; ++i) {
    agent_->handle({"POST", "/v1/probe", ""}, [&](const ApiResponse& r) { answers.push_back(r); });
  }
  ASSERT_TRUE(run_until([&] { return answers.size() == 3; }));
  EXPECT_EQ(fake.calls, 2);  // the start-up probe and one shared by the three requests
  for (const auto& a : answers) {
    EXPECT_EQ(a.status, 200U);
    auto j = nlohmann::json::parse(a.body);
    EXPECT_EQ(j["agent"]["cycles"], 2);
  }
}

TEST_F(AgentTest, ProbeRequestsWithinTheMinimumGapAreRateLimited) {
  config_.min_probe_gap = 1h;
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2))});
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  auto r = call("POST", "/v1/probe");
  EXPECT_EQ(r.status, 429U);
  ASSERT_EQ(r.headers.size(), 1U);
  EXPECT_EQ(r.headers[0].first, "Retry-After");
  EXPECT_EQ(fake.calls, 1);
}

TEST_F(AgentTest, UnknownPathsAre404AndWrongMethods405WithAllow) {
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2))});
  start(fake);
  EXPECT_EQ(call("GET", "/v2/everything").status, 404U);
  auto r = call("DELETE", "/v1/status");
  EXPECT_EQ(r.status, 405U);
  ASSERT_EQ(r.headers.size(), 1U);
  EXPECT_EQ(r.headers[0], (std::pair<std::string, std::string>{"Allow", "GET"}));
  EXPECT_EQ(call("GET", "/v1/probe").status, 405U);
}

TEST_F(AgentTest, StatusCarriesTheProbeJsonAndTheAgentState) {
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2), {{"c1", 11}})});
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  auto r = call("GET", "/v1/status?pretty");
  ASSERT_EQ(r.status, 200U);
  auto j = nlohmann::json::parse(r.body);
  EXPECT_EQ(j["schema_version"], kSchemaVersion);
  const auto& a = j["agent"];
  EXPECT_EQ(a["ready"], true);
  EXPECT_EQ(a["cycles"], 1);
  EXPECT_EQ(a["consecutive_errors"], 0);
  EXPECT_TRUE(a["last_probe"].is_string());
  EXPECT_TRUE(a["next_probe"].is_string());
  EXPECT_EQ(a["options"]["http_tokens"], "required");
  EXPECT_EQ(a["options"]["hop_limit"], "2");
  ASSERT_EQ(a["containers"].size(), 1U);
  EXPECT_EQ(a["containers"][0]["imdsv2"], "yes");
}

TEST_F(AgentTest, ANamespaceNameThatIsNotUtf8DoesNotBreakTheStatus) {
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2), {{"bad\xff\xfe", 11}})});
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  auto r = call("GET", "/v1/status");
  ASSERT_EQ(r.status, 200U);
  auto j = nlohmann::json::parse(r.body);
  EXPECT_EQ(j["agent"]["containers"][0]["name"], "bad\uFFFD\uFFFD");
}

TEST_F(AgentTest, ResponseBodiesAreNotKeptSoMemoryDoesNotGrowWithNamespaces) {
  std::vector<FakeContainer> many;
  many.reserve(64);
  for (int i = 0; i < 64; ++i) many.push_back({"c" + std::to_string(i), 100U + i});
  auto d = diagnosis(HttpTokens::required, exact(2), many);
  for (auto& t : d.targets) {
    Observation o;
    o.step = Step::listing;
    o.result.outcome = Outcome::http;
    o.result.status = 200;
    o.result.body = std::string(std::size_t{64} * 1024, 'x');
    t.observations.push_back(o);
  }
  auto& fake = this->fake({d});
  fake.real_json = true;
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  auto r = call("GET", "/v1/status");
  ASSERT_EQ(r.status, 200U);
  EXPECT_NE(r.body.find("\"observations\""), std::string::npos);
  // 65 namespaces x 64 KiB of bodies would be over 4 MiB; without them it is small.
  EXPECT_LT(r.body.size(), 512U * 1024) << r.body.size();
  EXPECT_EQ(r.body.find("xxxxxxxx"), std::string::npos);
}

TEST_F(AgentTest, AnUnreachableImdsBacksOffAndCountsErrors) {
  config_.interval = 1s;
  config_.backoff_max = 1h;
  auto& fake =
      this->fake({diagnosis(HttpTokens::unknown, HopLimit{}, {}, EndpointState::unreachable)});
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  EXPECT_EQ(call("POST", "/v1/probe").status, 200U);
  EXPECT_EQ(call("POST", "/v1/probe").status, 200U);
  EXPECT_EQ(agent_->stats().errors, 3U);
  EXPECT_EQ(agent_->stats().consecutive_errors, 3U);
  auto j = agent_->status_json();
  EXPECT_EQ(j["agent"]["backoff_seconds"], 4.0);  // 1s, 1s, 2s, 4s
  EXPECT_EQ(event_names(),
            (std::vector<std::string>{"started", "first-verdict", "imds-unreachable"}));
}

TEST_F(AgentTest, ANamespaceAppearingInADirThatDidNotExistYetTriggersAProbe) {
  auto root =
      std::filesystem::temp_directory_path() / ("imds-agent-watch-" + std::to_string(::getpid()));
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root);
  config_.netns_dirs = {(root / "docker" / "netns").string()};
  config_.debounce = 100ms;
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2))});
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  run_until([] { return false; }, 300ms);
  EXPECT_EQ(fake.calls, 1);  // nothing happens by itself (interval 1h)
  std::filesystem::create_directories(root / "docker");
  run_until([] { return false; }, 100ms);  // the watch moves down to docker/
  std::filesystem::create_directories(root / "docker" / "netns");
  run_until([] { return false; }, 100ms);  // and to docker/netns
  std::ofstream(root / "docker" / "netns" / "0123abcd") << "";
  EXPECT_TRUE(run_until([&] { return agent_->stats().cycles >= 2; }, 3s))
      << "no probe after a namespace file appeared";
  std::filesystem::remove_all(root);
}

TEST_F(AgentTest, ThrottledProbesBackOffAndReportNoChanges) {
  config_.interval = 10s;
  auto throttled = diagnosis(HttpTokens::unknown, HopLimit{}, {{"c1", 11, Tristate::no}});
  Observation o;
  o.step = Step::token_put;
  o.result.outcome = Outcome::http;
  o.result.status = 503;
  throttled.targets[0].observations.push_back(o);
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2), {{"c1", 11}}), throttled});
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  EXPECT_EQ(call("POST", "/v1/probe").status, 200U);
  EXPECT_EQ(agent_->stats().throttled, 1U);
  EXPECT_EQ(agent_->status_json()["agent"]["backoff_seconds"], 20.0);  // doubled at once
  EXPECT_EQ(event_names(), (std::vector<std::string>{"started", "first-verdict"}));
  EXPECT_NE(notifier_.states.back().find("(throttled, backing off)"), std::string::npos);
}

TEST_F(AgentTest, OneThrottledContainerIsItsOwnVerdictAndDoesNotFreezeReporting) {
  config_.interval = 10s;
  // c1 sits behind something that answers 503; the host is not throttled.
  auto throttled = diagnosis(HttpTokens::required, exact(2), {{"c1", 11, Tristate::no}});
  Observation o;
  o.step = Step::token_put;
  o.result.outcome = Outcome::http;
  o.result.status = 503;
  throttled.targets[1].observations.push_back(o);
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2), {{"c1", 11}}), throttled});
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  EXPECT_EQ(call("POST", "/v1/probe").status, 200U);
  EXPECT_EQ(agent_->stats().throttled, 0U);
  EXPECT_EQ(agent_->status_json()["agent"]["backoff_seconds"], 0.0);
  EXPECT_EQ(event_names(),
            (std::vector<std::string>{"started", "first-verdict", "container-imdsv2-lost"}));
}

TEST_F(AgentTest, TokenlessGetsAreSentOnlyEveryV1Interval) {
  config_.v1_interval = 1h;
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2))});
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  call("POST", "/v1/probe");
  call("POST", "/v1/probe");
  EXPECT_EQ(fake.v1_flags, (std::vector<bool>{true, false, false}));
}

TEST_F(AgentTest, ReloadAppliesAGoodConfigAndKeepsTheOldOneOnErrors) {
  auto dir =
      std::filesystem::temp_directory_path() / ("imds-agent-reload-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto conf = dir / "imds-agent.conf";
  std::ofstream(conf) << "interval = 1h\nmin-probe-gap = 0\nv1-interval = never\n";
  sources_ = {conf.string(), true, "", {{"socket", config_.socket}}};
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2))});
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));

  std::ofstream(conf) << "interval = 1h\nmin-probe-gap = 0\nexpect = hop-limit=3\n";
  notifier_.states.clear();
  agent_->reload();
  ASSERT_GE(notifier_.states.size(), 2U);
  EXPECT_TRUE(notifier_.states[0].starts_with("RELOADING=1\nMONOTONIC_USEC="))
      << notifier_.states[0];
  EXPECT_TRUE(notifier_.states[1].starts_with("READY=1\nSTATUS=")) << notifier_.states[1];
  // The reload probes again, and the new policy is violated: one drift event.
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 2; }));
  EXPECT_EQ(event_names(), (std::vector<std::string>{"started", "first-verdict", "config-reloaded",
                                                     "policy-drift"}));

  std::ofstream(conf) << "interval = 1h\nexpect = hop-limit=3\nbogus = 1\n";
  notifier_.states.clear();
  agent_->reload();
  ASSERT_EQ(notifier_.states.size(), 2U);
  EXPECT_NE(notifier_.states[1].find("(reload failed)"), std::string::npos);
  EXPECT_EQ(event_names().back(), "policy-drift");  // no config-reloaded this time
  EXPECT_EQ(agent_->status_json()["agent"]["expect"], nlohmann::json::array({"hop-limit=3"}));
  std::filesystem::remove_all(dir);
}

TEST_F(AgentTest, AnOptionChangeBringsTheNextTokenlessGetForward) {
  config_.v1_interval = 1h;
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(1)),
                           diagnosis(HttpTokens::unknown, exact(2)),
                           diagnosis(HttpTokens::unknown, exact(2))});
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  call("POST", "/v1/probe");  // sees the hop limit change
  call("POST", "/v1/probe");  // so this one asks without a token too
  call("POST", "/v1/probe");
  EXPECT_EQ(fake.v1_flags, (std::vector<bool>{true, false, true, false}));
}

TEST_F(AgentTest, AHostProbeLostOnceIsReProbedAtOnceAndNeverReported) {
  config_.confirm = 2;
  const auto ok = diagnosis(HttpTokens::required, exact(2), {{"c1", 11}, {"c2", 12}});
  auto lost = diagnosis(HttpTokens::unknown, HopLimit{}, {{"c1", 11}, {"c2", 12}},
                        EndpointState::unreachable);
  auto& fake = this->fake({ok, lost, ok});
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  call("POST", "/v1/probe");  // sees the host's IMDS unreachable: suspected
  ASSERT_TRUE(run_until([&] { return agent_->stats().confirm_probes == 1; }));
  io_.run_for(50ms);
  EXPECT_EQ(event_names(), (std::vector<std::string>{"started", "first-verdict"}));
  // The re-probe asked for the host alone (no container is in question).
  ASSERT_EQ(fake.asked_for.size(), 3U);
  EXPECT_TRUE(fake.asked_for[2].empty());
  const auto status = agent_->status_json()["agent"];
  EXPECT_TRUE(status["suspected"].empty()) << status["suspected"];
  EXPECT_EQ(status["changes"]["unconfirmed_total"], 1);
  EXPECT_EQ(status["changes"]["confirm_probes_total"], 1);
  EXPECT_EQ(agent_->snapshot().reachable, true);
}

TEST_F(AgentTest, AContainerThatLosesItsTokenIsReportedOnceAfterReProbesOfItAlone) {
  config_.confirm = 2;
  const auto before = diagnosis(HttpTokens::required, exact(2), {{"c1", 11}, {"c2", 12}});
  const auto after =
      diagnosis(HttpTokens::required, exact(2), {{"c1", 11, Tristate::no}, {"c2", 12}});
  auto& fake = this->fake({before, after});
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  call("POST", "/v1/probe");
  ASSERT_TRUE(run_until([&] { return agent_->stats().confirm_probes == 2; }));
  io_.run_for(100ms);
  EXPECT_EQ(agent_->stats().confirm_probes, 2U) << "no third re-probe once confirmed";
  EXPECT_EQ(event_names(), (std::vector<std::string>{"started", "first-verdict",
                                                     "container-imdsv2-lost"}));
  ASSERT_EQ(fake.asked_for.size(), 4U);
  EXPECT_EQ(fake.asked_for[2], std::vector<std::string>{"c1"});
  EXPECT_EQ(fake.asked_for[3], std::vector<std::string>{"c1"});
  EXPECT_TRUE(agent_->status_json()["agent"]["suspected"].empty());
}

TEST_F(AgentTest, ASuspectedChangeIsInTheStatusNotTheJournal) {
  config_.confirm = 2;
  const auto before = diagnosis(HttpTokens::required, exact(2), {{"c1", 11}});
  const auto after = diagnosis(HttpTokens::required, exact(2), {{"c1", 11, Tristate::no}});
  // Each probe takes 300 ms: the state between the first sighting and its re-probe is seen.
  auto& fake = this->fake({before, after}, 300ms);
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  agent_->request_probe("test");
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 2; }));
  const auto suspected = agent_->status_json()["agent"]["suspected"];
  ASSERT_EQ(suspected.size(), 1U) << suspected;
  EXPECT_EQ(suspected[0]["what"], "container namespace c1");
  EXPECT_EQ(suspected[0]["reported"], "yes");
  EXPECT_EQ(suspected[0]["observed"], "no");
  EXPECT_EQ(suspected[0]["observations"], 1);
  EXPECT_EQ(suspected[0]["waiting_for"], "confirmation");
  EXPECT_EQ(event_names(), (std::vector<std::string>{"started", "first-verdict"}));
  EXPECT_EQ(agent_->snapshot().containers.begin()->second.imdsv2, Tristate::yes);
  ASSERT_TRUE(run_until([&] { return agent_->stats().confirm_probes == 2; }));
  EXPECT_EQ(event_names().back(), "container-imdsv2-lost");
}

TEST_F(AgentTest, ASuspectedHttpTokensChangeIsConfirmedWithATokenlessGet) {
  config_.confirm = 1;
  config_.v1_interval = 1h;
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2)),
                           diagnosis(HttpTokens::optional, exact(2))});
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  call("POST", "/v1/probe");
  ASSERT_TRUE(run_until([&] { return agent_->stats().confirm_probes == 1; }));
  io_.run_for(50ms);
  ASSERT_GE(fake.v1_flags.size(), 3U);
  EXPECT_TRUE(fake.v1_flags[2]) << "the re-probe of HttpTokens sends its tokenless GET";
  const auto names = event_names();
  EXPECT_EQ(std::count(names.begin(), names.end(), "option-changed"), 1);
}

TEST_F(AgentTest, AProbeRequestWaitingAtShutdownIsAnswered503BeforeTheSocketCloses) {
  auto stuck = std::make_shared<StuckProbe>();
  agent_ = std::make_unique<Agent>(io_, config_, sources_, stuck_engine(stuck, 10s), reporter_,
                                   notifier_);
  ASSERT_FALSE(agent_->start().has_value());
  ASSERT_TRUE(run_until([&] { return stuck->has_entered(); }));
  const int fd = connect_to(config_.socket);
  ASSERT_GE(fd, 0);
  const std::string req = "POST /v1/probe HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  run_until([] { return false; }, 200ms);  // the request is read and waits for the probe
  agent_->stop();
  const std::string reply = read_until_close(io_, fd, 2s);
  ::close(fd);
  EXPECT_EQ(reply.rfind("HTTP/1.1 503", 0), 0U) << "got: " << reply.substr(0, 200);
  EXPECT_NE(reply.find("imds-agent is stopping"), std::string::npos);
  stuck->release();
  agent_.reset();
  EXPECT_TRUE(stuck->wait_returned(5s));
}

TEST_F(AgentTest, StoppingWhileAProbeIsStuckDoesNotWaitForIt) {
  auto stuck = std::make_shared<StuckProbe>();
  agent_ = std::make_unique<Agent>(io_, config_, sources_, stuck_engine(stuck, 60s), reporter_,
                                   notifier_);
  ASSERT_FALSE(agent_->start().has_value());
  ASSERT_TRUE(run_until([&] { return stuck->has_entered(); }));
  const auto t0 = std::chrono::steady_clock::now();
  agent_->stop();
  io_.run_for(50ms);
  // Destroy the agent on another thread so that a destructor that joins the stuck worker
  // fails this test instead of hanging it.
  auto gone = std::async(std::launch::async, [&] { agent_.reset(); });
  const bool in_time = gone.wait_for(5s) == std::future_status::ready;
  const auto took = std::chrono::steady_clock::now() - t0;
  stuck->release();  // whatever happened, let the worker end before the test does
  gone.wait();
  EXPECT_TRUE(in_time) << "~Agent waited for a stuck probe";
  EXPECT_LT(took, 4s);
  EXPECT_NE(
      std::find(notifier_.states.begin(), notifier_.states.end(), "STOPPING=1\nSTATUS=Stopping"),
      notifier_.states.end());
  EXPECT_TRUE(stuck->wait_returned(5s));
}

TEST_F(AgentTest, AStalledJournalDoesNotStallTheLoop) {
  StalledSink stalled(1500ms);
  EventReporter reporter(stalled, false);
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2), {{"c1", 11}})});
  const auto t0 = std::chrono::steady_clock::now();
  agent_ = std::make_unique<Agent>(io_, config_, sources_, fake.engine(), reporter, notifier_);
  ASSERT_FALSE(agent_->start().has_value());                            // reports "started"
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));  // and first-verdict
  auto r = call("GET", "/v1/status");
  EXPECT_EQ(r.status, 200U);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 700ms)
      << "the loop waited for the journal to accept entries";
  // The watchdog kept being fed meanwhile.
  run_until([] { return false; }, 300ms);
  EXPECT_GE(std::count(notifier_.states.begin(), notifier_.states.end(), "WATCHDOG=1"), 3);
  agent_->stop();
  io_.run_for(50ms);
  agent_.reset();
  EXPECT_TRUE(reporter.flush(10s));  // the sender must be done with `stalled` before it goes
  EXPECT_EQ(stalled.sent, 3);        // started, first-verdict, stopping: none lost
}

// A log reader that does not read: each line waits until the test opens the gate.
class GatedLogSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  void open() {
    {
      std::lock_guard lock(gate_);
      open_ = true;
    }
    cv_.notify_all();
  }
  std::atomic<int> written{0};

 protected:
  void sink_it_(const spdlog::details::log_msg&) override {
    std::unique_lock lock(gate_);
    cv_.wait(lock, [&] { return open_; });
    ++written;
  }
  void flush_() override {}

 private:
  std::mutex gate_;
  std::condition_variable cv_;
  bool open_ = false;
};

TEST_F(AgentTest, AStalledLogReaderDoesNotStallTheLoopAndDroppedLinesAreCounted) {
  auto sink = std::make_shared<GatedLogSink>();
  const auto level = spdlog::get_level();
  spdlog::set_level(spdlog::level::debug);
  install_logger(sink, "%v");
  const std::uint64_t dropped_before = log_lines_dropped();
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2), {{"c1", 11}})});
  const auto t0 = std::chrono::steady_clock::now();
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  // More lines than the queue holds, from the loop's thread, while nothing is read.
  for (std::size_t i = 0; i < 2 * kLogQueueLines; ++i) spdlog::info("line {}", i);
  EXPECT_EQ(call("GET", "/v1/status").status, 200U);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 700ms) << "logging waited for the reader";
  const std::uint64_t dropped = log_lines_dropped() - dropped_before;
  EXPECT_GE(dropped, kLogQueueLines / 2);
  EXPECT_GE(agent_->status_json()["agent"]["log_lines_dropped_total"].get<std::uint64_t>(),
            dropped);
  EXPECT_NE(call("GET", "/metrics").body.find("imds_agent_log_lines_dropped_total "),
            std::string::npos);
  EXPECT_FALSE(flush_logs(50ms)) << "the queue cannot empty while the reader is stalled";
  sink->open();
  EXPECT_TRUE(flush_logs(5s));
  EXPECT_GT(sink->written, 0);
  install_logger(std::make_shared<spdlog::sinks::null_sink_mt>(), "%v");
  spdlog::set_level(level);
}

TEST_F(AgentTest, TheStatusStaysBoundedWithManyNamespacesAndSaysWhatItLeftOut) {
  std::vector<FakeContainer> many;
  many.reserve(1000);
  for (int i = 0; i < 1000; ++i) {
    many.push_back(
        {"c" + std::to_string(i), 1000U + i, i % 100 == 7 ? Tristate::no : Tristate::yes});
  }
  config_.max_namespaces = 1000;
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2), many)});
  fake.real_json = true;
  start(fake);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  auto r = call("GET", "/v1/status");
  ASSERT_EQ(r.status, 200U);
  auto j = nlohmann::json::parse(r.body);
  const auto& a = j["agent"];
  EXPECT_EQ(a["containers"].size(), kMaxListedNamespaces);
  EXPECT_EQ(a["containers_total"], 1000);
  EXPECT_EQ(a["containers_omitted"], 1000 - kMaxListedNamespaces);
  // Those without IMDSv2 come first, so none of them is left out.
  for (std::size_t i = 0; i < 10; ++i) EXPECT_EQ(a["containers"][i]["imdsv2"], "no") << i;
  EXPECT_EQ(j["targets"].size(), kMaxListedNamespaces);
  EXPECT_EQ(j["targets_omitted"], 1001 - kMaxListedNamespaces);
  EXPECT_EQ(j["targets"][0]["name"], "host");
  EXPECT_EQ(j["inference"]["targets"].size(), kMaxListedNamespaces);
  EXPECT_EQ(j["inference"]["targets_omitted"], 1001 - kMaxListedNamespaces);
  EXPECT_LT(r.body.size(), 1024U * 1024) << r.body.size();
  // The metrics still have every namespace.
  auto m = call("GET", "/metrics").body;
  EXPECT_NE(m.find("imds_container_namespaces 1000\n"), std::string::npos);
}

TEST_F(AgentTest, DroppedJournalEventsAreCountedInTheStatusAndTheMetrics) {
  auto gate = std::make_shared<StuckProbe>();  // reused as a gate for the journal
  class GatedSink : public JournalSink {
   public:
    explicit GatedSink(std::shared_ptr<StuckProbe> g) : gate_(std::move(g)) {}
    bool send(const JournalEntry&) override {
      std::unique_lock lock(gate_->mutex);
      gate_->cv.wait(lock, [&] { return gate_->released; });
      return true;
    }

   private:
    std::shared_ptr<StuckProbe> gate_;
  } gated(gate);
  EventReporter reporter(gated, false, /*capacity=*/1);
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2), {{"c1", 11}})});
  agent_ = std::make_unique<Agent>(io_, config_, sources_, fake.engine(), reporter, notifier_);
  ASSERT_FALSE(agent_->start().has_value());  // "started" is in send(), stuck
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles == 1; }));
  run_until([] { return false; }, 50ms);
  EXPECT_EQ(call("POST", "/v1/probe").status, 200U);
  // first-verdict waits in the queue (capacity 1); nothing else changed, so drop more:
  agent_->reload();  // config-reloaded: dropped
  run_until([&] { return agent_->stats().cycles == 3; });
  const auto dropped = agent_->status_json()["agent"]["journal_dropped_total"].get<std::uint64_t>();
  EXPECT_GE(dropped, 1U);
  EXPECT_NE(call("GET", "/metrics")
                .body.find("imds_agent_journal_dropped_total " + std::to_string(dropped) + "\n"),
            std::string::npos);
  agent_->stop();
  io_.run_for(50ms);
  agent_.reset();
  gate->release();
  EXPECT_TRUE(reporter.flush(5s));
}

TEST_F(AgentTest, WithoutACallerWatchTheCallersRouteSaysItIsOff) {
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2))});
  start(fake);  // the fake engine has no open_watch
  const auto r = call("GET", "/v1/callers");
  EXPECT_EQ(r.status, 409U);
  EXPECT_NE(r.body.find("watch-callers"), std::string::npos) << r.body;
  EXPECT_EQ(call("POST", "/v1/callers").status, 405U);
  const auto status = nlohmann::json::parse(call("GET", "/v1/status").body);
  EXPECT_EQ(status["agent"]["callers_watch"]["state"], "off");
}

TEST_F(AgentTest, ACallerWatchThatFailsIsReportedAndProbingGoesOn) {
  auto& fake = this->fake({diagnosis(HttpTokens::required, exact(2))});
  Engine engine = fake.engine();
  std::atomic<std::thread::id> opened_on{};
  engine.open_watch = [&](const WatchOptions&) -> Result<std::unique_ptr<CallerWatcher>> {
    opened_on = std::this_thread::get_id();
    return Error{"cannot open a packet socket: Operation not permitted"};
  };
  agent_ = std::make_unique<Agent>(io_, config_, sources_, engine, reporter_, notifier_);
  ASSERT_FALSE(agent_->start().has_value());
  ASSERT_TRUE(run_until([&] {
    return nlohmann::json::parse(call("GET", "/v1/status").body)["agent"]["callers_watch"]["state"] ==
           "failed";
  }));
  EXPECT_NE(opened_on.load(), std::this_thread::get_id()) << "opened on the loop, not its own thread";
  const auto r = call("GET", "/v1/callers");
  EXPECT_EQ(r.status, 503U);
  EXPECT_NE(r.body.find("Operation not permitted"), std::string::npos) << r.body;
  EXPECT_NE(agent_->metrics_text().find("imds_callers_watch_up 0\n"), std::string::npos);
  ASSERT_TRUE(run_until([&] { return agent_->stats().cycles >= 1; }));

  // watch-callers = no on reload: the watch is off.
  config_.watch_callers = false;
  const auto dir = std::filesystem::temp_directory_path() / ("imds-agent-callers-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "agent.conf") << "watch-callers = no\n";
  agent_.reset();
  sources_.file = (dir / "agent.conf").string();
  auto loaded = load_config(sources_);
  ASSERT_TRUE(loaded.ok());
  EXPECT_FALSE(loaded.value().watch_callers);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace imds::agent
