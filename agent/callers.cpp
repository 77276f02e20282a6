// The agent's passive caller watch: its thread, its journal events and its documents; see
// callers.hpp.
#include "callers.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>
#include <set>

#include "bounded_stop.hpp"
#include "duration.hpp"
#include "endpoint.hpp"
#include "metrics.hpp"

namespace imds::agent {

namespace {

constexpr auto kStep = std::chrono::milliseconds(200);
constexpr auto kPublish = std::chrono::seconds(1);

std::string sdk_text(const CallerKey& key) {
  if (key.sdk_product.empty()) return "no User-Agent";
  return key.sdk_version.empty() ? key.sdk_product : key.sdk_product + " " + key.sdk_version;
}

}  // namespace

WatchOptions watch_options_of(const AgentConfig& config) {
  WatchOptions options;
  options.discovery = discovery_config_of(config);
  options.processes = config.caller_processes;
  // The configuration was validated when it was read: these parse.
  if (auto v4 = parse_endpoint(config.endpoint, Family::v4)) options.imds.push_back(v4->address);
  if (config.ipv6) {
    if (auto v6 = parse_endpoint(config.endpoint_v6, Family::v6)) {
      options.imds.push_back(v6->address);
    }
  }
  options.ignore_product = "imds-agent";
  // A daemon keeps less than a one-off watch: IMDS connections at once are few, and
  // connections of namespaces that vanished mid-request are never closed, only evicted.
  options.limits.max_flows = kAgentMaxFlows;
  return options;
}

std::string_view to_string(CallerWatchService::State state) {
  switch (state) {
    case CallerWatchService::State::starting: return "starting";
    case CallerWatchService::State::running: return "running";
    case CallerWatchService::State::failed: return "failed";
    case CallerWatchService::State::stopped: return "stopped";
  }
  return "stopped";
}

CallerWatchService::CallerWatchService() : shared_(std::make_shared<Shared>()) {}

CallerWatchService::~CallerWatchService() { stop(std::chrono::milliseconds(0)); }

void CallerWatchService::start(WatchOpener open, WatchOptions options) {
  std::lock_guard lock(shared_->mutex);
  if (shared_->stopping || shared_->thread.joinable()) return;
  // The thread owns what it touches (the shared state and the watch): when stop() gives up
  // on it, it is detached and ends by itself at its next step.
  shared_->thread = std::thread([shared = shared_, open = std::move(open),
                                 options = std::move(options)] {
    auto finish = [&](CallerWatchService::State state, std::string error) {
      std::lock_guard lock(shared->mutex);
      shared->view.state = state;
      if (!error.empty()) shared->view.error = std::move(error);
      shared->exited = true;
      shared->cv.notify_all();
    };
    Result<std::unique_ptr<CallerWatcher>> opened = Error{"no watch"};
    try {
      opened = open(options);
    } catch (const std::exception& e) {
      opened = Error{e.what()};
    }
    if (!opened) return finish(State::failed, opened.error().message);
    std::unique_ptr<CallerWatcher> watcher = std::move(opened).value();
    {
      std::lock_guard lock(shared->mutex);
      shared->view.state = State::running;
      shared->view.since = std::chrono::system_clock::now();
      shared->view.report = std::make_shared<const WatchReport>(watcher->report());
    }
    auto published = std::chrono::steady_clock::now();
    auto refreshed = published;
    try {
      for (;;) {
        {
          std::lock_guard lock(shared->mutex);
          if (shared->stopping) break;
        }
        watcher->step(kStep);
        const auto now = std::chrono::steady_clock::now();
        if (now - refreshed >= kRefreshPlaces) {
          watcher->refresh_places();
          watcher->forget_before(std::chrono::system_clock::now() - kForgetAfter);
          refreshed = now;
        }
        if (now - published >= kPublish) {
          auto report = std::make_shared<const WatchReport>(watcher->report());
          std::lock_guard lock(shared->mutex);
          shared->view.report = std::move(report);
          published = now;
        }
      }
    } catch (const std::exception& e) {
      return finish(State::failed, std::string("the watch stopped: ") + e.what());
    }
    finish(State::stopped, "");
  });
}

bool CallerWatchService::stop(std::chrono::milliseconds bound) {
  std::thread thread;
  {
    std::lock_guard lock(shared_->mutex);
    shared_->stopping = true;
    thread = std::move(shared_->thread);
    if (!thread.joinable()) shared_->exited = true;  // never started: nothing to wait for
  }
  return stop_within(thread, *shared_, bound);
}

CallerWatchService::View CallerWatchService::view() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->view;
}

