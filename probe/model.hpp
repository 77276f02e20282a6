// The probe's data model: what it observed (plain data), what it inferred from that,
// and the findings. Collection fills Observations; inference is pure functions over them.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace imds {

inline constexpr int kSchemaVersion = 1;
inline constexpr int kMaxHopLimit = 64;

enum class Family { v4, v6 };

// How a single HTTP exchange ended. `http` means a status line arrived; everything
// else is a transport-level failure, kept as a value (never an exception).
enum class Outcome {
  http,         // a response arrived; see HttpResult::status
  timeout,      // no (complete) response before the per-request timeout
  reset,        // ECONNRESET during the exchange
  refused,      // ECONNREFUSED on connect
  unreachable,  // ENETUNREACH / EHOSTUNREACH (no route, blackhole route)
  error,        // anything else (bad response, local error); see HttpResult::error
  skipped,      // deliberately not sent (e.g. --no-v1, or the verdict was already known)
};

// The requests a probe makes against one endpoint from one namespace.
enum class Step {
  token_put,  // PUT /latest/api/token
  v2_get,     // GET of a harmless path with the token
  v1_get,     // GET of the same path without a token (counts in MetadataNoToken)
  listing,    // GET /latest/meta-data/ (with the token when there is one)
  identity,   // host only, with the token: ami-id, placement/region, ... for fix commands
};

struct HttpResult {
  Outcome outcome = Outcome::skipped;
  int status = 0;                         // HTTP status when outcome == http
  std::chrono::microseconds latency{0};   // from start of request to end (or failure)
  bool connected = false;                 // the TCP handshake completed
  std::optional<int> ttl;                 // IP TTL / hop limit of the response's data
                                          // segments as they arrived in this namespace
                                          // (packet socket; absent without CAP_NET_RAW)
  std::optional<int> handshake_ttl;       // TTL of the SYN-ACK in this namespace: never
                                          // hop-limited, so host minus container = distance
  std::optional<std::string> server;      // `Server` header, when present
  std::optional<long> token_ttl_seconds;  // X-aws-ec2-metadata-token-ttl-seconds header
  std::string body;                       // capped; empty for token responses (never kept)
  bool body_truncated = false;
  std::string error;        // transport error text, for people
  std::string skip_reason;  // why it was skipped, when outcome == skipped
};

struct Observation {
  Step step = Step::token_put;
  Family family = Family::v4;
  std::string path;  // request path, e.g. "/latest/meta-data/instance-id"
  HttpResult result;
};

// A network namespace the probe runs requests from.
struct NetnsTarget {
  std::string name;         // "host", a container id/name, a netns file name, "simulated"
  std::string path;         // file that opens the namespace ("/proc/self/ns/net" for host)
  std::uint64_t inode = 0;  // nsfs inode: identity of the namespace
  std::string source;       // "host", "netns-dir", "proc", "pid", "container", "simulated", "path"
  std::optional<std::string> container_id;  // from /proc/PID/cgroup, when found
  std::optional<std::string> runtime;       // "docker", "containerd", "podman", "kubepods"
  bool is_host = false;
};

struct TargetObservations {
  NetnsTarget target;
  std::vector<Observation> observations;
  // Distance in forwarding hops from the IMDS relative to the host namespace, when it
  // could be measured (difference of TTLs of the same kind of response).
  // Set by collection from SYN-ACK TTLs, or by construction (a simulated container is 1).
  std::optional<int> distance;
  std::string error;  // the namespace could not be entered, etc.
};

// Proxy variables in the probe's environment that would send SDK/curl traffic for
// http://169.254.169.254 to a proxy (the probe itself never uses a proxy).
struct ProxyEnvironment {
  std::optional<std::string> variable;  // e.g. "http_proxy", when one is set
  bool no_proxy_covers_imds = false;    // no_proxy/NO_PROXY lists 169.254.169.254 (or *)
};

// ---- Inference ----

enum class Tristate { yes, no, unknown };

enum class HttpTokens { optional, required, unknown };

enum class EndpointState { enabled, disabled, unreachable, unknown };

enum class UnreachableReason { none, refused, blackholed, firewalled, timeout, intercepted_error };

struct HopLimit {
  std::optional<int> exact;  // when read from packet TTLs or found by IP_MINTTL search
  int lower = 1;             // proven bounds (inclusive)
  int upper = kMaxHopLimit;
  std::string method;  // "packet-ttl", "min-ttl-search", "bounds", "none"
};

enum class Severity { info, notice, warning, error };

struct Finding {
  std::string id;  // stable, e.g. "tokens-optional", "container-no-token"
  Severity severity = Severity::info;
  std::string target;   // NetnsTarget::name it concerns, or "" for the instance
  std::string summary;  // one line for people
  std::string detail;   // what it means (SDK behaviour, risk)
  std::string fix;      // exact command(s), may be multi-line; "" when nothing to do
};

// What one namespace will experience.
struct TargetVerdict {
  std::string target;
  std::optional<int> distance;
  Tristate imdsv2 = Tristate::unknown;  // gets a token and data
  Tristate imdsv1 = Tristate::unknown;  // tokenless GET answers 200
  Tristate reachable = Tristate::unknown;
  std::string summary;     // e.g. "no token (PUT response dropped, 1 hop)"
  bool predicted = false;  // verdict known from host TTL without waiting
};

// Expected policy (from --expect / config).
struct Expectations {
  std::optional<HttpTokens> http_tokens;
  std::optional<int> hop_limit_min;  // ">=N" or "N" sets min
  std::optional<int> hop_limit_max;  // "N" sets max too
  std::optional<bool> endpoint_enabled;
  std::optional<bool> ipv6_enabled;
  std::optional<bool> tags_enabled;
};

struct InstanceIdentity {
  std::optional<std::string> instance_id;
  std::optional<std::string> ami_id;
  std::optional<std::string> region;
  std::optional<std::string> availability_zone;
};

struct Inference {
  EndpointState endpoint = EndpointState::unknown;
  UnreachableReason unreachable_reason = UnreachableReason::none;
  HttpTokens http_tokens = HttpTokens::unknown;
  HopLimit hop_limit;
  Tristate ipv6 = Tristate::unknown;
  Tristate tags = Tristate::unknown;
  Tristate interception = Tristate::unknown;
  std::vector<std::string> proxy_warnings;  // env proxy variables that capture the IMDS
  InstanceIdentity instance;
  std::vector<TargetVerdict> targets;
};

struct Diagnosis {
  int schema_version = kSchemaVersion;
  std::string tool_version;
  std::string started_at;  // RFC 3339 UTC
  std::chrono::milliseconds duration{0};
  std::string endpoint_v4;
  std::string endpoint_v6;
  bool v1_probed = true;
  bool packet_ttl_available = false;      // a packet socket could be opened (CAP_NET_RAW)
  std::optional<int> searched_hop_limit;  // result of the IP_MINTTL search, when run
  ProxyEnvironment proxy;
  Expectations expectations;
  std::vector<TargetObservations> targets;
  Inference inference;
  std::vector<Finding> findings;
};

// The stable lowercase names used in JSON (and usable by the journal and metrics).
std::string_view to_string(Family value);
std::string_view to_string(Outcome value);
std::string_view to_string(Step value);
std::string_view to_string(Tristate value);
std::string_view to_string(HttpTokens value);
std::string_view to_string(EndpointState value);
std::string_view to_string(UnreachableReason value);
std::string_view to_string(Severity value);

}  // namespace imds
