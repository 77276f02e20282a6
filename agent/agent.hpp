// The daemon: one Asio loop (timers, the namespace watcher, signals, the socket API, the
// watchdog) and one worker thread that runs the probe, so a slow IMDS never stalls the loop.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <source_location>
#include <string>
#include <thread>
#include <vector>

#include "api_server.hpp"
#include "callers.hpp"
#include "confirm.hpp"
#include "config.hpp"
#include "events.hpp"
#include "journal.hpp"
#include "metrics.hpp"
#include "model.hpp"
#include "netns_watcher.hpp"
#include "schedule.hpp"
#include "snapshot.hpp"
#include "systemd.hpp"

namespace imds::agent {

// What one cycle asks of the engine.
struct ProbeRequest {
  std::vector<NetnsTarget> containers;  // this cycle's share of the container namespaces
  bool probe_v1 = false;                // send tokenless GETs this time
};

// The seam in front of the probing engine: production wires discover_containers() and
// collect()/infer(); unit tests feed hand-made Diagnosis values. Both run on the worker.
struct Engine {
  std::function<std::vector<NetnsTarget>(const AgentConfig&)> discover;
  std::function<Diagnosis(const AgentConfig&, const ProbeRequest&)> probe;
  std::function<nlohmann::json(const Diagnosis&)> to_json;
  // The request-rate bound's counters and discovery's counts, for /metrics (may be unset).
  std::function<EngineStats()> stats;
  // Opens the passive caller watch, on the watch's own thread (unset: no watch).
  WatchOpener open_watch;
};

// Sends events to the journal through a bounded queue (JournalSender), so the loop never
// waits for journald; echoes them to the human log when the journal is not where stderr goes
// (on the loop), or when the journal is unavailable (on the sender's thread).
class EventReporter {
 public:
  static constexpr std::size_t kQueueCapacity = 256;
  EventReporter(JournalSink& sink, bool echo, std::size_t capacity = kQueueCapacity);
  void report(const Event& event, std::source_location where = std::source_location::current());
  // Waits up to `bound` for the queued events to reach the journal; true when they did.
  bool flush(std::chrono::milliseconds bound) { return sender_.flush(bound); }
  // Events dropped because the queue was full (the journal did not keep up).
  [[nodiscard]] std::uint64_t dropped() const { return sender_.dropped(); }

 private:
  bool echo_;
  JournalSender sender_;
};

// The thread that runs probes, one at a time. A probe stuck in the kernel (an IMDS that
// hangs, a namespace that blocks) cannot be interrupted, so at shutdown the thread is given a
// bound and then left behind (detached) instead of joined: every job it runs owns what it
// touches (copies of the engine and config, and a Mailbox to post its result through).
class ProbeThread {
 public:
  ProbeThread();
  ~ProbeThread();  // finish(0): joins an idle thread, leaves a busy one behind
  ProbeThread(const ProbeThread&) = delete;
  ProbeThread& operator=(const ProbeThread&) = delete;

  void post(std::function<void()> job);
  // Stops taking jobs and waits up to `bound` for the one in flight; true when the thread
  // ended and was joined, false when it was detached with its job still running.
  bool finish(std::chrono::milliseconds bound);

 private:
  struct State {
    std::mutex mutex;
    std::condition_variable cv;
    std::deque<std::function<void()>> jobs;
    bool stopping = false;
    bool exited = false;
  };
  std::shared_ptr<State> state_;
  std::thread thread_;
};

// Where the probe thread posts its results: the loop while the Agent lives, nowhere after
// (a probe left behind at shutdown finds it closed and drops its result).
struct Mailbox {
  std::mutex mutex;
  bool open = true;
  boost::asio::any_io_executor loop;
};

class Agent {
 public:
  Agent(boost::asio::io_context& io, AgentConfig config, ConfigSources sources, Engine engine,
        EventReporter& reporter, Notifier& notifier);
  ~Agent();  // finish(kWorkerBound) unless finish() was called
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Opens the socket, arms signals, timers and watches, starts the first probe.
  // Returns an error message when the socket cannot be served.
  std::optional<std::string> start();
  // SIGTERM path: STOPPING=1, 503 to the POST /v1/probe callers waiting, close the socket,
  // timers and watches so that run() returns, and give SIGTERM/SIGINT their default action
  // back so that a second one ends the process at once.
  void stop();
  void reload();  // SIGHUP path
  // After stop(): waits up to `bound` for a probe in flight. true: the worker ended; false:
  // it is stuck and was left behind (imds-agent then exits without waiting, see main.cpp).
  bool finish(std::chrono::milliseconds bound);
  static constexpr std::chrono::milliseconds kWorkerBound{2000};

