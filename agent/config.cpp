// Configuration loading: Boost.Program_options reads the INI syntax; a pre-pass over each
// file records where every key is so that errors can name the file and line.
#include "config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <string_view>

#include "collect.hpp"
#include "config.h"
#include "duration.hpp"
#include "endpoint.hpp"
#include "expect.hpp"
#include "netns.hpp"

namespace po = boost::program_options;

namespace imds::agent {
namespace {

constexpr std::size_t kMaxConfigBytes = 1 << 20;
constexpr std::size_t kMaxDropIns = 256;

std::string trim(std::string_view s) {
  auto b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return {};
  auto e = s.find_last_not_of(" \t\r");
  return std::string(s.substr(b, e - b + 1));
}

std::optional<bool> parse_bool(std::string_view v) {
  if (v == "yes" || v == "true" || v == "on" || v == "1") return true;
  if (v == "no" || v == "false" || v == "off" || v == "0") return false;
  return std::nullopt;
}

template <typename T>
std::optional<T> parse_number(std::string_view v) {
  T out{};
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || p != v.data() + v.size()) return std::nullopt;
  return out;
}

using Setter = Status (*)(AgentConfig&, const std::string&);

struct KeyEntry {
  KeyDoc doc;
  Setter set;
};

Status set_duration(Millis& out, const std::string& v, Millis min, Millis max) {
  const auto d = parse_duration(v);
  if (!d) return d.error();
  if (*d < min || *d > max) return Error{duration_out_of_range(v, min, max)};
  out = *d;
  return {};
}

// A directory the agent writes a file into: "" (off) or an absolute path of sane length.
Status output_dir(const std::string& v) {
  if (v.empty()) return {};
  if (!v.starts_with("/")) return Error{"'" + v + "' is not an absolute path"};
  if (v.size() > 1024) return Error{"directory path longer than 1024 bytes"};
  return {};
}

const std::vector<KeyEntry>& key_table() {
  using std::chrono::hours;
  using std::chrono::milliseconds;
  using std::chrono::minutes;
  using std::chrono::seconds;
  static const std::vector<KeyEntry> table = {
      {{"interval", "DURATION", "time between probe cycles (default 60s)"},
       [](AgentConfig& c, const std::string& v) {
         return set_duration(c.interval, v, seconds(1), hours(24));
       }},
      {{"jitter", "FRACTION", "random spread of each interval, 0..0.5 (default 0.1)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         auto d = parse_number<double>(v);
         if (!d || !(*d >= 0.0 && *d <= 0.5)) return Error{"'" + v + "' is not a number in 0..0.5"};
         c.jitter = *d;
         return {};
       }},
      {{"v1-interval", "DURATION|never",
        "how often tokenless IMDSv1 GETs are sent (default 6h; they count in MetadataNoToken)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         if (v == "never") {
           c.v1_interval.reset();
           return {};
         }
         Millis d{};
         if (auto e = set_duration(d, v, Millis(0), hours(24 * 365)); !e) return e;
         c.v1_interval = d;
         return {};
       }},
      {{"expect", "KEY=VALUE",
        "expected policy, repeatable (http-tokens=required, hop-limit=>=2, imds-support=v2.0, "
        "...); empty clears"},
       [](AgentConfig& c, const std::string& v) -> Status {
         if (v.empty()) {
           c.expect.clear();
           c.expectations = {};
           return {};
         }
         if (auto e = parse_expectation(v, c.expectations); !e) return e;
         c.expect.push_back(v);
         return {};
       }},
      {{"netns-dir", "DIR",
        "directory of named network namespaces to watch, repeatable (default /run/netns and "
        "/run/docker/netns); empty clears"},
       [](AgentConfig& c, const std::string& v) -> Status {
         // The first netns-dir given replaces the defaults; later ones add to it.
         if (c.netns_dirs_are_defaults) c.netns_dirs.clear();
         c.netns_dirs_are_defaults = false;
         if (v.empty()) {
           c.netns_dirs.clear();
           return {};
         }
         if (!v.starts_with("/")) return Error{"'" + v + "' is not an absolute path"};
         if (std::find(c.netns_dirs.begin(), c.netns_dirs.end(), v) == c.netns_dirs.end()) {
           c.netns_dirs.push_back(v);
         }
         return {};
       }},
      {{"docker-root", "DIR",
        "Docker's data root, whose containers/ID/config.v2.json give container names (default "
        "/var/lib/docker; empty: no names)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         if (!v.empty() && !v.starts_with("/")) return Error{"'" + v + "' is not an absolute path"};
         c.docker_root = v;
         return {};
       }},
      {{"proc-scan", "BOOL", "find namespaces of every process in /proc each cycle (default yes)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         auto b = parse_bool(v);
         if (!b) return Error{"'" + v + "' is not a boolean (yes/no)"};
         c.proc_scan = *b;
         return {};
       }},
      {{"socket", "PATH", "Unix socket of the HTTP API (default /run/imds-agent/imds-agent.sock)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         if (!v.starts_with("/")) return Error{"'" + v + "' is not an absolute path"};
         if (v.size() >= 108) return Error{"socket path longer than 107 bytes"};
         c.socket = v;
         return {};
       }},
      {{"socket-group", "GROUP", "group owning the socket, mode 0660 (default imds-agent)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         if (v.empty() || v.size() > 32) return Error{"group name must have 1..32 characters"};
         c.socket_group = v;
         return {};
       }},
      {{"textfile-dir", "DIR",
        "write the metrics to DIR/imds_agent.prom after each cycle, atomically, for "
        "node_exporter's textfile collector (e.g. /var/lib/prometheus/node-exporter; default "
        "empty: off)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         if (auto e = output_dir(v); !e) return e;
         c.textfile_dir = v;
         return {};
       }},
      {{"ssm-inventory-dir", "DIR|auto",
        "write the custom inventory type Custom:ImdsPosture to DIR/ImdsPosture.json after each "
        "cycle for AWS Systems Manager Inventory (auto: "
        "/var/lib/amazon/ssm/INSTANCE-ID/inventory/custom; default empty: off)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         if (v != "auto") {
           if (auto e = output_dir(v); !e) return e;
         }
         c.ssm_inventory_dir = v;
         return {};
       }},
      {{"endpoint", "URL",
        "IPv4 IMDS base URL, http://ADDRESS[:PORT] (default http://169.254.169.254)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         if (auto e = parse_endpoint(v, Family::v4); !e) return e.error();
         c.endpoint = v;
         return {};
       }},
      {{"endpoint-v6", "URL",
        "IPv6 IMDS base URL, http://[ADDRESS][:PORT] (default http://[fd00:ec2::254])"},
       [](AgentConfig& c, const std::string& v) -> Status {
         if (auto e = parse_endpoint(v, Family::v6); !e) return e.error();
         c.endpoint_v6 = v;
         return {};
       }},
      {{"ipv6", "BOOL", "also probe the IPv6 endpoint (default yes)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         auto b = parse_bool(v);
         if (!b) return Error{"'" + v + "' is not a boolean (yes/no)"};
         c.ipv6 = *b;
         return {};
       }},
      {{"request-timeout", "DURATION", "per-request timeout (default 2s)"},
       [](AgentConfig& c, const std::string& v) {
         return set_duration(c.request_timeout, v, milliseconds(100), seconds(30));
       }},
      {{"max-namespaces", "N",
        "container namespaces probed per cycle; more are spread over later cycles (default 64)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         auto n = parse_number<std::size_t>(v);
         if (!n || *n < 1 || *n > 4000) return Error{"'" + v + "' is not a number in 1..4000"};
         c.max_namespaces = *n;
         return {};
       }},
      {{"confirm", "N",
        "quick re-probes that must see a change hold before it is reported, 0..5 (default 2)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         auto n = parse_number<unsigned>(v);
         if (!n || *n > 5) return Error{"'" + v + "' is not a number in 0..5"};
         c.confirm = *n;
         return {};
       }},
      {{"min-event-gap", "DURATION",
        "shortest time between two events about the same option, container or reachability, "
        "0..1h (default 1min)"},
       [](AgentConfig& c, const std::string& v) {
         return set_duration(c.min_event_gap, v, Millis(0), hours(1));
       }},
      {{"flap-changes", "N",
        "confirmed changes of one subject within flap-window that make it flapping, 2..1000, "
        "or 0 for never (default 3)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         auto n = parse_number<unsigned>(v);
         if (!n || *n == 1 || *n > 1000) return Error{"'" + v + "' is not 0 or a number in 2..1000"};
         c.flap_changes = *n;
         return {};
       }},
      {{"flap-window", "DURATION", "the window of flap-changes, 1min..1d (default 15min)"},
       [](AgentConfig& c, const std::string& v) {
         return set_duration(c.flap_window, v, minutes(1), hours(24));
       }},
      {{"log-level", "LEVEL", "debug, info, warning or error (default info)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         if (v != "debug" && v != "info" && v != "warning" && v != "error") {
           return Error{"'" + v + "' is not one of debug, info, warning, error"};
         }
         c.log_level = v;
         return {};
       }},
      {{"backoff-max", "DURATION",
        "longest wait after repeated errors or throttling (429/503) (default 15min)"},
       [](AgentConfig& c, const std::string& v) {
         return set_duration(c.backoff_max, v, seconds(1), hours(24));
       }},
      {{"min-probe-gap", "DURATION",
        "shortest time between two probes, also on demand or on new namespaces (default 2s)"},
       [](AgentConfig& c, const std::string& v) {
         return set_duration(c.min_probe_gap, v, Millis(0), minutes(10));
       }},
      {{"request-rate", "N",
        "requests per second to the IMDS, all namespaces together, 1..100 (default 20)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         auto n = parse_number<double>(v);
         if (!n || !(*n >= 1.0 && *n <= 100.0)) {
           return Error{"'" + v + "' is not a number in 1..100"};
         }
         c.request_rate = *n;
         return {};
       }},
      {{"request-burst", "N",
        "requests sent at once before request-rate paces them, 14..200 (default 20)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         auto n = parse_number<std::size_t>(v);
         if (!n || *n < kMaxRequestsPerTarget || *n > 200) {
           return Error{"'" + v + "' is not a number in " +
                        std::to_string(kMaxRequestsPerTarget) +
                        "..200 (one namespace sends up to " +
                        std::to_string(kMaxRequestsPerTarget) + " requests at once)"};
         }
         c.request_burst = *n;
         return {};
       }},
      {{"packet-ttl", "BOOL",
        "read response TTLs with a packet socket for the exact hop limit (default yes)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         auto b = parse_bool(v);
         if (!b) return Error{"'" + v + "' is not a boolean (yes/no)"};
         c.packet_ttl = *b;
         return {};
       }},
      {{"watch-callers", "BOOL",
        "watch the IMDS traffic of the host and its containers passively and record who calls "
        "IMDSv1 and whose token PUTs are lost (default yes; sends nothing)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         auto b = parse_bool(v);
         if (!b) return Error{"'" + v + "' is not a boolean (yes/no)"};
         c.watch_callers = *b;
         return {};
       }},
      {{"caller-processes", "BOOL",
        "with watch-callers: look up the process behind each IMDS connection (sock_diag, then "
        "/proc/*/fd) and name it in /v1/callers and the journal (default yes; no: callers are "
        "named by namespace, container and SDK only)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         auto b = parse_bool(v);
         if (!b) return Error{"'" + v + "' is not a boolean (yes/no)"};
         c.caller_processes = *b;
         return {};
       }},
      {{"callers-summary-interval", "DURATION|never",
        "how often the journal gets a summary of the IMDSv1 callers and lost token PUTs seen "
        "(default 1h; only when there were some)"},
       [](AgentConfig& c, const std::string& v) -> Status {
         if (v == "never") {
           c.callers_summary_interval.reset();
           return {};
         }
         Millis d{};
         if (auto e = set_duration(d, v, minutes(1), hours(24 * 7)); !e) return e;
         c.callers_summary_interval = d;
         return {};
       }},
  };
  return table;
}

