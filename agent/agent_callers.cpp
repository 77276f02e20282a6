// The agent's side of the passive caller watch (callers.hpp): starting and stopping it with
// the configuration, its journal events and summary, on the loop.
#include <spdlog/spdlog.h>

#include "agent.hpp"
#include "words.hpp"

namespace imds::agent {

namespace {

constexpr auto kCallersCheck = std::chrono::seconds(5);
constexpr std::chrono::milliseconds kCallersStopBound{1000};

// The settings the watch depends on: a reload that changes one restarts it.
std::string watch_key(const AgentConfig& c) {
  std::string key = c.endpoint + '\n' + c.endpoint_v6 + '\n' + (c.ipv6 ? "6" : "-") +
                    (c.proc_scan ? "p" : "-") + (c.caller_processes ? "o" : "-") + '\n' +
                    c.docker_root;
  for (const auto& d : c.netns_dirs) key += '\n' + d;
  return key;
}

}  // namespace

void Agent::start_callers_watch() {
  if (!config_.watch_callers || !engine_.open_watch || stopping_) return;
  callers_ = std::make_shared<CallerWatchService>();
  callers_key_ = watch_key(config_);
  callers_state_seen_ = CallerWatchService::State::starting;
  // On the worker: the watch's thread inherits its capabilities (the loop holds none).
  worker_.post([service = callers_, open = engine_.open_watch,
                options = watch_options_of(config_)]() mutable {
    service->start(std::move(open), std::move(options));
  });
  arm_callers_timer();
}

void Agent::reconfigure_callers_watch() {
  if (!config_.watch_callers) {
    if (callers_) spdlog::info("watch-callers = no: the passive caller watch stops");
    stop_callers_watch();
    return;
  }
  if (callers_ && watch_key(config_) == callers_key_) return;
  stop_callers_watch();  // its endpoints or namespace directories changed
  start_callers_watch();
}

void Agent::stop_callers_watch() {
  callers_timer_.cancel();
  if (!callers_) return;
  if (!callers_->stop(kCallersStopBound)) {
    spdlog::warn("the caller watch did not stop within {} ms: left behind",
                 kCallersStopBound.count());
  }
  callers_.reset();
}

void Agent::arm_callers_timer() {
  if (stopping_ || !callers_) return;
  callers_timer_.expires_after(kCallersCheck);
  callers_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || stopping_ || !callers_) return;
    check_callers();
    arm_callers_timer();
  });
}

void Agent::check_callers() {
  const auto view = callers_->view();
  if (view.state != callers_state_seen_) {
    if (view.state == CallerWatchService::State::failed) {
      spdlog::error("the passive caller watch is off: {} (watch-callers = no silences this)",
                    view.error);
    } else if (view.state == CallerWatchService::State::running) {
      spdlog::info("watching the IMDS traffic of the host and its containers (sends nothing)");
    }
    callers_state_seen_ = view.state;
  }
  if (!view.report) return;
  V1Inputs evidence = v1_inputs(false);
  if (config_.v1_interval && evidence_contradicts(evidence) &&
      contradiction_acted_on_ != evidence.evidence->seen) {
    // Never taken as the verdict: the agent measures again itself, at once.
    contradiction_acted_on_ = evidence.evidence->seen;
    spdlog::info("{}'s tokenless request was answered {}, but HttpTokens was {} when last "
                 "measured: measuring it again now",
                 evidence.evidence->where, evidence.evidence->status,
                 http_tokens_word(evidence.known));
    schedule_.want_v1_soon();
    request_probe("passive evidence contradicts the last HttpTokens measurement");
  }
  const auto now = std::chrono::steady_clock::now();
  for (const auto& e : caller_events_.announce(*view.report, now)) reporter_.report(e);
  if (!config_.callers_summary_interval) return;
  if (!last_callers_summary_) {
    last_callers_summary_ = now;
    return;
  }
  if (now - *last_callers_summary_ >= *config_.callers_summary_interval) {
    const auto period = std::chrono::duration_cast<Millis>(now - *last_callers_summary_);
    if (auto e = caller_events_.summary(*view.report, period)) reporter_.report(*e);
    last_callers_summary_ = now;
  }
}

V1Inputs Agent::v1_inputs(bool scheduled) const {
  V1Inputs in;
  in.scheduled = scheduled;
  if (callers_) {
    const auto view = callers_->view();
    if (view.report) in.evidence = view.report->book.latest_tokenless();
  }
  in.known = snapshot_.options.http_tokens.value_or(HttpTokens::unknown);
  in.measured = v1_measured_;
  in.v1_interval = config_.v1_interval;
  in.now = std::chrono::system_clock::now();
  return in;
}


}  // namespace imds::agent
