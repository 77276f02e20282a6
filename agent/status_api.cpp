// The status API: the socket's routes (Agent::handle), the status document of GET /v1/status
// and the metrics text of GET /metrics (rendered by metrics.cpp). The loop is in agent.cpp.
#include "status_api.hpp"
#include "systemd.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "agent.hpp"
#include "config.h"
#include "diagnose.hpp"
#include "duration.hpp"
#include "fleet.hpp"
#include "inference.hpp"
#include "words.hpp"

namespace imds::agent {
namespace {

constexpr std::size_t kMaxWaiting = 64;

std::string rfc3339(std::optional<std::chrono::system_clock::time_point> t) {
  return t ? rfc3339_utc(*t) : std::string();
}

nlohmann::json null_or(const std::string& s) {
  return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s);
}

std::string tristate_json(Tristate t) {
  return t == Tristate::yes ? "yes" : t == Tristate::no ? "no" : "unknown";
}

// Keeps the first `max` entries of j[key] and says how many went in `<key>_omitted` (0 when
// none did, so that readers need not test for the field).
void cap_list(nlohmann::json& j, const char* key, std::size_t max) {
  if (!j.is_object()) return;
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) return;
  std::size_t omitted = 0;
  if (it->size() > max) {
    omitted = it->size() - max;
    it->erase(it->begin() + static_cast<std::ptrdiff_t>(max), it->end());
  }
  j[std::string(key) + "_omitted"] = omitted;
}

}  // namespace

void cap_namespace_lists(nlohmann::json& doc, std::size_t max) {
  cap_list(doc, "targets", max);
  if (auto inf = doc.find("inference"); inf != doc.end()) cap_list(*inf, "targets", max);
  if (auto f = doc.find("findings"); f != doc.end() && f->is_array()) {
    for (auto& finding : *f) cap_list(finding, "subjects", max);
  }
}

ApiResponse json_response(unsigned status, const nlohmann::json& j) {
  ApiResponse r;
  r.status = status;
  // Names of namespaces come from the file system and need not be UTF-8: replace, never throw.
  r.body = j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  return r;
}

ApiResponse error_response(unsigned status, std::string message) {
  return json_response(status, {{"error", std::move(message)}});
}

void Agent::handle(const ApiRequest& req, std::function<void(ApiResponse)> respond) {
  std::string_view path = req.target;
  if (auto q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);
  auto allow = [&](std::string_view methods) {
    ApiResponse r = error_response(405, "method not allowed");
    r.headers.emplace_back("Allow", std::string(methods));
    return r;
  };
  if (path == "/v1/status") {
    if (req.method != "GET") return respond(allow("GET"));
    return respond(json_response(200, status_json()));
  }
  if (path == "/metrics") {
    if (req.method != "GET") return respond(allow("GET"));
    ApiResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics_text();
    return respond(std::move(r));
  }
  if (path == "/v1/callers") {
    if (req.method != "GET") return respond(allow("GET"));
    if (!callers_) {
      return respond(error_response(
          409, "the passive caller watch is off (watch-callers = no, or not available)"));
    }
    const auto view = callers_->view();
    if (view.state == CallerWatchService::State::failed) {
      return respond(error_response(503, "the passive caller watch failed: " + view.error));
    }
    return respond(json_response(200, callers_document(view)));
  }
  if (path == "/v1/probe") {
    if (req.method != "POST") return respond(allow("POST"));
    if (stopping_) return respond(error_response(503, "imds-agent is stopping"));
    if (probing_) {  // coalesce: everyone asking now gets the probe that is running
      if (waiting_.size() >= kMaxWaiting) return respond(error_response(503, "too many waiting"));
      waiting_.push_back(std::move(respond));
      return;
    }
    const auto now = std::chrono::steady_clock::now();
    if (last_probe_end_ && now < *last_probe_end_ + config_.min_probe_gap) {
      auto wait =
          std::chrono::ceil<std::chrono::seconds>(*last_probe_end_ + config_.min_probe_gap - now);
      ApiResponse r = error_response(429, "probed less than min-probe-gap ago; retry later");
      r.headers.emplace_back("Retry-After", std::to_string(std::max<long long>(1, wait.count())));
      return respond(std::move(r));
    }
    waiting_.push_back(std::move(respond));
    start_probe("requested over the API");
    return;
  }
  respond(error_response(404, "no such resource; try /v1/status, /v1/callers, /metrics or POST /v1/probe"));
}