const KeyEntry* find_key(std::string_view key) {
  for (const auto& k : key_table()) {
    if (key == k.doc.key) return &k;
  }
  return nullptr;
}

po::options_description key_options() {
  po::options_description desc("Settings (also in the config file as KEY = VALUE)");
  for (const auto& k : key_table()) {
    desc.add_options()(k.doc.key, po::value<std::string>()->value_name(k.doc.value),
                       k.doc.description);
  }
  return desc;
}

// What a path is when it is not a regular file, for the error message.
std::string_view file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "a special file";
}

// The text of one configuration file. Opened without blocking and checked on the open
// descriptor: a FIFO in its place would otherwise block start-up (and every reload) until
// something writes to it, and a directory would read as an empty, valid file.
Result<std::string, ConfigError> read_text(const std::filesystem::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd) return ConfigError{path.string() + ": cannot open: " + std::strerror(errno)};
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return ConfigError{path.string() + ": cannot stat: " + std::strerror(errno)};
  }
  if (!S_ISREG(st.st_mode)) {
    return ConfigError{path.string() + ": is " + std::string(file_kind(st.st_mode)) +
                       ", not a regular file; give a configuration file"};
  }
  std::string text(kMaxConfigBytes + 1, '\0');
  std::size_t size = 0;
  while (size < text.size()) {
    const ssize_t n = ::read(fd.get(), text.data() + size, text.size() - size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ConfigError{path.string() + ": cannot read: " + std::strerror(errno)};
    if (n == 0) break;
    size += static_cast<std::size_t>(n);
  }
  if (size > kMaxConfigBytes) {
    return ConfigError{path.string() + ": larger than 1 MiB, not a configuration file"};
  }
  text.resize(size);
  return text;
}

