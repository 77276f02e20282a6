// Who calls the IMDS, passively: the IMDS exchanges of a namespace (and of every container
// whose traffic it forwards), classified from the start of each request and the status line of
// each answer, as a packet socket sees them (callers_watch.hpp).
//
// Nothing here keeps a token, a header value other than the User-Agent's product and version,
// a response body, or the path of a credential or user-data request (only its category).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "packet_ttl.hpp"

namespace imds {

// What a request's path is about: never more than this is kept of a path.
enum class PathCategory : std::uint8_t { token, meta_data, dynamic, credentials, user_data, other };
inline constexpr std::size_t kPathCategories = 6;
std::string_view to_string(PathCategory category);

enum class RequestKind : std::uint8_t {
  token_put,  // PUT /latest/api/token
  imdsv2,     // a request with the X-aws-ec2-metadata-token header
  imdsv1,     // a GET or HEAD without it
  other,      // any other method (POST, a PUT elsewhere, ...)
};
std::string_view to_string(RequestKind kind);

// The client software, from the first product of a User-Agent ("Botocore/1.29.1 Python/3.11"
// is botocore 1.29.1). Known products get their usual name; others keep their own, cut to
// letters, digits and ".-_" (at most 40 characters); the version keeps letters, digits and
// ".-_+" (at most 32).
struct Sdk {
  std::string product;
  std::string version;
  auto operator<=>(const Sdk&) const = default;
};
std::optional<Sdk> parse_user_agent(std::string_view value);
// True for the products parse_user_agent knows by name (a bounded set: fit for metric labels).
bool known_sdk_product(std::string_view product);

struct RequestStart {
  RequestKind kind = RequestKind::other;
  PathCategory category = PathCategory::other;
  std::optional<Sdk> sdk;
};
// The start of an HTTP/1.x request as captured (possibly cut short): nothing when it is not
// one. Reads the request line and whatever complete header lines follow; a header cut off by
// the capture is ignored.
std::optional<RequestStart> classify_request(std::span<const std::uint8_t> bytes);
// The status code of an HTTP/1.x status line at the start of `bytes`, or nothing.
std::optional<int> response_status(std::span<const std::uint8_t> bytes);

// The process that owned a connection's socket (sock_owner.hpp), when it could be found.
struct ProcessInfo {
  int pid = 0;
  std::string comm;                 // /proc/PID/comm, printable, at most 16 bytes
  std::optional<std::string> unit;  // the systemd unit or scope of its cgroup, when it has one
  auto operator<=>(const ProcessInfo&) const = default;
};

// Where a connection to the IMDS came from, as this namespace saw it.
struct FlowOrigin {
  bool local = false;  // its SYN was sent from this namespace (not forwarded through it)
  int ifindex = 0;     // the interface its SYN was first seen on
  SocketName client;   // the client's address and port as first seen (before any NAT here)
};

using WatchClock = std::chrono::steady_clock;

// One request and what became of its answer.
struct Exchange {
  FlowOrigin origin;
  RequestStart request;
  WatchClock::time_point requested{};
  std::optional<int> status;       // the answer's status line, when one was seen
  std::optional<int> arrival_ttl;  // TTL / hop limit of the answer as it reached this namespace
  bool reached_here = false;       // the answer reached this namespace
  // ... and was seen arriving from the IMDS's side (not only leaving toward the client, as
  // the answer of a proxy in this namespace that poses as the IMDS would)
  bool seen_arriving = false;
  bool answered = false;           // ... and the client (for forwarded flows: it was passed on)
  bool reset = false;              // the connection was reset before the answer reached it
  std::optional<ProcessInfo> process;  // ExchangeTracker::set_process, when it was found
};

// The bounded connection table behind the watch. Feed it every captured packet (from the IP
// header, as a SOCK_DGRAM packet socket gives it); take the exchanges that are over.
//
// Forwarded traffic is seen more than once (on a container's veth, on the bridge, and once
// more leaving by the uplink after masquerading): copies are told apart by the SYN's initial
// sequence number, which NAT does not change, so every request counts once, for the client
// that sent it, and an answer that reaches this namespace but is never passed on (a token PUT
// answer whose TTL runs out here) is told from one that never came.
class ExchangeTracker {
 public:
  struct Limits {
    std::size_t max_flows = 4096;  // connections tracked at once; the oldest go first
    std::size_t max_pending = 8;   // requests awaiting an answer per connection
    WatchClock::duration answer_timeout = std::chrono::seconds(3);
    WatchClock::duration idle_timeout = std::chrono::seconds(120);
    WatchClock::duration linger = std::chrono::seconds(5);  // after a FIN or RST
  };
  struct Counters {
    std::uint64_t packets = 0;
    std::uint64_t malformed = 0;         // not a complete TCP segment to or from the IMDS
    std::uint64_t copies = 0;            // the same segment seen again (another interface)
    std::uint64_t out_of_order = 0;      // a gap in a stream: what was missed is not guessed
    std::uint64_t unseen_connections = 0;  // segments of connections opened before the watch
    std::uint64_t not_http = 0;          // a stream's start that is no HTTP request
    std::uint64_t answers_without_request = 0;
    std::uint64_t flows_evicted = 0;
    std::uint64_t requests_dropped = 0;  // over max_pending, or with an evicted connection
    std::uint64_t exchanges = 0;
  };

