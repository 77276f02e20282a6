// The probe's data model: what it observed (plain data), what it inferred from that,
// and the findings. Collection fills Observations; inference is pure functions over them.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace imds {

inline constexpr int kSchemaVersion = 2;
inline constexpr int kMaxHopLimit = 64;

enum class Family { v4, v6 };

// How a single HTTP exchange ended. `http` means a status line arrived; everything
// else is a transport-level failure, kept as a value (never an exception).
enum class Outcome {
  http,         // a response arrived; see HttpResult::status
  timeout,      // no (complete) response before the per-request timeout
  reset,        // ECONNRESET during the exchange
  refused,      // ECONNREFUSED on connect
  unreachable,  // ENETUNREACH / EHOSTUNREACH: no route
  blocked,      // EINVAL / EACCES / EPERM: a blackhole or prohibit route, or a local firewall
  error,        // anything else (bad response, local error); see HttpResult::error
  skipped,      // deliberately not sent: HttpResult::skip says why
};

// Why a request was not sent (or was aborted before its answer): a value that inference
// decides on; the sentence for people is derived from it in one place (words.hpp).
enum class SkipReason {
  none,                   // the request was sent
  not_started,            // the overall deadline came before it could start
  v1_disabled,            // tokenless GETs switched off (--no-v1): they count in MetadataNoToken
  listing_disabled,       // the metadata listing was not asked for
  no_token,               // a token-bearing GET whose token PUT got no token
  namespace_not_entered,  // TargetObservations::error says why
  predicted_drop,         // token PUT aborted: HttpResult::prediction proves its answer is lost
};

// The proof behind SkipReason::predicted_drop: the host saw the PUT response arrive with
// TTL `host_ttl`, and this namespace is `distance` forwarding hops further away.
struct DropPrediction {
  int host_ttl = 0;
  int distance = 0;
  bool operator==(const DropPrediction&) const = default;
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
  std::string error;                        // transport error text, for people
  SkipReason skip = SkipReason::none;       // why it was not sent, when outcome == skipped
  std::optional<DropPrediction> prediction;  // when skip == predicted_drop
  bool cut_by_deadline = false;  // a timeout that the overall deadline caused, not the IMDS
  // The first connection got no answer at all (no SYN-ACK before the connect timeout) and this
  // is the result of the one quick retry on a fresh connection. Answered, the loss was
  // transient (one SYN lost on the way); unanswered again, a firewall is the likelier cause.
  bool retried = false;
};

struct Observation {
  Step step = Step::token_put;
  Family family = Family::v4;
  std::string path;  // request path, e.g. "/latest/meta-data/instance-id"
  HttpResult result;
};

// Where a target namespace came from.
enum class TargetSource {
  host,       // the probe's own namespace
  netns_dir,  // an entry of a namespace directory (/run/netns, /run/docker/netns, ...)
  proc,       // a process found by the /proc scan
  pid,        // --pid
  container,  // --container (found through /proc cgroups)
  simulated,  // --simulate-container: a bridge namespace the probe built, one hop away
  path,       // --netns PATH
};

// A network namespace the probe runs requests from.
struct NetnsTarget {
  std::string name;         // "host", a container id/name, a netns file name, "simulated"
  std::string path;         // file that opens the namespace ("/proc/self/ns/net" for host)
  std::uint64_t inode = 0;  // nsfs inode: identity of the namespace
  TargetSource source = TargetSource::path;
  std::optional<std::string> container_id;  // from /proc/PID/cgroup, when found
  std::optional<std::string> runtime;       // "docker", "containerd", "podman", "kubepods"
  // Docker's name, from its on-disk state, or a Kubernetes pod's "namespace/pod", from the
  // runtime's bundle annotations; when readable
  std::optional<std::string> container_name;
  bool is_host = false;
};