// One file: syntax pre-pass (locations), then Boost.Program_options, then each value.
Result<void, ConfigError> read_file(const std::filesystem::path& path, AgentConfig& config) {
  auto read = read_text(path);
  if (!read) return read.error();
  const std::string& text = read.value();

  std::map<std::string, std::vector<int>> lines_of;  // key -> line numbers, in order
  std::string section;
  std::istringstream scan(text);
  std::string raw;
  int lineno = 0;
  while (std::getline(scan, raw)) {
    ++lineno;
    auto hash = raw.find('#');
    auto line = trim(hash == std::string::npos ? raw : raw.substr(0, hash));
    if (line.empty()) continue;
    if (line.front() == '[') {
      if (line.back() != ']') {
        return ConfigError{path.string() + ":" + std::to_string(lineno) +
                           ": unterminated section header '" + line + "'"};
      }
      section = trim(line.substr(1, line.size() - 2));
      continue;
    }
    auto eq = line.find('=');
    if (eq == std::string::npos) {
      return ConfigError{path.string() + ":" + std::to_string(lineno) +
                         ": expected 'KEY = VALUE', got '" + line + "'"};
    }
    auto key = trim(line.substr(0, eq));
    if (!section.empty()) key.insert(0, section + ".");
    lines_of[key].push_back(lineno);
  }

  auto desc = key_options();
  po::parsed_options parsed(&desc);
  try {
    std::istringstream stream(text);
    parsed = po::parse_config_file(stream, desc, /*allow_unregistered=*/true);
  } catch (const po::error& e) {
    return ConfigError{path.string() + ": " + e.what()};
  }
  std::map<std::string, std::size_t> seen;
  for (const auto& opt : parsed.options) {
    const auto& where = lines_of[opt.string_key];
    auto n = seen[opt.string_key]++;
    std::string loc = path.string() + ":" + (n < where.size() ? std::to_string(where[n]) : "?");
    if (opt.unregistered || find_key(opt.string_key) == nullptr) {
      return ConfigError{loc + ": unknown key '" + opt.string_key + "' (see imds-agent.conf(5))"};
    }
    std::string value = opt.value.empty() ? std::string() : opt.value.front();
    if (auto applied = apply_setting(config, opt.string_key, value); !applied) {
      return ConfigError{loc + ": " + opt.string_key + ": " + applied.error().message};
    }
  }
  config.sources.push_back(path.string());
  return {};
}

}  // namespace

