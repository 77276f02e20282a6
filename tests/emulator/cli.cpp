// imds-emulator's command line: Boost.Program_options, every value validated with a
// specific message (exit 2), --help complete.
#include "cli.hpp"

#include <arpa/inet.h>
#include <sys/un.h>

#include <boost/program_options.hpp>
#include <charconv>
#include <sstream>

#include "config.h"
#include "control.hpp"

namespace imds::emu {
namespace {

namespace po = boost::program_options;

constexpr const char* kUsage =
    "Usage: imds-emulator --listen ADDR [--listen ADDR]... [--port N] [--control PATH] "
    "[options]\n"
    "\n"
    "An emulated EC2 instance metadata service (IMDS) for tests: answers as IMDS does\n"
    "(tests/emulator/README.md), writes token PUT responses with the IP TTL set to the hop\n"
    "limit, and is reconfigured at run time through the control socket.\n";

std::optional<long> parse_long(const std::string& s) {
  long n = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (s.empty() || ec != std::errc{} || ptr != s.data() + s.size()) return std::nullopt;
  return n;
}

bool is_ip_address(const std::string& s) {
  in6_addr buf{};  // room for either family
  return ::inet_pton(AF_INET, s.c_str(), &buf) == 1 || ::inet_pton(AF_INET6, s.c_str(), &buf) == 1;
}

struct BadValue {
  std::string message;
};

template <class T>
T require(std::optional<T> v, const std::string& flag, const std::string& expected,
          const std::string& got) {
  if (!v) throw BadValue{flag + ": expected " + expected + ", got '" + got + "'"};
  return *v;
}

void check(const std::string& problem, const std::string& flag) {
  if (!problem.empty()) throw BadValue{flag + ": " + problem};
}

}  // namespace

CliResult parse_command_line(int argc, const char* const* argv) {
  po::options_description desc("Options");
  // clang-format off
  desc.add_options()
    ("help,h", "print this help and exit")
    ("version", "print the version and exit")
    ("listen", po::value<std::vector<std::string>>()->value_name("ADDR"),
     "IPv4 or IPv6 address to serve IMDS on (repeatable, at least one); IPv6 listeners are "
     "open only while --ipv6 is enabled")
    ("port", po::value<std::string>()->value_name("N")->default_value("80"),
     "TCP port for every --listen address (1..65535)")
    ("control", po::value<std::string>()->value_name("PATH"),
     "Unix socket for the control API (GET/POST /options, POST /faults, GET/DELETE "
     "/requests, GET /health); replaced if it exists")
    ("http-tokens", po::value<std::string>()->value_name("optional|required")
         ->default_value("optional"), "HttpTokens: whether IMDSv1 (tokenless) GETs are answered")
    ("hop-limit", po::value<std::string>()->value_name("1..64")->default_value("1"),
     "HttpPutResponseHopLimit: the IP TTL of token PUT responses")
    ("http-endpoint", po::value<std::string>()->value_name("enabled|disabled")
         ->default_value("enabled"), "HttpEndpoint: when disabled every request gets 403")
    ("ipv6", po::value<std::string>()->value_name("enabled|disabled")->default_value("disabled"),
     "HttpProtocolIpv6: when disabled the IPv6 listeners are closed (connection refused)")
    ("tags", po::value<std::string>()->value_name("enabled|disabled")->default_value("disabled"),
     "InstanceMetadataTags: whether tags/ is listed and served")
    ("tag", po::value<std::vector<std::string>>()->value_name("KEY=VALUE"),
     "an instance tag (repeatable)")
    ("unauthorized-body", po::value<std::string>()->value_name("xhtml|empty")
         ->default_value("xhtml"), "body of 401 responses: the XHTML error page, or nothing")
    ("instance-id", po::value<std::string>()->value_name("ID")
         ->default_value("i-0123456789abcdef0"), "meta-data/instance-id")
    ("ami-id", po::value<std::string>()->value_name("ID")
         ->default_value("ami-0abcdef1234567890"), "meta-data/ami-id")
    ("region", po::value<std::string>()->value_name("R")->default_value("us-east-1"),
     "meta-data/placement/region")
    ("availability-zone", po::value<std::string>()->value_name("AZ"),
     "meta-data/placement/availability-zone (default: the region followed by 'a')")
    ("ready-fd", po::value<std::string>()->value_name("N"),
     R"(write "ready\n" to file descriptor N, then close it, once every listener is up)")
    ("max-connections", po::value<std::string>()->value_name("N")->default_value("512"),
     "connections served at once; more are closed at accept (1..65536)")
    ("read-timeout-ms", po::value<std::string>()->value_name("N")->default_value("10000"),
     "time a client has to send one whole request before it is disconnected (100..600000)")
    ("verbose,v", "log every request to stderr (never token values)");
  // clang-format on

  CliResult result;
  po::variables_map vm;
  try {
    // Stray words are collected so the error can name them.
    po::options_description hidden;
    hidden.add_options()("stray", po::value<std::vector<std::string>>());
    po::options_description all;
    all.add(desc).add(hidden);
    po::positional_options_description positional;
    positional.add("stray", -1);
    po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    result.exit_code = 2;
    result.err = std::string("imds-emulator: ") + e.what() + "\nTry 'imds-emulator --help'.\n";
    return result;
  }

  if (vm.count("help") != 0U) {
    std::ostringstream os;
    os << kUsage << "\n"
       << desc << "\nExit status: 0 after SIGTERM/SIGINT, 1 when a listener "
       << "or the control socket cannot be set up, 2 for a bad command line.\n";
    result.out = os.str();
    return result;
  }
  if (vm.count("version") != 0U) {
    result.out = std::string("imds-emulator ") + IMDS_VERSION + "\n";
    return result;
  }

  try {
    Config c;
    auto str = [&](const char* name) { return vm[name].as<std::string>(); };

    if (vm.count("stray") != 0U) {
      throw BadValue{"unexpected argument '" + vm["stray"].as<std::vector<std::string>>()[0] + "'"};
    }
    if (vm.count("listen") == 0U) throw BadValue{"--listen: at least one address is required"};
    for (const auto& a : vm["listen"].as<std::vector<std::string>>()) {
      if (!is_ip_address(a)) throw BadValue{"--listen: '" + a + "' is not an IP address"};
      c.listen.push_back(a);
    }
    const auto port = parse_long(str("port"));
    c.port = static_cast<std::uint16_t>(
        require(port && *port >= 1 && *port <= 65535 ? port : std::nullopt, "--port",
                "a port number 1..65535", str("port")));
    if (vm.count("control") != 0U) {
      const auto path = str("control");
      if (path.empty() || path.size() >= sizeof(sockaddr_un{}.sun_path)) {
        throw BadValue{"--control: the socket path must be 1..107 bytes"};
      }
      c.control = path;
    }

    Options& o = c.options;
    o.http_tokens = require(parse_http_tokens(str("http-tokens")), "--http-tokens",
                            "'optional' or 'required'", str("http-tokens"));
    o.hop_limit = require(parse_hop_limit(str("hop-limit")), "--hop-limit", "an integer 1..64",
                          str("hop-limit"));
    o.endpoint_enabled = require(parse_enabled(str("http-endpoint")), "--http-endpoint",
                                 "'enabled' or 'disabled'", str("http-endpoint"));
    o.ipv6_enabled =
        require(parse_enabled(str("ipv6")), "--ipv6", "'enabled' or 'disabled'", str("ipv6"));
    o.tags_enabled =
        require(parse_enabled(str("tags")), "--tags", "'enabled' or 'disabled'", str("tags"));
    o.unauthorized_body =
        require(parse_unauthorized_body(str("unauthorized-body")), "--unauthorized-body",
                "'xhtml' or 'empty'", str("unauthorized-body"));
    if (vm.count("tag") != 0U) {
      for (const auto& kv : vm["tag"].as<std::vector<std::string>>()) {
        const auto eq = kv.find('=');
        if (eq == std::string::npos) throw BadValue{"--tag: expected KEY=VALUE, got '" + kv + "'"};
        const auto key = kv.substr(0, eq);
        const auto value = kv.substr(eq + 1);
        check(check_tag(key, value), "--tag");
        o.tags[key] = value;
      }
      if (o.tags.size() > kMaxTags) throw BadValue{"--tag: at most 50 tags"};
    }
    o.instance_id = str("instance-id");
    check(check_identity("instance id", o.instance_id), "--instance-id");
    o.ami_id = str("ami-id");
    check(check_identity("AMI id", o.ami_id), "--ami-id");
    o.region = str("region");
    check(check_identity("region", o.region), "--region");
    o.availability_zone =
        vm.count("availability-zone") != 0U ? str("availability-zone") : o.region + "a";
    check(check_identity("availability zone", o.availability_zone), "--availability-zone");

    if (vm.count("ready-fd") != 0U) {
      const auto fd = parse_long(str("ready-fd"));
      c.ready_fd =
          static_cast<int>(require(fd && *fd >= 0 && *fd <= 65535 ? fd : std::nullopt, "--ready-fd",
                                   "a file descriptor number", str("ready-fd")));
    }
    const auto max = parse_long(str("max-connections"));
    c.max_connections = static_cast<int>(
        require(max && *max >= 1 && *max <= 65536 ? max : std::nullopt, "--max-connections",
                "an integer 1..65536", str("max-connections")));
    const auto timeout = parse_long(str("read-timeout-ms"));
    c.read_timeout = std::chrono::milliseconds(
        require(timeout && *timeout >= 100 && *timeout <= 600000 ? timeout : std::nullopt,
                "--read-timeout-ms", "milliseconds 100..600000", str("read-timeout-ms")));
    c.verbose = vm.count("verbose") != 0U;
    result.config = std::move(c);
  } catch (const BadValue& e) {
    result.exit_code = 2;
    result.err = "imds-emulator: " + e.message + "\nTry 'imds-emulator --help'.\n";
  }
  return result;
}

}  // namespace imds::emu