  // The status API, in status_api.cpp: the socket's routes, the document of GET /v1/status
  // and the text of GET /metrics.
  void handle(const ApiRequest& req, std::function<void(ApiResponse)> respond);
  [[nodiscard]] nlohmann::json status_json() const;
  [[nodiscard]] std::string metrics_text() const;
  // The fleet outputs (textfile-dir, ssm-inventory-dir), after each cycle; failures are
  // logged when they start or change and shown in /v1/status (status_api.cpp).
  void write_fleet_files();

  // For tests and the namespace watcher.
  [[nodiscard]] const Snapshot& snapshot() const { return snapshot_; }
  [[nodiscard]] const ProbeStats& stats() const { return stats_; }
  void request_probe(std::string_view reason);

 private:
  void start_probe(std::string reason, bool confirmation = false);
  void keep_last(Diagnosis d);
  void probe_done(std::optional<Diagnosis> d, const std::vector<NetnsTarget>& present,
                  std::size_t cursor, std::string error, std::chrono::steady_clock::duration took);
  void arm_timer(Millis delay, bool confirmation = false);
  void arm_watchdog();
  // The caller watch: started on the worker (its capabilities), read on the loop.
  void start_callers_watch();
  void stop_callers_watch();
  void reconfigure_callers_watch();  // after a reload
  void arm_callers_timer();
  void check_callers();
  void arm_signals();

  boost::asio::io_context& io_;
  AgentConfig config_;
  ConfigSources sources_;
  Engine engine_;
  EventReporter& reporter_;
  Notifier& notifier_;
  ApiServer server_;
  std::shared_ptr<Mailbox> mailbox_;
  ProbeThread worker_;
  std::optional<bool> finished_;  // finish()'s answer, once called
  boost::asio::steady_timer timer_;
  boost::asio::steady_timer watchdog_;
  boost::asio::signal_set signals_;
  NetnsWatcher netns_watcher_;
  std::mt19937_64 rng_;
  Schedule schedule_;
  std::size_t cursor_ = 0;

  Snapshot snapshot_;  // what the journal was told (changes only once confirmed)
  // Confirmation of suspected changes (confirm.hpp): the next confirmation probe's subjects
  // (container keys; the host is always probed) and whether it sends tokenless GETs; the
  // rounds asked for in a row (bounded: an inconclusive re-probe does not repeat for ever);
  // when the regular cycle is due, which confirmation probes do not move.
  ChangeGate gate_;
  struct Confirmation {
    std::vector<std::string> containers;
    bool v1 = false;
  };
  std::optional<Confirmation> confirm_next_;
  unsigned confirm_rounds_ = 0;
  bool confirming_ = false;  // the running probe is a confirmation probe
  std::optional<std::chrono::steady_clock::time_point> regular_due_;
  std::optional<Diagnosis> last_;  // without response bodies (see keep_last)
  nlohmann::json last_json_;       // last_ as JSON, made once per cycle for /v1/status
  ProbeStats stats_;
  bool probing_ = false;
  bool again_ = false;  // a probe was asked for while one ran
  bool ready_ = false;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point probe_started_{};
  std::optional<std::chrono::steady_clock::time_point> last_probe_end_;
  std::optional<std::chrono::system_clock::time_point> last_probe_time_;
  std::optional<std::chrono::system_clock::time_point> next_probe_time_;
  std::chrono::steady_clock::time_point next_probe_steady_{};
  std::vector<std::function<void(ApiResponse)>> waiting_;  // POST /v1/probe callers

  struct FileOutput {
    std::string path;  // the file last written or tried
    std::optional<std::chrono::system_clock::time_point> written;
    std::string error;  // of the last try; "" when it was written
    std::uint64_t failures = 0;
  };
  FileOutput textfile_out_;
  FileOutput inventory_out_;
  [[nodiscard]] std::optional<TargetVerdict> host_verdict() const;

  std::shared_ptr<CallerWatchService> callers_;  // null: watch-callers = no
  std::string callers_key_;  // the settings the running watch was started with
  CallerEvents caller_events_;
  boost::asio::steady_timer callers_timer_;
  std::optional<std::chrono::steady_clock::time_point> last_callers_summary_;
  CallerWatchService::State callers_state_seen_ = CallerWatchService::State::starting;
  // HttpTokens from passive evidence (callers.hpp, choose_v1): the agent's own last
  // measurement, the evidence a skipped tokenless GET rested on, and the contradicting
  // evidence already acted on.
  bool probe_v1_ = false;  // the running cycle sends tokenless GETs
  std::optional<std::chrono::system_clock::time_point> v1_measured_;
  std::uint64_t v1_skipped_ = 0;
  std::optional<TokenlessEvidence> v1_skipped_for_;
  std::optional<std::chrono::system_clock::time_point> contradiction_acted_on_;
  [[nodiscard]] V1Inputs v1_inputs(bool scheduled) const;
};

}  // namespace imds::agent