bool CallerEvents::take_token(std::chrono::steady_clock::time_point now) {
  if (last_refill_) {
    const double minutes = std::chrono::duration<double>(now - *last_refill_) / kRefill;
    tokens_ = std::min<double>(kBurst, tokens_ + minutes);
  }
  last_refill_ = now;
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

std::vector<Event> CallerEvents::announce(const WatchReport& report,
                                          std::chrono::steady_clock::time_point now) {
  std::vector<Event> out;
  for (const auto& [key, s] : report.book.callers()) {
    const auto once = [&](char kind) {
      if (announced_.size() >= kMaxAnnounced) return false;
      const auto [it, inserted] = announced_.emplace(key.where, key.sdk_product, kind);
      if (!inserted) return false;
      if (take_token(now)) return true;
      ++suppressed_since_summary_;
      ++suppressed_total_;
      return false;
    };
    const auto common = [&](Event& e) {
      e.fields.push_back({"IMDS_CALLER", key.where});
      e.fields.push_back({"IMDS_SDK", sdk_text(key)});
      if (!key.sdk_product.empty()) e.fields.push_back({"IMDS_SDK_PRODUCT", key.sdk_product});
      if (s.container_id) e.fields.push_back({"IMDS_CONTAINER_ID", *s.container_id});
      if (s.container_name) e.fields.push_back({"IMDS_CONTAINER_NAME", *s.container_name});
      if (s.netns_inode != 0) e.fields.push_back({"IMDS_NETNS_INODE", std::to_string(s.netns_inode)});
    };
    if (s.imdsv1 > 0 && once('1')) {
      Event e{EventKind::imdsv1_caller, spec_of(EventKind::imdsv1_caller).priority, {}};
      common(e);
      e.fields.push_back({"IMDS_CALLS", std::to_string(s.imdsv1)});
      std::string answers;
      if (s.imdsv1_ok > 0) answers = "200 (tokens optional)";
      if (s.imdsv1_unauthorized > 0) {
        answers += (answers.empty() ? "" : " and ") + std::string("401 (tokens required)");
        e.priority = Priority::warning;  // it is broken already
      }
      e.fields.push_back({"IMDS_ANSWERS", answers.empty() ? "otherwise" : answers});
      out.push_back(std::move(e));
    }
    if (s.token_puts_unanswered > 0 && once('p')) {
      Event e{EventKind::token_puts_lost, spec_of(EventKind::token_puts_lost).priority, {}};
      common(e);
      e.fields.push_back({"IMDS_PUTS_LOST", std::to_string(s.token_puts_unanswered)});
      if (s.dropped_put_ttl) {
        e.fields.push_back({"IMDS_PUT_TTL", std::to_string(*s.dropped_put_ttl)});
        e.fields.push_back(
            {"IMDS_CAUSE", "the answers reach the host with TTL " +
                               std::to_string(*s.dropped_put_ttl) +
                               " and go no further: the hop limit is too low for it"});
      } else {
        e.fields.push_back({"IMDS_CAUSE", "no answer was seen"});
      }
      e.fields.push_back({"IMDS_FALLBACK_CALLS", std::to_string(s.imdsv1_fallback)});
      out.push_back(std::move(e));
    }
  }
  return out;
}

std::optional<Event> CallerEvents::summary(const WatchReport& report,
                                           std::chrono::milliseconds period) {
  Totals delta;
  std::uint64_t v1_callers = 0;
  std::map<std::tuple<std::string, std::string, std::string>, Totals> now;
  for (const auto& [key, s] : report.book.callers()) {
    const Totals t{s.imdsv1, s.imdsv1_fallback, s.token_puts_unanswered};
    const auto id = std::tuple{key.where, key.sdk_product, key.sdk_version};
    const auto before = summarised_.find(id);
    const Totals b = before == summarised_.end() ? Totals{} : before->second;
    // Counts only grow while a caller is kept; a forgotten and re-seen one starts over.
    const auto grown = [](std::uint64_t n, std::uint64_t was) { return n >= was ? n - was : n; };
    const std::uint64_t v1 = grown(t.imdsv1, b.imdsv1);
    delta.imdsv1 += v1;
    delta.fallback += grown(t.fallback, b.fallback);
    delta.puts_lost += grown(t.puts_lost, b.puts_lost);
    if (v1 > 0) ++v1_callers;
    now.emplace(id, t);
  }
  summarised_ = std::move(now);
  const std::uint64_t suppressed = suppressed_since_summary_;
  suppressed_since_summary_ = 0;
  if (delta.imdsv1 == 0 && delta.fallback == 0 && delta.puts_lost == 0) return std::nullopt;
  Event e{EventKind::callers_summary, spec_of(EventKind::callers_summary).priority, {}};
  e.fields.push_back({"IMDS_PERIOD", format_duration(period)});
  e.fields.push_back({"IMDS_V1_CALLS", std::to_string(delta.imdsv1)});
  e.fields.push_back({"IMDS_V1_CALLERS", std::to_string(v1_callers)});
  e.fields.push_back({"IMDS_FALLBACK_CALLS", std::to_string(delta.fallback)});
  e.fields.push_back({"IMDS_PUTS_LOST", std::to_string(delta.puts_lost)});
  e.fields.push_back({"IMDS_EVENTS_SUPPRESSED", std::to_string(suppressed)});
  return e;
}

namespace {

bool agrees(const TokenlessEvidence& e, HttpTokens known) {
  return (e.status == 200 && known == HttpTokens::optional) ||
         (e.status == 401 && known == HttpTokens::required);
}

bool newer_than_measured(const V1Inputs& in) {
  return in.evidence && in.measured && in.evidence->seen > *in.measured;
}

}  // namespace

V1Choice choose_v1(const V1Inputs& in) {
  if (!in.scheduled) return V1Choice::not_scheduled;
  if (newer_than_measured(in) && agrees(*in.evidence, in.known) && in.v1_interval &&
      in.now - in.evidence->seen <= *in.v1_interval) {
    return V1Choice::skip_evidence_agrees;
  }
  return V1Choice::send;
}

bool evidence_contradicts(const V1Inputs& in) {
  return newer_than_measured(in) && in.known != HttpTokens::unknown &&
         !agrees(*in.evidence, in.known);
}

nlohmann::json callers_document(const CallerWatchService::View& view) {
  nlohmann::json doc;
  if (view.report) {
    doc = callers_to_json(*view.report, kMaxListedCallers);
  } else {
    doc = {{"watched_ms", 0},       {"namespaces_mapped", 0}, {"callers", nlohmann::json::array()},
           {"callers_omitted", 0}, {"exchanges", 0}};
  }
  doc["watch"] = {{"state", to_string(view.state)},
                  {"error", view.error.empty() ? nlohmann::json(nullptr) : nlohmann::json(view.error)}};
  if (view.since) {
    const std::time_t t = std::chrono::system_clock::to_time_t(*view.since);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    doc["watching_since"] = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", tm.tm_year + 1900,
                                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  }
  doc["forget_after_s"] =
      std::chrono::duration_cast<std::chrono::seconds>(CallerWatchService::kForgetAfter).count();
  return doc;
}

void add_callers_metrics(Exposition& out, const CallerWatchService::View& view,
                         std::uint64_t suppressed) {
  out.gauge("imds_callers_watch_up",
            "Whether the passive watch of IMDS callers runs (1) or not (0).",
            view.state == CallerWatchService::State::running ? 1 : 0);
  out.counter("imds_callers_events_suppressed_total",
              "Caller events not sent to the journal by the rate limit (counted in the summary).",
              static_cast<double>(suppressed));
  if (!view.report) return;

  // Bounded labels: the first kMaxCallerSeries callers by name (those that need attention
  // first), the rest as "other"; SDK products outside the known set as "other".
  struct Counts {
    std::uint64_t imdsv1 = 0, fallback = 0, imdsv2 = 0, puts = 0, other = 0, lost = 0, dropped = 0;
  };
  std::map<std::pair<std::string, std::string>, Counts> series;
  std::set<std::string> named;
  for (const auto& [key, s] : callers_in_order(*view.report)) {
    if (named.size() < kMaxCallerSeries) named.insert(key->where);
    const std::string caller = named.contains(key->where) ? key->where : "other";
    const std::string sdk = key->sdk_product.empty()              ? "none"
                            : known_sdk_product(key->sdk_product) ? key->sdk_product
                                                                  : "other";
    Counts& c = series[{caller, sdk}];
    c.imdsv1 += s->imdsv1;
    c.fallback += s->imdsv1_fallback;
    c.imdsv2 += s->imdsv2;
    c.puts += s->token_puts;
    c.other += s->other;
    c.lost += s->token_puts_unanswered;
    c.dropped += s->token_puts_dropped_here;
  }
  for (const auto& [labels, c] : series) {
    const auto requests = [&, &labels = labels](const char* kind, std::uint64_t n) {
      out.counter("imds_observed_requests_total",
                  "IMDS requests the passive watch saw, by caller (namespace or container), SDK "
                  "product and kind.",
                  static_cast<double>(n),
                  {{"caller", labels.first}, {"sdk", labels.second}, {"kind", kind}});
    };
    requests("imdsv1", c.imdsv1);
    requests("imdsv1_fallback", c.fallback);
    requests("imdsv2", c.imdsv2);
    requests("token_put", c.puts);
    requests("other", c.other);
    out.counter("imds_observed_token_puts_unanswered_total",
                "Token PUTs the passive watch saw go unanswered, by caller and SDK product.",
                static_cast<double>(c.lost), {{"caller", labels.first}, {"sdk", labels.second}});
    out.counter("imds_observed_token_puts_dropped_here_total",
                "Unanswered token PUTs whose answer reached the host and went no further (hop "
                "limit), by caller and SDK product.",
                static_cast<double>(c.dropped),
                {{"caller", labels.first}, {"sdk", labels.second}});
  }
  const auto& k = view.report->counters;
  out.counter("imds_observed_packets_total", "Packets the passive watch read.",
              static_cast<double>(k.packets));
  out.counter("imds_observed_packets_dropped_total",
              "Packets the kernel dropped before the watch read them (socket buffer full).",
              static_cast<double>(view.report->kernel_drops));
}

}  // namespace imds::agent