nlohmann::json Agent::status_json() const {
  nlohmann::json j = last_ ? last_json_ : nlohmann::json::object();
  // At most kMaxListedNamespaces, those without IMDSv2 (what needs attention) first; all of
  // them are in /metrics and the journal.
  nlohmann::json containers = nlohmann::json::array();
  std::vector<const ContainerState*> listed;
  for (const auto& [key, c] : snapshot_.containers) {
    if (c.imdsv2 != Tristate::yes) listed.push_back(&c);
  }
  for (const auto& [key, c] : snapshot_.containers) {
    if (c.imdsv2 == Tristate::yes) listed.push_back(&c);
  }
  if (listed.size() > kMaxListedNamespaces) listed.resize(kMaxListedNamespaces);
  for (const ContainerState* cp : listed) {
    const ContainerState& c = *cp;
    containers.push_back(
        {{"name", c.name},
         {"netns", c.path},
         {"container_id",
          c.container_id ? nlohmann::json(*c.container_id) : nlohmann::json(nullptr)},
         {"container_name",
          c.container_name ? nlohmann::json(*c.container_name) : nlohmann::json(nullptr)},
         {"imdsv2", tristate_json(c.imdsv2)},
         {"distance", c.distance ? nlohmann::json(*c.distance) : nlohmann::json(nullptr)},
         {"verdict", c.verdict},
         {"families",
          {{"ipv4", {{"imdsv2", tristate_json(c.imdsv2)}, {"verdict", c.verdict}}},
           {"ipv6", {{"imdsv2", tristate_json(c.imdsv2_ipv6)}, {"verdict", c.verdict_ipv6}}}}}});
  }
  nlohmann::json violations = nlohmann::json::array();
  for (const auto& v : snapshot_.violations) {
    violations.push_back(
        {{"option", option_name(v.option)}, {"expected", v.expected}, {"actual", v.actual}});
  }
  const auto& o = snapshot_.options;
  nlohmann::json options = {
      {"http_tokens", http_tokens_word(o.http_tokens)},
      {"hop_limit", o.hop_limit ? hop_limit_range(*o.hop_limit) : "unknown"},
      {"http_endpoint", switch_word(o.endpoint_enabled)},
      {"ipv6", switch_word(o.ipv6)},
      {"tags", switch_word(o.tags)},
  };
  j["agent"] = {
      {"version", IMDS_VERSION},
      {"pid", ::getpid()},
      {"ready", ready_},
      {"probing", probing_},
      {"status", status_line(snapshot_)},
      {"reachable",
       snapshot_.reachable ? nlohmann::json(*snapshot_.reachable) : nlohmann::json(nullptr)},
      {"last_probe", null_or(rfc3339(last_probe_time_))},
      {"next_probe", null_or(rfc3339(next_probe_time_))},
      {"cycles", stats_.cycles},
      {"errors_total", stats_.errors},
      {"consecutive_errors", stats_.consecutive_errors},
      {"last_error", null_or(stats_.last_error)},
      {"backoff_seconds", std::chrono::duration<double>(schedule_.backoff()).count()},
      {"interval_seconds", std::chrono::duration<double>(config_.interval).count()},
      {"v1_interval", config_.v1_interval ? format_duration(*config_.v1_interval) : "never"},
      {"expect", config_.expect},
      {"options", options},
      {"policy_violations", violations},
      {"containers", containers},
      {"containers_total", snapshot_.containers.size()},
      {"containers_omitted", snapshot_.containers.size() - listed.size()},
      {"journal_dropped_total", reporter_.dropped()},
      {"log_lines_dropped_total", log_lines_dropped()},
  };
  if (callers_) {
    const auto view = callers_->view();
    j["agent"]["callers_watch"] = {
        {"state", to_string(view.state)},
        {"error", null_or(view.error)},
        {"callers", view.report ? view.report->book.callers().size() : 0},
        {"exchanges", view.report ? view.report->counters.exchanges : 0},
    };
  } else {
    j["agent"]["callers_watch"] = {{"state", "off"}};
  }
  // Changes seen but not reported (confirm.hpp): never in the journal as facts.
  nlohmann::json suspected = nlohmann::json::array();
  for (const Suspicion& s : gate_.suspicions()) {
    suspected.push_back({{"subject", s.subject},
                         {"what", s.label},
                         {"reported", s.reported},
                         {"observed", s.observed},
                         {"observations", s.observations},
                         {"since", rfc3339(s.since)},
                         {"waiting_for", s.waiting_for}});
  }
  j["agent"]["suspected"] = std::move(suspected);
  j["agent"]["changes"] = {{"confirm", config_.confirm},
                           {"min_event_gap_ms", config_.min_event_gap.count()},
                           {"confirm_probes_total", stats_.confirm_probes},
                           {"unconfirmed_total", gate_.transient_total()},
                           {"flapping_total", gate_.flapping_total()}};
  const auto output_json = [](const std::string& dir, const FileOutput& out) -> nlohmann::json {
    if (dir.empty()) return nullptr;
    return {{"dir", dir},
            {"path", null_or(out.path)},
            {"last_written", null_or(rfc3339(out.written))},
            {"error", null_or(out.error)},
            {"failures_total", out.failures}};
  };
  j["agent"]["outputs"] = {
      {"textfile", output_json(config_.textfile_dir, textfile_out_)},
      {"ssm_inventory", output_json(config_.ssm_inventory_dir, inventory_out_)},
  };
  // HttpTokens: when the agent last measured it itself, and the passive evidence (callers.hpp).
  const auto evidence_json = [](const std::optional<TokenlessEvidence>& e) -> nlohmann::json {
    if (!e) return nullptr;
    return {{"status", e->status}, {"caller", e->where}, {"seen", rfc3339(e->seen)}};
  };
  const V1Inputs in = v1_inputs(false);
  j["agent"]["http_tokens_evidence"] = {
      {"measured", null_or(rfc3339(v1_measured_))},
      {"passive", evidence_json(in.evidence)},
      {"passive_contradicts", evidence_contradicts(in)},
      {"v1_gets_skipped_total", v1_skipped_},
      {"last_skip_rested_on", evidence_json(v1_skipped_for_)},
  };
  return j;
}

