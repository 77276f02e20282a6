// The daemon's loop: start, stop, reload, signals, the watchdog, the timer and probe scheduling.
// The socket's routes and the status document are in status_api.cpp.
#include "agent.hpp"

#include <grp.h>
#include <unistd.h>
#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <ctime>

#include "bounded_stop.hpp"
#include "config.h"
#include "diagnose.hpp"
#include "duration.hpp"
#include "status_api.hpp"

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace imds::agent {
namespace {

// A probe that has not come back after this long is stuck: the watchdog stops being fed
// so that systemd restarts the daemon instead of it silently reporting nothing.
constexpr auto kStuckProbe = 120s;

spdlog::level::level_enum log_level_of(Priority p) {
  switch (p) {
    case Priority::emerg:
    case Priority::alert:
    case Priority::crit:
      return spdlog::level::critical;
    case Priority::err:
      return spdlog::level::err;
    case Priority::warning:
      return spdlog::level::warn;
    case Priority::notice:
    case Priority::info:
      return spdlog::level::info;
    case Priority::debug:
      break;
  }
  return spdlog::level::debug;
}

std::optional<gid_t> lookup_group(const std::string& name) {
  std::vector<char> buf(std::size_t{16} * 1024);
  group gr{};
  group* result = nullptr;
  if (getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &result) != 0 || result == nullptr) {
    return std::nullopt;
  }
  return gr.gr_gid;
}

GateConfig gate_config_of(const AgentConfig& c) {
  return {c.confirm, c.min_event_gap, c.flap_changes, c.flap_window};
}

// The present container namespaces whose keys a confirmation probe asks for.
std::vector<NetnsTarget> only_keys(const std::vector<NetnsTarget>& present,
                                   const std::vector<std::string>& keys) {
  std::vector<NetnsTarget> out;
  for (const auto& t : present) {
    if (std::find(keys.begin(), keys.end(), container_key(t)) != keys.end()) out.push_back(t);
  }
  return out;
}

}  // namespace

EventReporter::EventReporter(JournalSink& sink, bool echo, std::size_t capacity)
    : echo_(echo), sender_(sink, capacity, [echo](const JournalEntry& entry) {
        // No journal: the human log is the only place left (unless it already had it).
        if (!echo) spdlog::log(log_level_of(entry.priority), "{}", format_entry_for_humans(entry));
      }) {}

void EventReporter::report(const Event& event, std::source_location where) {
  auto entry = to_journal_entry(event, where);
  if (echo_) spdlog::log(log_level_of(entry.priority), "{}", format_entry_for_humans(entry));
  sender_.submit(std::move(entry));  // a full queue drops and counts it, never blocks
}

ProbeThread::ProbeThread() : state_(std::make_shared<State>()) {
  thread_ = std::thread([state = state_] {
    std::unique_lock lock(state->mutex);
    for (;;) {
      state->cv.wait(lock, [&] { return state->stopping || !state->jobs.empty(); });
      if (state->stopping) break;  // jobs not started yet are not run
      auto job = std::move(state->jobs.front());
      state->jobs.pop_front();
      lock.unlock();
      job();
      job = nullptr;  // what the job owns goes now, not at the next wake-up
      lock.lock();
    }
    state->jobs.clear();
    state->exited = true;
    state->cv.notify_all();
  });
}

ProbeThread::~ProbeThread() { finish(std::chrono::milliseconds(0)); }

void ProbeThread::post(std::function<void()> job) {
  std::lock_guard lock(state_->mutex);
  if (state_->stopping) return;
  state_->jobs.push_back(std::move(job));
  state_->cv.notify_all();
}

bool ProbeThread::finish(std::chrono::milliseconds bound) {
  // Left behind when stuck: see the class comment (the job owns everything it touches).
  return stop_within(thread_, *state_, bound);
}

Agent::Agent(asio::io_context& io, AgentConfig config, ConfigSources sources, Engine engine,
             EventReporter& reporter, Notifier& notifier)
    : io_(io),
      config_(std::move(config)),
      sources_(std::move(sources)),
      engine_(std::move(engine)),
      reporter_(reporter),
      notifier_(notifier),
      server_(io,
              [this](const ApiRequest& r, std::function<void(ApiResponse)> respond) {
                handle(r, std::move(respond));
              }),
      mailbox_(std::make_shared<Mailbox>()),
      timer_(io),
      watchdog_(io),
      signals_(io, SIGHUP, SIGTERM, SIGINT),
      netns_watcher_(io, [this] { request_probe("a network namespace appeared or vanished"); }),
      rng_(std::random_device{}()),
      schedule_(config_),
      gate_(gate_config_of(config_)),
      callers_timer_(io) {
  mailbox_->loop = io_.get_executor();
}

