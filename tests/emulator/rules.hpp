// The IMDS emulator's rules: a pure function from one request and the emulated instance's
// state to what the server must send. No sockets and no Beast here, so the rules (IMDS.md)
// are unit-tested directly; server.cpp only moves bytes and sets the IP TTL.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace imds::emu {

using SteadyTime = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;

// Both clocks, read once per request: steady for token lifetimes and pending options,
// wall for the request log.
struct Now {
  SteadyTime steady;
  WallTime wall;
  static Now current() {
    return {std::chrono::steady_clock::now(), std::chrono::system_clock::now()};
  }
};

inline constexpr int kMinHopLimit = 1;
inline constexpr int kMaxHopLimit = 64;
inline constexpr long kMaxTokenTtlSeconds = 21600;
inline constexpr std::string_view kTokenPath = "/latest/api/token";
inline constexpr std::string_view kTokenHeader = "X-aws-ec2-metadata-token";
inline constexpr std::string_view kTokenTtlHeader = "X-aws-ec2-metadata-token-ttl-seconds";
inline constexpr std::string_view kTokenAllow = "OPTIONS, PUT";

enum class HttpTokens { optional, required };
enum class UnauthorizedBody { xhtml, empty };
enum class Family { v4, v6 };

// The instance's metadata options (ModifyInstanceMetadataOptions) and the identity the
// emulated instance reports.
struct Options {
  HttpTokens http_tokens = HttpTokens::optional;
  int hop_limit = 1;
  bool endpoint_enabled = true;
  bool ipv6_enabled = false;
  bool tags_enabled = false;
  UnauthorizedBody unauthorized_body = UnauthorizedBody::xhtml;
  std::string instance_id = "i-0123456789abcdef0";
  std::string ami_id = "ami-0abcdef1234567890";
  std::string region = "us-east-1";
  std::string availability_zone = "us-east-1a";
  std::map<std::string, std::string> tags;

  bool operator==(const Options&) const = default;
};

// What to do to the connection after a token PUT response was written with a hop-limited
// TTL. The server cannot know whether the kernel dropped it on the way; the setting applies
// to every hop-limited PUT response.
enum class AfterDroppedPut { none, hang, reset };

// Injected faults (control POST /faults). `share` is the probability that one matching
// request is affected; `paths` (empty: every path) lists exact paths, or prefixes when an
// entry ends in '/'.
struct Faults {
  std::chrono::milliseconds delay{0};
  bool hang = false;
  bool reset = false;
  int status = 0;  // 0 (none), 429 or 503
  double share = 1.0;
  bool no_server_header = false;
  std::size_t oversized_bytes = 0;  // 0: off
  bool malformed = false;
  // The whole HTTP response (status line, headers, body) is written one byte every
  // `trickle` (0: off): a slow or stalled peer that keeps the connection alive.
  std::chrono::milliseconds trickle{0};
  std::size_t oversized_header_bytes = 0;  // an `X-Padding` header of that many bytes; 0: off
  bool no_ttl_header = false;  // drop X-aws-ec2-metadata-token-ttl-seconds from answers
  // Tokens issued by affected PUTs expire after this, whatever TTL was asked (the answer
  // still echoes the asked TTL): the token expires between the PUT and the GET.
  std::optional<std::chrono::milliseconds> token_lifetime;
  AfterDroppedPut after_dropped_put = AfterDroppedPut::none;
  std::vector<std::string> paths;

  bool operator==(const Faults&) const = default;
};

inline constexpr std::size_t kMaxOversizedBytes = std::size_t{64} * 1024 * 1024;
inline constexpr std::size_t kMaxOversizedHeaderBytes = std::size_t{1024} * 1024;
inline constexpr std::chrono::milliseconds kMaxTrickle{10000};
inline constexpr std::chrono::milliseconds kMaxTokenLifetime{3600000};

struct Header {
  std::string name;
  std::string value;
  bool operator==(const Header&) const = default;
};

struct Request {
  std::string method;
  std::string target;  // as received, may carry a query
  std::vector<Header> headers;
  std::string peer;  // address only
  std::uint16_t port = 0;
  Family family = Family::v4;
};

// What the server does with the connection.
enum class Action {
  respond,    // write `status`, `headers`, `body`
  hang,       // write nothing, keep the connection open until the client leaves
  reset,      // close with SO_LINGER {1, 0}: the client sees ECONNRESET
  malformed,  // write `body` raw (not HTTP) and close
};