std::optional<TargetVerdict> Agent::host_verdict() const {
  if (!last_) return std::nullopt;
  for (std::size_t i = 0; i < last_->targets.size() && i < last_->inference.targets.size(); ++i) {
    if (last_->targets[i].target.is_host) return last_->inference.targets[i];
  }
  return std::nullopt;
}

std::string Agent::metrics_text() const {
  HostImdsv2 host;
  if (const auto v = host_verdict()) {
    const auto known = [](Tristate t) -> std::optional<bool> {
      if (t == Tristate::unknown) return std::nullopt;
      return t == Tristate::yes;
    };
    host.ipv4 = known(v->v4.imdsv2);
    if (v->v6.probed && last_->inference.ipv6 == Tristate::yes) host.ipv6 = known(v->v6.imdsv2);
  }
  Exposition out;
  if (engine_.stats) {
    const EngineStats engine = engine_.stats();
    add_posture_metrics(out, snapshot_, host, stats_, IMDS_VERSION, &engine);
  } else {
    add_posture_metrics(out, snapshot_, host, stats_, IMDS_VERSION);
  }
  out.counter("imds_agent_journal_dropped_total",
              "Journal events dropped because the journal did not accept them as fast as they "
              "came.",
              static_cast<double>(reporter_.dropped()));
  out.counter("imds_agent_log_lines_dropped_total",
              "Log lines dropped because their reader (the journal or standard error) did not "
              "keep up.",
              static_cast<double>(log_lines_dropped()));
  if (callers_) add_callers_metrics(out, callers_->view(), caller_events_.suppressed());
  out.counter("imds_agent_confirm_probes_total",
              "Re-probes of the host and suspected containers that confirm or dismiss a change "
              "before it is reported.",
              static_cast<double>(stats_.confirm_probes));
  out.counter("imds_agent_changes_unconfirmed_total",
              "Suspected changes that did not hold through their re-probes: never reported.",
              static_cast<double>(gate_.transient_total()));
  out.counter("imds_agent_flapping_total", "Subjects found flapping (one flapping event each).",
              static_cast<double>(gate_.flapping_total()));
  out.gauge("imds_agent_changes_suspected", "Changes seen but not (yet) reported.",
            static_cast<double>(gate_.suspicions().size()));
  out.counter("imds_agent_v1_gets_skipped_total",
              "Cycles whose tokenless IMDSv1 GETs were not sent because a workload's own, "
              "answered since the agent's last, said the same.",
              static_cast<double>(v1_skipped_));
  return out.text();
}