Agent::~Agent() {
  stopping_ = true;
  {
    std::lock_guard lock(mailbox_->mutex);
    mailbox_->open = false;  // a result that comes later is dropped, not run on a dead Agent
  }
  if (!finished_) finish(kWorkerBound);
}

bool Agent::finish(std::chrono::milliseconds bound) {
  if (!finished_) {
    finished_ = worker_.finish(bound);
    if (!*finished_) {
      spdlog::warn(
          "a probe is still running {} ms after the stop was asked for: not waiting for it",
          bound.count());
    }
  }
  return *finished_;
}

std::optional<std::string> Agent::start() {
  std::optional<gid_t> gid = lookup_group(config_.socket_group);
  if (!gid) {
    spdlog::warn(
        "socket group '{}' does not exist: {} keeps this process's group; create the "
        "group (systemd-sysusers) to let its members read the API",
        config_.socket_group, config_.socket);
  }
  if (auto err = server_.listen(config_.socket, gid)) return err;

  Event started{EventKind::started, spec_of(EventKind::started).priority, {}};
  started.fields.push_back({"IMDS_AGENT_VERSION", IMDS_VERSION});
  started.fields.push_back({"IMDS_INTERVAL", format_duration(config_.interval)});
  started.fields.push_back(
      {"IMDS_V1_INTERVAL", config_.v1_interval ? format_duration(*config_.v1_interval) : "never"});
  started.fields.push_back({"IMDS_SOCKET", config_.socket});
  std::string expect;
  for (const auto& e : config_.expect) expect += (expect.empty() ? "" : " ") + e;
  if (!expect.empty()) started.fields.push_back({"IMDS_EXPECT", expect});
  std::string files;
  for (const auto& f : config_.sources) files += (files.empty() ? "" : " ") + f;
  started.fields.push_back({"IMDS_CONFIG", files.empty() ? "(defaults)" : files});
  reporter_.report(started);

  arm_signals();
  netns_watcher_.watch(config_.netns_dirs, config_.debounce);
  arm_watchdog();
  notifier_.notify("STATUS=Probing the IMDS for the first time");
  start_callers_watch();  // posted first, so the worker starts it before the first probe
  start_probe("start");
  return std::nullopt;
}

void Agent::stop() {
  if (stopping_) return;
  stopping_ = true;
  notifier_.notify("STOPPING=1\nSTATUS=Stopping");
  Event e{EventKind::stopping, spec_of(EventKind::stopping).priority, {}};
  e.fields.push_back({"IMDS_CYCLES", std::to_string(stats_.cycles)});
  reporter_.report(e);
  // The callers waiting for a probe get their answer first: the server lets answers being
  // written finish (briefly) while it closes everything else.
  for (auto& w : waiting_) w(error_response(503, "imds-agent is stopping"));
  waiting_.clear();
  server_.close();
  timer_.cancel();
  watchdog_.cancel();
  boost::system::error_code ignored;
  signals_.cancel(ignored);
  // Removing the last registration restores SIG_DFL (Asio does): a second SIGTERM or SIGINT
  // while a stuck probe or journal is waited for ends the process at once.
  signals_.clear(ignored);
  netns_watcher_.close();
  stop_callers_watch();  // wakes every 200 ms: stops within its bound
  // Metrics are about now: a stopped agent's file would be scraped as current for ever. The
  // inventory file stays: it says when it was captured.
  if (!textfile_out_.path.empty() && textfile_out_.written) {
    ::unlink(textfile_out_.path.c_str());
  }
}

void Agent::reload() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  const auto usec = static_cast<long long>(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
  notifier_.notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
  auto loaded = load_config(sources_);
  if (!loaded) {
    spdlog::error("reload failed, keeping the previous configuration: {}", loaded.error().message);
    notifier_.notify("READY=1\nSTATUS=" + status_line(snapshot_) + " (reload failed)");
    return;
  }
  auto next = std::move(loaded).value();
  if (next.socket != config_.socket || next.socket_group != config_.socket_group) {
    spdlog::warn("socket and socket-group changes take effect at the next restart");
    next.socket = config_.socket;
    next.socket_group = config_.socket_group;
  }
  config_ = std::move(next);
  schedule_.reconfigure(config_);
  gate_.reconfigure(gate_config_of(config_));
  set_log_level(config_.log_level);
  netns_watcher_.watch(config_.netns_dirs, config_.debounce);
  reconfigure_callers_watch();
  Event e{EventKind::config_reloaded, spec_of(EventKind::config_reloaded).priority, {}};
  std::string files;
  for (const auto& f : config_.sources) files += (files.empty() ? "" : " ") + f;
  e.fields.push_back({"IMDS_CONFIG", files.empty() ? "(defaults)" : files});
  reporter_.report(e);
  notifier_.notify("READY=1\nSTATUS=" + status_line(snapshot_));
  request_probe("configuration reloaded");
}

