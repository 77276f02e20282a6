// The agent's passive watch of who calls the IMDS (probe/callers_watch.hpp), and what it makes
// of it: the record served as GET /v1/callers, the journal events for new IMDSv1 callers and
// lost token PUTs (rate-limited), the periodic summary, and the metrics.
//
// The watch runs on a thread of its own, started from the probe worker so that it holds the
// worker's capabilities (CAP_NET_RAW for the packet sockets, CAP_SYS_ADMIN to read each
// container namespace's addresses); the loop, which holds none, only reads what the thread
// publishes once a second.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "callers_watch.hpp"
#include "config.hpp"
#include "events.hpp"
#include "metrics.hpp"
#include "result.hpp"

namespace imds::agent {

// Opens a watch with the calling thread's capabilities (production: CallerWatcher::open).
using WatchOpener = std::function<Result<std::unique_ptr<CallerWatcher>>(const WatchOptions&)>;

// What the watch of this configuration looks at: the agent's endpoints and namespace
// directories; the agent's own requests (User-Agent imds-agent) are left out.
inline constexpr std::size_t kAgentMaxFlows = 1024;
WatchOptions watch_options_of(const AgentConfig& config);

class CallerWatchService {
 public:
  enum class State { starting, running, failed, stopped };
  struct View {
    State state = State::starting;
    std::string error;  // failed: why
    std::optional<std::chrono::system_clock::time_point> since;
    // The latest published (once a second), shared: a view costs a pointer copy, however
    // many callers the report holds and however often the socket asks.
    std::shared_ptr<const WatchReport> report;
  };
  // Callers not seen for this long are forgotten; the namespaces' addresses are read again
  // this often (and when an unknown address calls, at most every 5 s).
  static constexpr auto kForgetAfter = std::chrono::hours(24);
  static constexpr auto kRefreshPlaces = std::chrono::seconds(60);

  CallerWatchService();
  ~CallerWatchService();  // stop(0)
  CallerWatchService(const CallerWatchService&) = delete;
  CallerWatchService& operator=(const CallerWatchService&) = delete;

  // On the thread whose capabilities the watch needs (the probe worker): starts the watch's
  // thread, which opens it with `open`. Does nothing once stop() was called.
  void start(WatchOpener open, WatchOptions options);
  // Stops the thread within `bound` (it wakes every 200 ms); true when it was joined.
  bool stop(std::chrono::milliseconds bound);
  [[nodiscard]] View view() const;

 private:
  struct Shared {
    mutable std::mutex mutex;
    std::condition_variable cv;
    bool stopping = false;
    bool exited = false;
    View view;
    std::thread thread;  // set by start() on the worker, taken by stop() on the loop
  };
  std::shared_ptr<Shared> shared_;
};

std::string_view to_string(CallerWatchService::State state);

// The journal side, on the loop: which callers were already announced, the rate limit, and
// the totals of the last summary. Pure: fed with reports and the time.
class CallerEvents {
 public:
  // At most this many announcements at once, then one per kRefill; a caller held back is not
  // announced later: it is counted in the next summary (and listed by GET /v1/callers).
  static constexpr std::size_t kBurst = 10;
  static constexpr auto kRefill = std::chrono::minutes(1);
  static constexpr std::size_t kMaxAnnounced = 4096;

  // New IMDSv1 callers and callers with lost token PUTs since the last call.
  std::vector<Event> announce(const WatchReport& report, std::chrono::steady_clock::time_point now);
  // The summary since the last one: nothing when no IMDSv1 call and no lost PUT was seen.
  std::optional<Event> summary(const WatchReport& report, std::chrono::milliseconds period);
  [[nodiscard]] std::uint64_t suppressed() const { return suppressed_total_; }

 private:
  struct Totals {
    std::uint64_t imdsv1 = 0, fallback = 0, puts_lost = 0;
  };
  bool take_token(std::chrono::steady_clock::time_point now);

  std::set<std::tuple<std::string, std::string, char>> announced_;  // where, product, kind
  double tokens_ = kBurst;
  std::optional<std::chrono::steady_clock::time_point> last_refill_;
  std::uint64_t suppressed_since_summary_ = 0;
  std::uint64_t suppressed_total_ = 0;
  std::map<std::tuple<std::string, std::string, std::string>, Totals> summarised_;
};

// Passive evidence of HttpTokens (a workload's tokenless request answered 200 or 401, seen
// arriving from the IMDS's side) never decides the verdict by itself. It saves the agent's
// own tokenless GET (counted in MetadataNoToken) when it agrees with what the agent last
// measured itself and is newer than that measurement and within v1-interval; it brings the
// agent's own measurement forward when it contradicts it.
enum class V1Choice : std::uint8_t { not_scheduled, send, skip_evidence_agrees };
struct V1Inputs {
  bool scheduled = false;  // Schedule::take_v1 said this cycle sends tokenless GETs
  std::optional<TokenlessEvidence> evidence;
  HttpTokens known = HttpTokens::unknown;  // what the agent last learned itself
  std::optional<std::chrono::system_clock::time_point> measured;  // when (its own GET)
  std::optional<Millis> v1_interval;
  std::chrono::system_clock::time_point now{};
};
V1Choice choose_v1(const V1Inputs& in);
// The evidence says otherwise than the agent's own last measurement, and is newer.
bool evidence_contradicts(const V1Inputs& in);

// GET /v1/callers: the record (callers_to_json) with the watch's state; at most
// kMaxListedCallers callers, those that break under HttpTokens=required first.
inline constexpr std::size_t kMaxListedCallers = 256;
nlohmann::json callers_document(const CallerWatchService::View& view);

// The callers' metrics, with bounded labels: the caller's name
// for at most kMaxCallerSeries callers (the rest under caller="other"), and the SDK product
// when it is a known one (else "other").
inline constexpr std::size_t kMaxCallerSeries = 64;
void add_callers_metrics(Exposition& out, const CallerWatchService::View& view,
                         std::uint64_t suppressed);

}  // namespace imds::agent