struct TargetObservations {
  NetnsTarget target;
  std::vector<Observation> observations;
  // Distance in forwarding hops from the IMDS relative to the host namespace, when it
  // is known. Set once, by collection: the host is 0, a simulated container 1 (by
  // construction), others from SYN-ACK TTLs (hops.hpp); nothing else derives it.
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

// Why a namespace (or the host) does not reach the IMDS over one address family.
enum class UnreachableReason {
  none,
  refused,            // connection refused: nothing listens (IPv6 endpoint off, not EC2)
  no_route,           // ENETUNREACH/EHOSTUNREACH: no route to the address
  blackholed,         // a blackhole/prohibit route or local firewall rule refuses it
  firewalled,         // the connect timed out: a DROP rule
  timeout,            // connected, but no HTTP answer at all
  intercepted_error,  // something else answers, and fails the requests
};

// How the hop limit was learned. Only packet_ttl and min_ttl_search measure it; bounds
// come from tokens that arrived (or did not) at known distances.
enum class HopLimitMethod { none, bounds, packet_ttl, min_ttl_search };

struct HopLimit {
  std::optional<int> exact;  // only when measured: packet TTL or IP_MINTTL search
  int lower = 1;             // proven bounds (inclusive)
  int upper = kMaxHopLimit;
  HopLimitMethod method = HopLimitMethod::none;
  bool operator==(const HopLimit&) const = default;
};

enum class Severity { info, notice, warning, error };

// A namespace a finding concerns.
struct FindingSubject {
  std::string name;  // NetnsTarget::name
  std::optional<std::string> container_id;
  std::optional<int> distance;
  std::optional<std::string> container_name;  // NetnsTarget::container_name
  bool operator==(const FindingSubject&) const = default;
};

struct Finding {
  std::string id;  // stable, e.g. "tokens-optional", "container-no-token"
  Severity severity = Severity::info;
  // The namespaces it concerns, in target order; empty for the instance as a whole.
  // Namespaces that share a finding (same id, wording and fix) are one finding.
  std::vector<FindingSubject> subjects;
  std::string summary;  // one line for people
  std::string detail;   // what it means (SDK behaviour, risk)
  std::string fix;      // exact command(s), may be multi-line; "" when nothing to do
};

// How a token PUT's answer was lost, when it was.
enum class PutDrop {
  none,
  timeout,    // connected, then no answer before the timeout
  reset,      // the connection was reset instead
  predicted,  // not waited for: the host's TTL proves it (HttpResult::prediction)
};

// What one namespace experiences over one address family.
struct FamilyVerdict {
  FamilyVerdict() = default;
  explicit FamilyVerdict(Family f) : family(f) {}
  Family family = Family::v4;
  bool probed = false;  // at least one request of this family was sent (or predicted)
  Tristate reachable = Tristate::unknown;
  UnreachableReason unreachable_reason = UnreachableReason::none;
  Tristate imdsv2 = Tristate::unknown;  // gets a token and data with it
  Tristate imdsv1 = Tristate::unknown;  // a tokenless GET answers 200
  PutDrop put_drop = PutDrop::none;
  bool predicted = false;  // the token verdict is known from the host's TTL, without waiting
  std::string summary;     // one line for people
};

// What one namespace will experience: a verdict per address family. The headline is the
// IPv4 one, the family SDKs use by default; IPv6 is reported beside it.
struct TargetVerdict {
  std::string target;
  std::optional<int> distance;
  FamilyVerdict v4{Family::v4};
  FamilyVerdict v6{Family::v6};
  [[nodiscard]] const FamilyVerdict& headline() const { return v4; }
  [[nodiscard]] const FamilyVerdict& of(Family f) const { return f == Family::v4 ? v4 : v6; }
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

// Discovery found more namespaces than one run keeps (DiscoveryConfig::max_targets).
struct DiscoveryTruncation {
  std::size_t found = 0;       // distinct namespaces found
  std::size_t not_probed = 0;  // of those, left out of this run
  bool later_cycles = false;   // imds-agent: they get their turn in later cycles
  bool operator==(const DiscoveryTruncation&) const = default;
};

// What discovery looked at, so that a namespace it could not see is a finding and never a
// silent gap (a Docker netns file seen from a mount namespace without the bind mounts is an
// empty regular file).
enum class EntryProblem : std::uint8_t {
  not_mounted_here,      // an empty regular file: a bind mount that this mount namespace lacks
  dangling_link,         // a symbolic link to nothing
  not_a_namespace_file,  // a non-empty file, a directory, a FIFO, a device
  other_namespace_type,  // a namespace, but not a network one
  permission_denied,
  unreadable,  // any other error
  // An empty file beside mounted ones, which no running Docker container claims: a removed
  // container whose file the runtime has not removed yet (Docker: within a minute).
  stale,
};
inline constexpr std::size_t kEntryProblems = 7;

struct NetnsDirLook {
  enum class State : std::uint8_t { absent, unreadable, read };
  std::string dir;
  State state = State::absent;
  std::string error;        // unreadable: why
  std::size_t entries = 0;  // names in it (dot files aside)
  std::size_t usable = 0;   // network namespaces among them
  std::array<std::size_t, kEntryProblems> unusable{};  // the others, by problem
  std::vector<std::string> examples;                  // up to kMaxLookExamples unusable names
  [[nodiscard]] std::size_t unusable_total() const {
    std::size_t n = 0;
    for (const std::size_t c : unusable) n += c;
    return n;
  }
  bool operator==(const NetnsDirLook&) const = default;
};
inline constexpr std::size_t kMaxLookExamples = 3;

struct DiscoveryLook {
  std::vector<NetnsDirLook> dirs;
  bool proc_scanned = false;
  std::size_t proc_namespaces = 0;  // namespaces the /proc scan found beyond the directories
  // With the /proc scan off: processes whose cgroup names a container, in namespaces that
  // discovery did not list (nor the host's), and how many namespaces those are.
  std::size_t unlisted_container_processes = 0;
  std::size_t unlisted_container_namespaces = 0;
  std::vector<std::string> runtimes;  // container runtimes whose API socket exists here
  [[nodiscard]] std::size_t unusable_total() const {
    std::size_t n = 0;
    for (const auto& d : dirs) n += d.unusable_total();
    return n;
  }
  [[nodiscard]] std::size_t unreadable_dirs() const {
    std::size_t n = 0;
    for (const auto& d : dirs) n += d.state == NetnsDirLook::State::unreadable ? 1 : 0;
    return n;
  }
  bool operator==(const DiscoveryLook&) const = default;
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
  std::optional<DiscoveryTruncation> discovery_truncated;  // never silent: a finding says so
  std::optional<DiscoveryLook> discovery;  // what discovery looked at (only when it ran)
  Expectations expectations;
  std::vector<TargetObservations> targets;
  Inference inference;
  std::vector<Finding> findings;
};

// The stable lowercase names used in JSON (and usable by the journal and metrics).
std::string_view to_string(Family value);
std::string_view to_string(Outcome value);
std::string_view to_string(Step value);
std::string_view to_string(SkipReason value);
std::string_view to_string(TargetSource value);
std::string_view to_string(HopLimitMethod value);
std::string_view to_string(PutDrop value);
std::string_view to_string(Tristate value);
std::string_view to_string(HttpTokens value);
std::string_view to_string(EndpointState value);
std::string_view to_string(UnreachableReason value);
std::string_view to_string(Severity value);
std::string_view to_string(EntryProblem value);  // "not_mounted_here", "dangling_link", ...
std::string_view to_string(NetnsDirLook::State value);  // "absent", "unreadable", "read"

// How many of a diagnosis's targets came from discovery (a netns directory or /proc).
std::size_t discovered_targets(const Diagnosis& d);

}  // namespace imds