void Agent::arm_signals() {
  signals_.async_wait([this](boost::system::error_code ec, int sig) {
    if (ec || stopping_) return;
    if (sig != SIGHUP) return stop();
    reload();
    arm_signals();
  });
}

void Agent::arm_watchdog() {
  auto period = notifier_.watchdog_period();
  if (!period || stopping_) return;
  watchdog_.expires_after(*period);
  watchdog_.async_wait([this](boost::system::error_code ec) {
    if (ec || stopping_) return;
    const bool stuck = probing_ && std::chrono::steady_clock::now() - probe_started_ > kStuckProbe;
    if (stuck) {
      spdlog::error(
          "a probe has been running for more than {}s: no longer feeding the "
          "watchdog, so that systemd restarts imds-agent",
          kStuckProbe.count());
    } else {
      notifier_.notify("WATCHDOG=1");
    }
    arm_watchdog();
  });
}

void Agent::request_probe(std::string_view reason) {
  if (stopping_) return;
  if (probing_) {
    again_ = true;
    return;
  }
  const auto now = std::chrono::steady_clock::now();
  if (!last_probe_end_ || now >= *last_probe_end_ + config_.min_probe_gap) {
    start_probe(std::string(reason));
    return;
  }
  const auto wait =
      std::chrono::duration_cast<Millis>(*last_probe_end_ + config_.min_probe_gap - now);
  if (next_probe_steady_ > now + wait) arm_timer(wait);
}

void Agent::arm_timer(Millis delay, bool confirmation) {
  next_probe_steady_ = std::chrono::steady_clock::now() + delay;
  next_probe_time_ = std::chrono::system_clock::now() + delay;
  timer_.expires_after(delay);
  timer_.async_wait([this, confirmation](boost::system::error_code ec) {
    if (!ec && !stopping_ && !probing_) {
      start_probe(confirmation ? "confirming a suspected change" : "interval", confirmation);
    }
  });
}

void Agent::start_probe(std::string reason, bool confirmation) {
  if (stopping_ || probing_) return;
  probing_ = true;
  timer_.cancel();
  next_probe_time_.reset();
  probe_started_ = std::chrono::steady_clock::now();
  // A confirmation probe re-probes the host and the suspected containers only; it leaves the
  // regular schedule (its tokenless GETs, the namespace cursor) alone.
  std::optional<Confirmation> only;
  if (confirmation && confirm_next_) only = confirm_next_;
  confirming_ = only.has_value();
  bool v1 = only ? only->v1 : schedule_.take_v1(probe_started_);
  // Asked for because something changed (want_v1_soon): measured, whatever the evidence.
  if (!only && v1 && !schedule_.last_v1_forced() &&
      choose_v1(v1_inputs(true)) == V1Choice::skip_evidence_agrees) {
    // A workload's tokenless request, answered by the IMDS since our own, said the same.
    v1 = false;
    ++v1_skipped_;
    v1_skipped_for_ = v1_inputs(true).evidence;
    spdlog::debug("no IMDSv1 GET this cycle: {} got {} to one at {} (passive evidence)",
                  v1_skipped_for_->where, v1_skipped_for_->status,
                  std::chrono::system_clock::to_time_t(v1_skipped_for_->seen));
  }
  probe_v1_ = v1;
  spdlog::debug("probe cycle {} started ({}), IMDSv1 GETs: {}", stats_.cycles + 1, reason,
                v1 ? "yes" : "no");
  worker_.post([this, mailbox = mailbox_, engine = engine_, config = config_, cursor = cursor_, v1,
                only = std::move(only), t0 = probe_started_] {
    std::optional<Diagnosis> d;
    std::vector<NetnsTarget> present;
    std::size_t next_cursor = cursor;
    std::string error;
    try {
      present = engine.discover(config);
      ProbeRequest req{only ? only_keys(present, only->containers)
                            : select_window(present, config.max_namespaces, cursor),
                       v1};
      d = engine.probe(config, req);
      // Namespaces the engine deferred (request-rate bound) come first next time.
      if (!only) next_cursor = cursor_after(present.size(), cursor, req.containers, *d);
    } catch (const std::exception& e) {
      error = e.what();
    }
    auto took = std::chrono::steady_clock::now() - t0;
    // `this` is only used on the loop, and only while the mailbox is open.
    std::lock_guard lock(mailbox->mutex);
    if (!mailbox->open) return;
    asio::post(mailbox->loop, [this, mailbox, d = std::move(d), present = std::move(present),
                               next_cursor, error = std::move(error), took]() mutable {
      if (!mailbox->open) return;
      probe_done(std::move(d), present, next_cursor, std::move(error), took);
    });
  });
}