void Agent::write_fleet_files() {
  const auto now = std::chrono::system_clock::now();
  const auto write = [now](FileOutput& out, std::string_view what, const std::string& dir,
                           std::string_view name, Result<std::string> content) {
    out.path = dir.empty() ? std::string() : dir + "/" + std::string(name);
    Status st = content ? write_file_atomically(dir, name, *content) : Status(content.error());
    if (st) {
      if (!out.error.empty()) spdlog::info("{}: {} written again", what, out.path);
      out.error.clear();
      out.written = now;
      return;
    }
    ++out.failures;
    if (out.error != st.error().message) {
      // The usual cause under the shipped unit: ProtectSystem=strict and the imds-agent user.
      spdlog::warn("{}: cannot write {}: {} (the unit needs ReadWritePaths= and the directory "
                   "write access for its user: FLEET OUTPUTS in imds-agent.conf(5))",
                   what, out.path.empty() ? "the file" : out.path, st.error().message);
    }
    out.error = st.error().message;
  };
  // A reload that moved or turned off the textfile: the old file goes (see stop()).
  const std::string textfile_path =
      config_.textfile_dir.empty() ? "" : config_.textfile_dir + "/" + std::string(kTextfileName);
  if (textfile_out_.written && textfile_out_.path != textfile_path) {
    ::unlink(textfile_out_.path.c_str());
    textfile_out_ = {};
  }
  if (!config_.textfile_dir.empty()) {
    write(textfile_out_, "textfile-dir", config_.textfile_dir, kTextfileName, metrics_text());
  }
  if (!config_.ssm_inventory_dir.empty()) {
    HostPosture host{host_verdict(), std::nullopt};
    if (last_ && last_->inference.instance.instance_id &&
        is_instance_id(*last_->inference.instance.instance_id)) {
      host.instance_id = last_->inference.instance.instance_id;
    }
    std::string dir = config_.ssm_inventory_dir;
    Result<std::string> content = Error{"no instance id known yet (ssm-inventory-dir = auto)"};
    if (dir == kSsmInventoryAuto) dir = host.instance_id ? ssm_inventory_auto_dir(*host.instance_id) : "";
    if (!dir.empty()) {
      const nlohmann::json doc = ssm_inventory(snapshot_, host, IMDS_VERSION, now);
      // A document our own checks reject is a bug of ours; it is reported, never written.
      if (Status valid = check_ssm_inventory(doc); valid) {
        content = doc.dump(2) + "\n";
      } else {
        content = Error{"inventory rejected by its own check: " + valid.error().message};
      }
    }
    write(inventory_out_, "ssm-inventory-dir", dir, kInventoryFileName, std::move(content));
  }
}

}  // namespace imds::agent
