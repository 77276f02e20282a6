// imds-probe: one-shot diagnosis of the instance metadata service's options from the host and
// every container namespace. A thin front-end: parses flags, calls diagnose(), renders.
#include <curl/curl.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "callers_watch.hpp"
#include "config.h"
#include "diagnose.hpp"
#include "duration.hpp"
#include "endpoint.hpp"
#include "expect.hpp"
#include "render.hpp"
#include "status_client.hpp"

namespace po = boost::program_options;
using namespace std::chrono_literals;

namespace {

using imds::kExitUsage;
constexpr const char* kDefaultSocket = IMDS_RUNSTATEDIR "/imds-agent/imds-agent.sock";

// A usage or configuration error: printed as "imds-probe: MESSAGE", exit 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class JsonMode { off, short_, pretty };

JsonMode parse_json_mode(const std::string& v) {
  if (v == "off") return JsonMode::off;
  if (v == "short") return JsonMode::short_;
  if (v == "pretty") return JsonMode::pretty;
  throw UsageError("--json=" + v + ": expected short, pretty or off");
}

// A duration flag (see duration.hpp for the grammar), bounded to [min, max].
std::chrono::milliseconds duration_flag(const std::string& flag, const std::string& text,
                                        std::chrono::milliseconds min,
                                        std::chrono::milliseconds max) {
  const auto duration = imds::parse_duration(text);
  if (!duration) throw UsageError(flag + ": " + duration.error().message);
  if (*duration < min || *duration > max) {
    throw UsageError(flag + ": " + imds::duration_out_of_range(text, min, max));
  }
  return *duration;
}

// An endpoint flag, checked as the collector will read it; kept as given.
std::string endpoint_flag(const std::string& flag, const std::string& url, imds::Family family) {
  const auto endpoint = imds::parse_endpoint(url, family);
  if (!endpoint) throw UsageError(flag + ": " + endpoint.error().message);
  return url;
}

pid_t parse_pid(const std::string& text) {
  long v = 0;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || p != text.data() + text.size() || v <= 0 ||
      v > 0x3fffffff) {
    throw UsageError("--pid " + text + ": expected a process id (a positive number)");
  }
  return static_cast<pid_t>(v);
}

bool colour_wanted(bool no_color_flag) {
  if (no_color_flag) return false;
  const char* nc = std::getenv("NO_COLOR");
  if (nc != nullptr && *nc != '\0') return false;
  return ::isatty(STDOUT_FILENO) == 1;
}

void print_json(const nlohmann::json& j, JsonMode mode) {
  std::cout << (mode == JsonMode::pretty ? j.dump(2) : j.dump()) << '\n';
}

std::string usage_header() {
  return "Usage: imds-probe [OPTIONS]\n"
         "       imds-probe status [--socket PATH] [--json=MODE]\n"
         "       imds-probe callers [--socket PATH] [--json=MODE]\n"
         "       imds-probe callers --watch DURATION [--json=MODE]\n"
         "\n"
         "Diagnoses what the EC2 instance metadata service (IMDS) enforces (HttpTokens, hop\n"
         "limit, endpoint, IPv6, tags) from this namespace and from container namespaces, and\n"
         "says what each container will experience and the command that fixes it.\n";
}

std::string help_footer() {
  return "\nExpectations (--expect, repeatable), one of:\n  " +
         std::string(imds::expectation_forms()) +
         "\n\n"
         "Exit status: 0 healthy and compliant; 1 a finding at warning or worse (or an\n"
         "expectation not met); 2 usage or configuration error; 3 IMDS unreachable from the\n"
         "host. `callers`: 0 when it watched (or read the agent), 2 when it could not.\n"
         "\n"
         "Safety: never requests credentials or user data, never prints a token. The tokenless\n"
         "IMDSv1 GET is counted by CloudWatch as MetadataNoToken; use --no-v1 to skip it.\n"
         "See imds-probe(1).\n";
}