// Inference has read what it needs from the bodies (identity, the listing's tags/): the
// agent keeps none of them, so memory does not grow with namespaces x 64 KiB, and the
// status document is serialised once per cycle instead of once per request.
void Agent::keep_last(Diagnosis d) {
  for (auto& t : d.targets) {
    for (auto& o : t.observations) {
      std::string().swap(o.result.body);
    }
  }
  last_json_ = engine_.to_json ? engine_.to_json(d) : nlohmann::json::object();
  cap_namespace_lists(last_json_);
  last_ = std::move(d);
}

void Agent::probe_done(std::optional<Diagnosis> d, const std::vector<NetnsTarget>& present,
                       std::size_t cursor, std::string error,
                       std::chrono::steady_clock::duration took) {
  probing_ = false;
  if (stopping_) return;
  last_probe_end_ = std::chrono::steady_clock::now();
  last_probe_time_ = std::chrono::system_clock::now();
  cursor_ = cursor;
  CycleResult result = CycleResult::error;
  if (d) {
    ++stats_.cycles;
    stats_.durations.observe(took);
    result = classify(*d);
    if (result == CycleResult::throttled) {
      // Answers under throttling say nothing about the options: back off and keep the last
      // knowledge rather than report every container as having lost its token.
      ++stats_.throttled;
      stats_.last_error = "throttled (HTTP 429/503): backing off";
      spdlog::warn("the IMDS answers 429/503 (throttling): backing off");
    } else {
      if (probe_v1_ && d->inference.http_tokens != HttpTokens::unknown) {
        v1_measured_ = *last_probe_time_;  // the agent's own tokenless GET decided it
      }
      // Only confirmed changes reach the journal (confirm.hpp); the rest stay suspected.
      const unsigned max_rounds = config_.confirm + 2;
      GatedCycle cycle = gated_cycle(gate_, snapshot_, *d, &present, config_.expectations,
                                     *last_probe_time_, confirm_rounds_ < max_rounds);
      const ChangeGate::Step& gated = cycle.step;
      for (const auto& e : cycle.events) {
        reporter_.report(e);
        if (e.kind == EventKind::option_changed || e.kind == EventKind::imds_back) {
          schedule_.want_v1_soon();
        }
      }
      for (const auto& s : gate_.suspicions()) {
        spdlog::debug("suspected, not reported: {} {} -> {} ({} reading(s), waiting for {})",
                      s.label, s.reported, s.observed, s.observations, s.waiting_for);
      }
      // Re-probes for what is still short of its confirmations, a bounded number in a row.
      confirm_next_.reset();
      if (!gated.confirm_soon) {
        confirm_rounds_ = 0;
      } else if (confirm_rounds_ < max_rounds) {
        ++confirm_rounds_;
        confirm_next_ = Confirmation{gated.confirm_containers, gated.confirm_http_tokens};
      }
      snapshot_ = std::move(cycle.next);
      keep_last(std::move(*d));
      if (result == CycleResult::error) {
        stats_.last_error = "IMDS unreachable: " + snapshot_.unreachable_reason;
      }
    }
  } else {
    stats_.last_error = error;
    spdlog::error("probe failed: {}", error);
  }
  if (!d || result == CycleResult::throttled) confirm_next_.reset();  // nothing was confirmed
  if (result != CycleResult::ok) ++stats_.errors;
  const bool was_confirmation = confirming_;
  confirming_ = false;
  if (was_confirmation && d) ++stats_.confirm_probes;
  Millis delay{0};
  const auto now = std::chrono::steady_clock::now();
  if (was_confirmation && regular_due_) {
    // The regular cycle keeps its time (and the backoff its count), min-probe-gap after
    // this one at the earliest.
    if (*regular_due_ > now) delay = std::chrono::duration_cast<Millis>(*regular_due_ - now);
    delay = std::max(delay, config_.min_probe_gap);
  } else {
    delay = schedule_.finished(result, rng_);
    regular_due_ = now + delay;
  }
  const bool confirm_now = confirm_next_ && result != CycleResult::throttled;
  if (confirm_now) delay = std::min(delay, config_.min_probe_gap);
  stats_.consecutive_errors = schedule_.consecutive_failures();
  std::string status = "STATUS=" + status_line(snapshot_);
  if (result == CycleResult::throttled) status += " (throttled, backing off)";
  if (!ready_) {
    ready_ = true;
    status = "READY=1\n" + status;
  }
  notifier_.notify(status);
  write_fleet_files();
  for (auto& w : waiting_) {
    w(error.empty() ? json_response(200, status_json())
                    : error_response(500, "probe failed: " + error));
  }
  waiting_.clear();
  if (again_) {
    again_ = false;
    delay = std::min(delay, config_.min_probe_gap);
    arm_timer(delay);  // a full probe, as asked for: it confirms whatever it covers too
    return;
  }
  arm_timer(delay, confirm_now);
}

}  // namespace imds::agent