Status apply_setting(AgentConfig& config, const std::string& key, const std::string& value) {
  const auto* entry = find_key(key);
  if (entry == nullptr) return Error{"unknown key '" + key + "'"};
  return entry->set(config, trim(value));
}

DiscoveryConfig discovery_config_of(const AgentConfig& config) {
  DiscoveryConfig dc;
  dc.netns_dirs = config.netns_dirs;
  dc.proc_scan = config.proc_scan;
  dc.docker_root = config.docker_root;
  return dc;
}

const std::vector<KeyDoc>& config_keys() {
  static const std::vector<KeyDoc> docs = [] {
    std::vector<KeyDoc> out;
    for (const auto& k : key_table()) out.push_back(k.doc);
    return out;
  }();
  return docs;
}

Result<AgentConfig, ConfigError> load_config(const ConfigSources& sources) {
  namespace fs = std::filesystem;
  AgentConfig config;
  if (!sources.file.empty()) {
    std::error_code ec;
    if (fs::exists(sources.file, ec)) {
      if (auto read = read_file(sources.file, config); !read) return read.error();
    } else if (sources.file_required) {
      return ConfigError{sources.file + ": does not exist"};
    }
  }
  if (!sources.dir.empty()) {
    std::error_code ec;
    std::vector<fs::path> dropins;
    for (fs::directory_iterator it(sources.dir, ec), end; !ec && it != end; it.increment(ec)) {
      const auto& p = it->path();
      // Anything but a regular file (or a symlink to one) is skipped, as documented.
      if (p.extension() == ".conf" && !p.filename().string().starts_with(".") &&
          it->is_regular_file(ec)) {
        dropins.push_back(p);
      }
    }
    if (ec && ec != std::errc::no_such_file_or_directory) {
      return ConfigError{sources.dir + ": cannot list drop-ins: " + ec.message()};
    }
    if (dropins.size() > kMaxDropIns) {
      return ConfigError{sources.dir + ": more than 256 drop-ins"};
    }
    std::sort(dropins.begin(), dropins.end(),
              [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });
    for (const auto& p : dropins) {
      if (auto read = read_file(p, config); !read) return read.error();
    }
  }
  for (const auto& [key, value] : sources.overrides) {
    if (auto applied = apply_setting(config, key, value); !applied) {
      return ConfigError{"--" + key + ": " + applied.error().message};
    }
  }
  return config;
}