// What a command line asks for; each option goes with some of these (kOptionModes).
enum Mode : unsigned {
  kDiagnose = 1U,  // imds-probe [OPTIONS]
  kStatus = 2U,    // imds-probe status | --agent
  kRecord = 4U,    // imds-probe callers (the agent's record)
  kWatch = 8U,     // imds-probe callers --watch
};
std::string mode_words(unsigned modes) {
  std::string out;
  for (const auto& [mode, words] :
       {std::pair{kDiagnose, "a diagnosis"}, std::pair{kStatus, "`status`"},
        std::pair{kRecord, "`callers`"}, std::pair{kWatch, "`callers --watch`"}}) {
    if ((modes & mode) == 0) continue;
    out += (out.empty() ? "" : " or ") + std::string(words);
  }
  return out;
}
// The one place that says which option goes with which command; --json, --no-color, --help
// and --version go with all.
struct OptionModes {
  const char* option;
  unsigned modes;
};
constexpr std::array kOptionModes{
    OptionModes{"all-containers", kDiagnose},        OptionModes{"netns", kDiagnose},
    OptionModes{"pid", kDiagnose},                   OptionModes{"container", kDiagnose},
    OptionModes{"simulate-container", kDiagnose},    OptionModes{"no-v1", kDiagnose},
    OptionModes{"exact-hop-limit", kDiagnose},       OptionModes{"no-packet-ttl", kDiagnose},
    OptionModes{"timeout", kDiagnose},               OptionModes{"deadline", kDiagnose},
    OptionModes{"expect", kDiagnose},                OptionModes{"netns-dir", kDiagnose | kWatch},
    OptionModes{"exclude-netns", kDiagnose | kWatch}, OptionModes{"no-proc-scan", kDiagnose | kWatch},
    OptionModes{"docker-root", kDiagnose | kWatch},
    OptionModes{"endpoint", kDiagnose | kWatch},     OptionModes{"endpoint-v6", kDiagnose | kWatch},
    OptionModes{"no-ipv6", kDiagnose | kWatch},      OptionModes{"watch", kWatch},
    OptionModes{"no-process-lookup", kWatch},        OptionModes{"socket", kStatus | kRecord},
};
void check_modes(const po::variables_map& vm, Mode mode) {
  for (const auto& [option, modes] : kOptionModes) {
    if (vm.count(option) == 0 || (modes & mode) != 0) continue;
    throw UsageError(std::string("--") + option + " does not go with " + mode_words(mode) +
                     " (it goes with " + mode_words(modes) + ")");
  }
}

// SIGINT or SIGTERM ends `callers --watch` early: what was seen until then is reported.
std::atomic<bool> g_watch_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free);
extern "C" void on_watch_signal(int /*sig*/) { g_watch_stop.store(true); }