  ExchangeTracker(std::vector<SocketName> imds, Limits limits);

  void take(int ifindex, bool outgoing, std::span<const std::uint8_t> packet,
            WatchClock::time_point now);
  // Exchanges that ended since the last call: answered, reset, or unanswered for longer than
  // answer_timeout (or whose client closed the connection first). Also forgets idle flows.
  std::vector<Exchange> take_finished(WatchClock::time_point now);
  // At the end of a watch: every request still waiting, as unanswered.
  std::vector<Exchange> take_all();
  // The connections opened since the last call (their SYN seen; NAT copies not), at most
  // kMaxOpened between two calls: whose owner the caller may look up while it still exists.
  struct Opened {
    SocketName client;
    SocketName server;
    FlowOrigin origin;
  };
  static constexpr std::size_t kMaxOpened = 256;
  std::vector<Opened> take_opened();
  // The process behind a connection: given to its exchanges, those waiting and those to come.
  void set_process(const SocketName& client, const SocketName& server, const ProcessInfo& process);
  [[nodiscard]] const Counters& counters() const noexcept { return counters_; }
  [[nodiscard]] std::size_t flows() const noexcept { return flows_.size(); }

 private:
  struct FlowKey {
    SocketName client;
    SocketName server;
    auto operator<=>(const FlowKey&) const = default;
  };
  struct Stream {
    bool started = false;
    std::uint32_t next = 0;
  };
  struct Flow {
    FlowOrigin origin;
    std::uint32_t client_isn = 0;
    // The interface its SYN left this namespace by (0: not seen leaving). Only an answer that
    // comes in by that interface has arrived from the IMDS's side: one that comes in by
    // another (a container's veth) was sent by whoever is behind it, however it is addressed.
    int egress_ifindex = 0;
    std::optional<FlowKey> alias_of;  // a NAT copy of a forwarded flow: its original
    Stream client;
    Stream arrival;   // the server's bytes reaching this namespace
    Stream delivery;  // ... and leaving it toward a forwarded client
    std::vector<Exchange> pending;  // at most max_pending, oldest first (no allocation while empty)
    std::optional<ProcessInfo> process;
    WatchClock::time_point last{};
    bool ended = false;  // a FIN or RST was seen: nothing more is waited for
  };
  enum class Advance : std::uint8_t { take, copy, gap };

  [[nodiscard]] bool is_imds(const SocketName& end) const;
  void client_segment(const TcpSegment& segment, std::span<const std::uint8_t> packet,
                      int ifindex, bool outgoing, WatchClock::time_point now);
  void server_segment(const TcpSegment& segment, std::span<const std::uint8_t> packet,
                      int ifindex, bool outgoing, WatchClock::time_point now);
  void open_flow(const FlowKey& key, Flow flow);
  void close_flow(std::map<FlowKey, Flow>::iterator it, bool reset);
  void end_flow(Flow& flow, bool reset);
  void finish_front(Flow& flow);
  Advance advance(Stream& stream, const TcpSegment& segment);

