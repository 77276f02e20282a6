// The agent's configuration: /etc/imds-agent/imds-agent.conf, drop-ins in conf.d/ (lexical
// order), then command-line flags; every error names the file and line (or the flag).
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model.hpp"
#include "result.hpp"
#include "targets.hpp"

namespace imds::agent {

using Millis = std::chrono::milliseconds;

struct AgentConfig {
  Millis interval{std::chrono::seconds(60)};
  double jitter = 0.1;  // fraction of the interval, 0..0.5
  // How often tokenless (IMDSv1) GETs are sent; nullopt = never. They count in
  // CloudWatch's MetadataNoToken, which teams watch to find the last IMDSv1 callers.
  std::optional<Millis> v1_interval{std::chrono::hours(6)};
  std::vector<std::string> expect;  // as given, for display
  Expectations expectations;
  std::vector<std::string> netns_dirs{"/run/netns", "/run/docker/netns"};
  bool netns_dirs_are_defaults = true;
  bool proc_scan = true;
  std::string docker_root = "/var/lib/docker";  // container names; "" for none
  std::string socket = "/run/imds-agent/imds-agent.sock";
  // Fleet outputs (fleet.hpp), written after each cycle; "" = off.
  std::string textfile_dir;       // node_exporter textfile collector: DIR/imds_agent.prom
  std::string ssm_inventory_dir;  // SSM custom inventory: DIR/ImdsPosture.json, or "auto"
  std::string socket_group = "imds-agent";
  std::string endpoint = "http://169.254.169.254";
  std::string endpoint_v6 = "http://[fd00:ec2::254]";
  bool ipv6 = true;
  Millis request_timeout{2000};
  std::size_t max_namespaces = 64;  // container namespaces probed per cycle
  std::string log_level = "info";
  Millis backoff_max{std::chrono::minutes(15)};
  Millis min_probe_gap{std::chrono::seconds(2)};  // between any two probes (POST, inotify)
  Millis debounce{1000};                          // after a namespace appears
  bool packet_ttl = true;
  // The bound on requests to the IMDS, all namespaces and cycles together (request_rate.hpp).
  double request_rate = 20.0;    // per second
  std::size_t request_burst = 20;  // sent at once before the rate paces them
  // The passive watch of who calls the IMDS (agent/callers.hpp); nothing is sent for it.
  bool watch_callers = true;
  bool caller_processes = true;  // the caller watch looks up each connection's process
  std::optional<Millis> callers_summary_interval{std::chrono::hours(1)};  // nullopt = never
  // Changes people can trust (confirm.hpp): re-probes that must agree before a change is
  // reported, the shortest time between two events about one subject, and what flapping is.
  unsigned confirm = 2;
  Millis min_event_gap{std::chrono::minutes(1)};
  unsigned flap_changes = 3;
  Millis flap_window{std::chrono::minutes(15)};

  std::vector<std::string> sources;  // files read, in order
};

// Where to read from, and the command line's own settings (highest precedence).
struct ConfigSources {
  std::string file;            // main file; "" = none
  bool file_required = false;  // --config given: a missing file is an error
  std::string dir;             // drop-in directory; "" = none
  std::vector<std::pair<std::string, std::string>> overrides;  // key, value (flags)
};

// An error that says where: its message starts with the file and line or the flag.
struct ConfigError {
  std::string message;  // "FILE:LINE: unknown key 'intervall'" / "--interval: ..."
};

// Reads the files and applies the overrides on top of the defaults. Never throws for bad
// input: the first error is returned (a daemon must not half-apply a bad reload).
Result<AgentConfig, ConfigError> load_config(const ConfigSources& sources);

// Applies one KEY=VALUE to `config`; the error has no location.
Status apply_setting(AgentConfig& config, const std::string& key, const std::string& value);

// What discovery reads, from the configuration: one rule for the probe cycle and the
// caller watch (which namespace directories, the /proc scan, Docker's data root).
DiscoveryConfig discovery_config_of(const AgentConfig& config);

// Every key a file may hold, with its one-line description (for --help and docs tests).
struct KeyDoc {
  const char* key;
  const char* value;
  const char* description;
};
const std::vector<KeyDoc>& config_keys();

}  // namespace imds::agent

namespace imds::agent {

struct CommandLine {
  ConfigSources sources;
  bool check_config = false;
  bool help = false;
  bool version = false;
};

// Parses argv with Boost.Program_options: --config PATH, --config-dir DIR, --check-config,
// --help, --version and every config key as --KEY VALUE.
Result<CommandLine, ConfigError> parse_command_line(int argc, const char* const* argv);
std::string usage_text();

}  // namespace imds::agent