void stop_watch_on_signals() {
  struct sigaction sa {};
  sa.sa_handler = &on_watch_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  std::string json_text = "off";
  std::vector<std::string> netns, containers, netns_dirs, excludes, expects, pids;
  std::string endpoint, endpoint_v6, timeout, deadline, watch, docker_root;
  std::string socket_path = kDefaultSocket;

  // clang-format off
  po::options_description targets("Targets (the host namespace is always probed)");
  targets.add_options()
    ("all-containers",
     "discover every other network namespace: /run/netns, /run/docker/netns and "
     "/proc/*/ns/net, one probe per distinct namespace")
    ("netns", po::value(&netns)->value_name("PATH"),
     "also probe the namespace at PATH (e.g. /run/netns/NAME); repeatable")
    ("pid", po::value(&pids)->value_name("PID"),
     "also probe the network namespace of process PID; repeatable")
    ("container", po::value(&containers)->value_name("ID"),
     "also probe the container whose id starts with ID (from /proc/*/cgroup); repeatable")
    ("netns-dir", po::value(&netns_dirs)->value_name("DIR"),
     "with --all-containers: read named namespaces from DIR instead of /run/netns and "
     "/run/docker/netns; repeatable")
    ("exclude-netns", po::value(&excludes)->value_name("PATH"),
     "with --all-containers: skip the namespace at PATH; repeatable")
    ("no-proc-scan", "with --all-containers: do not look at /proc/*/ns/net")
    ("docker-root", po::value(&docker_root)->value_name("DIR"),
     "Docker's data root, whose containers/ID/config.v2.json give container names "
     "(default /var/lib/docker; empty: no names)")
    ("simulate-container",
     "also probe from a temporary bridge namespace one hop away (veth, forwarding, "
     "masquerade in its own nftables table), removed afterwards; needs root");
  po::options_description requests("Requests");
  requests.add_options()
    ("no-v1", "do not send the tokenless IMDSv1 GET (it counts in MetadataNoToken)")
    ("no-ipv6", "do not probe the IPv6 endpoint")
    ("exact-hop-limit",
     "without packet sockets, find the exact hop limit with an IP_MINTTL search (up to 6 "
     "more token PUTs from the host)")
    ("no-packet-ttl", "do not read TTLs with packet sockets (even with CAP_NET_RAW)")
    ("endpoint", po::value(&endpoint)->value_name("URL"),
     "IPv4 IMDS base URL, http://ADDRESS[:PORT] (default http://169.254.169.254)")
    ("endpoint-v6", po::value(&endpoint_v6)->value_name("URL"),
     "IPv6 IMDS base URL, http://[ADDRESS][:PORT] (default http://[fd00:ec2::254])")
    ("timeout", po::value(&timeout)->value_name("DURATION"),
     "per-request timeout, e.g. 2s, 1.5s or 500ms (default 2s; 10ms..60s)")
    ("deadline", po::value(&deadline)->value_name("DURATION"),
     "hard bound for the whole run (default 8s or 4 x --timeout; 100ms..10m)");
  po::options_description policy("Policy");
  policy.add_options()
    ("expect", po::value(&expects)->value_name("EXPR"),
     "expected option, e.g. http-tokens=required, hop-limit=>=2, imds-support=v2.0; a "
     "mismatch is a finding; repeatable");
  po::options_description output("Output");
  output.add_options()
    ("json", po::value(&json_text)->value_name("MODE")->implicit_value("pretty"),
     "print JSON: short, pretty or off (bare --json means pretty)")
    ("no-color", "no colours (also when NO_COLOR is set or stdout is not a terminal)")
    ("agent",
     "print the running imds-agent's latest diagnosis instead of probing (same as "
     "`imds-probe status`)")
    ("watch", po::value(&watch)->value_name("DURATION"),
     "with `callers`: listen to the IMDS traffic of this namespace and of the containers it "
     "forwards for DURATION (1s..24h) and say who called, how and with which SDK; sends "
     "nothing; needs CAP_NET_RAW (without --watch, `callers` prints the running "
     "imds-agent's record)")
    ("no-process-lookup",
     "with `callers --watch`: do not look up the process behind each new connection "
     "(NETLINK_SOCK_DIAG and a /proc scan)")
    ("socket", po::value(&socket_path)->value_name("PATH"),
     "the agent's Unix socket, for `status` and `callers` (default " IMDS_RUNSTATEDIR
     "/imds-agent/imds-agent.sock)")
    ("version", "print the version and exit")
    ("help,h", "print this help and exit");
  // clang-format on
  po::options_description hidden;
  hidden.add_options()("command", po::value<std::vector<std::string>>(), "");
  po::options_description visible;
  visible.add(targets).add(requests).add(policy).add(output);
  po::options_description all;
  all.add(visible).add(hidden);
  po::positional_options_description positional;
  positional.add("command", -1);

  try {
    po::variables_map vm;
    po::store(
        po::command_line_parser(argc, argv)
            .options(all)
            .positional(positional)
            .style(po::command_line_style::unix_style & ~po::command_line_style::allow_guessing)
            .run(),
        vm);
    po::notify(vm);

    if (vm.count("help") != 0) {
      std::cout << usage_header() << '\n' << visible << help_footer();
      return 0;
    }
    if (vm.count("version") != 0) {
      std::cout << "imds-probe " << IMDS_VERSION << '\n';
      return 0;
    }
    const JsonMode json = parse_json_mode(json_text);
    const bool colour = colour_wanted(vm.count("no-color") != 0);

    bool status_command = vm.count("agent") != 0;
    bool callers_command = false;
    if (vm.count("command") != 0) {
      const auto& words = vm["command"].as<std::vector<std::string>>();
      if (words[0] == "short" || words[0] == "pretty" || words[0] == "off") {
        throw UsageError("unexpected argument '" + words[0] + "': write --json=" + words[0]);
      }
      if (words.size() != 1 || (words[0] != "status" && words[0] != "callers")) {
        throw UsageError("unexpected argument '" + words[0] +
                         "' (the commands are `status` and `callers`; options start with --)");
      }
      status_command = words[0] == "status";
      callers_command = words[0] == "callers";
    }
    if (callers_command && vm.count("agent") != 0) {
      throw UsageError("--agent does not go with `callers` (it is the same as `status`)");
    }
    const Mode mode = callers_command ? (vm.count("watch") != 0 ? kWatch : kRecord)
                      : status_command ? kStatus
                                       : kDiagnose;
    check_modes(vm, mode);
    // Discovery's settings, the same for the diagnosis and the caller watch.
    const auto apply_discovery = [&](imds::DiscoveryConfig& discovery) {
      for (const auto& d : netns_dirs) {
        if (d.empty()) throw UsageError("--netns-dir needs a directory");
      }
      if (!netns_dirs.empty()) discovery.netns_dirs = netns_dirs;
      discovery.exclude_paths = excludes;
      discovery.proc_scan = vm.count("no-proc-scan") == 0;
      if (vm.count("docker-root") != 0) {
        if (!docker_root.empty() && !docker_root.starts_with("/")) {
          throw UsageError("--docker-root: expected an absolute path, or empty for no names");
        }
        discovery.docker_root = docker_root;
      }
    };
    if (callers_command) {
      if (mode == kRecord) {
        if (socket_path.empty() || socket_path.size() > 107) {
          throw UsageError("--socket: expected a Unix socket path (at most 107 bytes)");
        }
        return imds::agent_callers(
            socket_path, {.json = json != JsonMode::off, .pretty = json == JsonMode::pretty});
      }
      imds::WatchOptions options;
      options.duration = duration_flag("--watch", watch, 1s, 24h);
      apply_discovery(options.discovery);
      options.processes = vm.count("no-process-lookup") == 0;
      const std::string v4 = endpoint.empty() ? "http://169.254.169.254" : endpoint;
      const std::string v6 = endpoint_v6.empty() ? "http://[fd00:ec2::254]" : endpoint_v6;
      options.imds.push_back(imds::parse_endpoint(endpoint_flag("--endpoint", v4, imds::Family::v4),
                                                  imds::Family::v4)
                                 ->address);
      if (vm.count("no-ipv6") == 0) {
        options.imds.push_back(
            imds::parse_endpoint(endpoint_flag("--endpoint-v6", v6, imds::Family::v6),
                                 imds::Family::v6)
                ->address);
      }
      stop_watch_on_signals();
      const auto report = imds::watch_callers(options, &g_watch_stop);
      if (!report) {
        std::cerr << "imds-probe: " << report.error().message << '\n';
        return 2;
      }
      if (g_watch_stop.load()) {
        std::cerr << "imds-probe: note: stopped by a signal; the report covers the time watched\n";
      }
      for (const auto& n : report->notes) std::cerr << "imds-probe: note: " << n << '\n';
      if (json != JsonMode::off) {
        print_json(imds::callers_to_json(*report), json);
      } else {
        std::cout << imds::render_callers_text(imds::callers_to_json(*report));
      }
      return 0;
    }
    if (status_command) {
      if (socket_path.empty() || socket_path.size() > 107) {
        throw UsageError("--socket: expected a Unix socket path (at most 107 bytes)");
      }
      return imds::agent_status(
          socket_path, {.json = json != JsonMode::off, .pretty = json == JsonMode::pretty});
    }

    imds::ProbeOptions options;
    auto& c = options.collect;
    options.all_containers = vm.count("all-containers") != 0;
    if (!options.all_containers) {
      for (const char* f : {"netns-dir", "exclude-netns", "no-proc-scan"}) {
        if (vm.count(f) != 0) throw UsageError(std::string("--") + f + " needs --all-containers");
      }
    }
    apply_discovery(options.discovery);
    options.netns_paths = netns;
    for (const auto& p : pids) options.pids.push_back(parse_pid(p));
    options.containers = containers;
    options.simulate_container = vm.count("simulate-container") != 0;

    c.probe_v1 = vm.count("no-v1") == 0;
    c.probe_v6 = vm.count("no-ipv6") == 0;
    c.exact_hop_limit_search = vm.count("exact-hop-limit") != 0;
    c.packet_ttl = vm.count("no-packet-ttl") == 0;
    if (!endpoint.empty() || vm.count("endpoint") != 0)
      c.endpoint_v4 = endpoint_flag("--endpoint", endpoint, imds::Family::v4);
    if (!endpoint_v6.empty() || vm.count("endpoint-v6") != 0)
      c.endpoint_v6 = endpoint_flag("--endpoint-v6", endpoint_v6, imds::Family::v6);
    if (vm.count("timeout") != 0) {
      c.request_timeout = duration_flag("--timeout", timeout, 10ms, 60s);
      c.connect_timeout = std::min(c.connect_timeout, c.request_timeout);
      c.search_timeout = std::min(c.search_timeout, c.request_timeout);
    }
    if (vm.count("deadline") != 0) {
      c.deadline = duration_flag("--deadline", deadline, 100ms, 10min);
      if (c.deadline < c.request_timeout) {
        throw UsageError("--deadline " + deadline + " is shorter than the per-request timeout (" +
                         std::to_string(c.request_timeout.count()) + " ms)");
      }
    } else {
      c.deadline = std::max(c.deadline, std::chrono::milliseconds(c.request_timeout * 4));
    }
    for (const auto& e : expects) {
      if (const auto parsed = imds::parse_expectation(e, options.expectations); !parsed) {
        throw UsageError("--expect " + e + ": " + parsed.error().message);
      }
    }

    std::vector<std::string> notes;
    const imds::Diagnosis d = imds::diagnose(options, &notes);
    for (const auto& n : notes) std::cerr << "imds-probe: note: " << n << '\n';
    if (json != JsonMode::off) {
      print_json(imds::to_json(d), json);
    } else {
      std::cout << imds::render_text(d, colour);
    }
    std::cout.flush();
    return imds::exit_code(d);
  } catch (const po::error& e) {
    std::cerr << "imds-probe: " << e.what() << "\nTry 'imds-probe --help' for the options.\n";
    return kExitUsage;
  } catch (const UsageError& e) {
    std::cerr << "imds-probe: " << e.what() << '\n';
    return kExitUsage;
  } catch (const std::invalid_argument& e) {  // ProbeConfigError, collect's config checks
    std::cerr << "imds-probe: " << e.what() << '\n';
    return kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "imds-probe: unexpected error: " << e.what() << '\n';
    return kExitUsage;
  }
}