namespace {

po::options_description all_options() {
  po::options_description general("Options");
  general.add_options()("config", po::value<std::string>()->value_name("PATH"),
                        "main configuration file (default " IMDS_SYSCONFDIR
                        "/imds-agent/imds-agent.conf)")(
      "config-dir", po::value<std::string>()->value_name("DIR"),
      "drop-in directory, *.conf read in lexical order (default " IMDS_SYSCONFDIR
      "/imds-agent/conf.d)")("check-config",
                             "validate the configuration and exit (0 valid, 2 not)")(
      "help,h", "show this help and exit")("version", "show the version and exit");
  general.add(key_options());
  return general;
}

}  // namespace

std::string usage_text() {
  std::ostringstream out;
  out << "Usage: imds-agent [OPTIONS]\n"
         "Watches the EC2 instance metadata service options from the host and every container\n"
         "network namespace; reports changes to the journal and serves a local HTTP API.\n\n"
      << all_options() << "\nSee imds-agent(8) and imds-agent.conf(5).\n";
  return out.str();
}

Result<CommandLine, ConfigError> parse_command_line(int argc, const char* const* argv) {
  CommandLine cl;
  cl.sources.file = IMDS_SYSCONFDIR "/imds-agent/imds-agent.conf";
  cl.sources.dir = IMDS_SYSCONFDIR "/imds-agent/conf.d";
  auto desc = all_options();
  try {
    auto parsed = po::command_line_parser(argc, argv).options(desc).run();
    for (const auto& opt : parsed.options) {
      const std::string& k = opt.string_key;
      std::string value = opt.value.empty() ? std::string() : opt.value.front();
      if (k == "config") {
        cl.sources.file = value;
        cl.sources.file_required = true;
      } else if (k == "config-dir") {
        cl.sources.dir = value;
      } else if (k == "check-config") {
        cl.check_config = true;
      } else if (k == "help") {
        cl.help = true;
      } else if (k == "version") {
        cl.version = true;
      } else {
        cl.sources.overrides.emplace_back(k, value);
      }
    }
  } catch (const po::error& e) {
    return ConfigError{e.what()};
  }
  return cl;
}

}  // namespace imds::agent