struct Response {
  Action action = Action::respond;
  int status = 0;
  std::vector<Header> headers;  // Content-Length is the server's job
  std::string body;
  bool head_only = false;  // HEAD: Content-Length of `body`, but no body bytes
  // IP TTL / IPv6 hop limit to set right before writing (token PUT responses only).
  std::optional<int> hop_limit;
  AfterDroppedPut after_dropped_put = AfterDroppedPut::none;
  std::chrono::milliseconds delay{0};
  std::chrono::milliseconds trickle{0};  // write one byte every `trickle` (0: all at once)
  std::uint64_t seq = 0;  // the request log entry for this request

  // First value of a header (case-insensitive), for tests and the server.
  [[nodiscard]] std::optional<std::string> header(std::string_view name) const;
};

// One line of the request log. Never holds a token value.
struct LogEntry {
  std::uint64_t seq = 0;
  WallTime time;
  std::string peer;
  std::uint16_t port = 0;
  Family family = Family::v4;
  std::string method;
  std::string path;
  bool has_token = false;
  bool token_valid = false;
  bool has_xff = false;
  std::optional<std::string> ttl_header;  // the TTL value the client sent on a PUT
  int status = 0;                         // 0: nothing HTTP was written (hang, reset, garbage)
  std::optional<int> hop_limit;           // TTL the response was written with
  std::vector<std::string> faults;        // names of the faults applied
};

class RequestLog {
 public:
  static constexpr std::size_t kCapacity = 10000;
  LogEntry& append(LogEntry entry);
  void clear() { entries_.clear(); }
  [[nodiscard]] const std::deque<LogEntry>& entries() const { return entries_; }

 private:
  std::deque<LogEntry> entries_;
  std::uint64_t next_seq_ = 1;
};

// Issued IMDSv2 tokens. Random, opaque, printable, 56 characters, as on EC2.
class TokenStore {
 public:
  static constexpr std::size_t kCapacity = 100000;
  std::string issue(std::chrono::seconds ttl, SteadyTime now);
  // Cuts a live token's life to end at `expiry` (the token_lifetime fault).
  void shorten(std::string_view token, SteadyTime expiry);
  // Remaining whole seconds (rounded up) while the token is valid.
  [[nodiscard]] std::optional<std::chrono::seconds> remaining(std::string_view token,
                                                              SteadyTime now) const;
  [[nodiscard]] std::size_t size() const { return expiry_.size(); }

 private:
  void evict(SteadyTime now);
  std::unordered_map<std::string, SteadyTime> expiry_;
};

// 56 printable characters from the kernel's CSPRNG (getrandom).
std::string random_token();
std::uint64_t random_seed();

// Everything the rules read and change: options (with a pending change), tokens,
// faults, the request log.
class State {
 public:
  explicit State(Options initial = {}, std::uint64_t seed = random_seed());

  // The options in force at `now` (a due pending change becomes applied here).
  const Options& in_force(SteadyTime now);
  // What was last asked for: the pending options while pending, else those in force.
  [[nodiscard]] const Options& requested() const;
  [[nodiscard]] bool pending(SteadyTime now) const;
  // ModifyInstanceMetadataOptions: `next` takes effect after `delay` (0: now).
  void set_options(Options next, std::chrono::milliseconds delay, SteadyTime now);
  // When the pending change takes effect, if one is pending.
  [[nodiscard]] std::optional<SteadyTime> pending_until() const;

  Faults faults;
  TokenStore tokens;
  RequestLog log;

  // Uniform draw in [0, 1) for fault shares.
  double draw();

 private:
  Options in_force_;
  std::optional<Options> pending_;
  SteadyTime pending_until_{};
  std::mt19937_64 rng_;
};

// The rules of IMDS.md. Appends one entry to `state.log`.
Response handle(const Request& request, State& state, Now now);

// True when the request announces `Expect: 100-continue` (or any expectation): the server
// answers (417) without reading the body.
bool has_expectation(const Request& request);

// The metadata tree served for `options`: leaf path below "/latest/" -> value.
std::map<std::string, std::string> metadata_tree(const Options& options);

std::string_view to_string(HttpTokens v);
std::string_view to_string(UnauthorizedBody v);
std::string_view to_string(Family v);
std::string_view to_string(AfterDroppedPut v);

}  // namespace imds::emu