  std::vector<SocketName> imds_;
  Limits limits_;
  std::map<FlowKey, Flow> flows_;
  // Forwarded flows by (server, initial sequence number): how their NAT copies are found.
  std::map<std::pair<SocketName, std::uint32_t>, FlowKey> by_isn_;
  std::vector<Exchange> finished_;
  std::vector<Opened> opened_;
  Counters counters_;
};

// What one caller did: a namespace (or container), the client software, counted.
struct CallerKey {
  std::string where;  // "host", a container's name or id, or the client's address
  std::string sdk_product;  // "" when the request had no User-Agent
  std::string sdk_version;
  auto operator<=>(const CallerKey&) const = default;
};

// What a tokenless request's answer proves about HttpTokens: 200 optional, 401 required.
struct TokenlessEvidence {
  std::chrono::system_clock::time_point seen{};
  int status = 0;     // 200 or 401
  std::string where;  // the caller
};

struct CallerStats {
  std::optional<std::string> container_id;
  std::optional<std::string> container_name;
  std::uint64_t netns_inode = 0;
  std::uint64_t imdsv1 = 0;            // tokenless GETs, deliberate ones
  std::uint64_t imdsv1_fallback = 0;   // ... sent after one of the caller's token PUTs went unanswered
  std::uint64_t imdsv1_ok = 0;         // answered 200 (tokens are optional)
  std::uint64_t imdsv1_unauthorized = 0;  // answered 401 (tokens are required)
  std::uint64_t imdsv2 = 0;
  std::uint64_t token_puts = 0;
  std::uint64_t token_puts_unanswered = 0;
  // ... of which the answer reached this namespace and went no further (its TTL ran out here)
  std::uint64_t token_puts_dropped_here = 0;
  std::optional<int> dropped_put_ttl;  // the TTL those answers arrived with
  std::uint64_t other = 0;
  std::optional<ProcessInfo> process;  // of its latest request whose process was found
  std::array<std::uint64_t, kPathCategories> categories{};
  std::map<int, std::uint64_t> statuses;  // at most 16 distinct codes; the rest under 0
  std::chrono::system_clock::time_point first_seen{};
  std::chrono::system_clock::time_point last_seen{};
  // Private bookkeeping for the fallback rule: when the latest unanswered token PUT was sent,
  // and the recent deliberate-looking IMDSv1 requests (to re-count when a PUT times out late).
  std::optional<WatchClock::time_point> last_unanswered_put;
  std::vector<WatchClock::time_point> recent_imdsv1;  // at most 16, oldest first
};

// Where an exchange's client is, for people (from FlowOrigin, by the caller's resolver).
struct CallerPlace {
  std::string where;
  std::optional<std::string> container_id;
  std::uint64_t netns_inode = 0;
  std::optional<std::string> container_name;  // Docker's, where its data root is readable
};

// The callers seen, bounded: beyond max_callers, new ones are counted under "other callers".
class CallerBook {
 public:
  static constexpr auto kFallbackWindow = std::chrono::seconds(30);
  explicit CallerBook(std::size_t max_callers = 1024) : max_callers_(max_callers) {}

  void add(const CallerPlace& place, const Exchange& exchange, std::chrono::system_clock::time_point now);
  [[nodiscard]] const std::map<CallerKey, CallerStats>& callers() const noexcept {
    return callers_;
  }
  [[nodiscard]] std::uint64_t overflowed() const noexcept { return overflowed_; }
  // The latest tokenless request answered 200 or 401 whose answer was seen arriving from the
  // IMDS's side (so no proxy in this namespace answered it).
  [[nodiscard]] const std::optional<TokenlessEvidence>& latest_tokenless() const noexcept {
    return latest_tokenless_;
  }
  // Forgets the callers last seen before `before` (a long-running watch keeps what is recent).
  void forget_before(std::chrono::system_clock::time_point before);

 private:
  std::size_t max_callers_;
  std::map<CallerKey, CallerStats> callers_;
  std::uint64_t overflowed_ = 0;
  std::optional<TokenlessEvidence> latest_tokenless_;
};

}  // namespace imds
