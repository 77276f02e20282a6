// Collection: every request of every target on one curl multi handle, sockets created inside
// the target's namespace, TTLs from packet sockets, predicted drops aborted early.
#include "collect.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "config.h"
#include "endpoint.hpp"
#include "hops.hpp"
#include "http.hpp"
#include "netns.hpp"
#include "packet_ttl.hpp"

namespace imds {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::size_t kMaxHeaderBytes = std::size_t{16} * 1024;
constexpr std::size_t kMaxTokenBytes = 4096;
constexpr std::size_t kMaxProbePathBytes = 512;
constexpr milliseconds kPollSlice{100};
constexpr std::size_t kRetiredPacketSocketsBatch = 64;
constexpr std::string_view kTokenPath = "/latest/api/token";
constexpr std::string_view kListingPath = "/latest/meta-data/";
constexpr std::array<std::string_view, 3> kIdentityPaths = {
    "/latest/meta-data/ami-id",
    "/latest/meta-data/placement/region",
    "/latest/meta-data/placement/availability-zone",
};

static_assert(kMaxRequestsPerTarget == 2 * (3 + kIdentityPaths.size() + 1));

std::size_t family_index(Family family) { return family == Family::v4 ? 0 : 1; }

// An unusable endpoint is a configuration error, which collect() throws.
Endpoint endpoint_or_throw(const std::string& text, Family family) {
  auto endpoint = parse_endpoint(text, family);
  if (!endpoint) {
    throw std::invalid_argument((family == Family::v4 ? "IPv4 endpoint " : "IPv6 endpoint ") +
                                endpoint.error().message);
  }
  return std::move(endpoint).value();
}

void validate(const CollectConfig& config, std::size_t target_count) {
  if (target_count > kMaxTargets) {
    throw std::invalid_argument("too many target namespaces: " + std::to_string(target_count) +
                                " (at most " + std::to_string(kMaxTargets) + ")");
  }
  const std::string& path = config.probe_path;
  if (path.empty() || path.front() != '/' || path.size() > kMaxProbePathBytes ||
      !plausible_token(path)) {
    throw std::invalid_argument("probe path '" + path +
                                "' must start with '/' and be printable ASCII without spaces");
  }
  if (is_forbidden_path(path)) {
    throw std::invalid_argument("probe path '" + path +
                                "' would touch credentials or user-data; refusing");
  }
  if (config.token_ttl_seconds < 1 || config.token_ttl_seconds > 21600) {
    throw std::invalid_argument("token TTL must be 1..21600 seconds");
  }
  if (config.max_parallel == 0) throw std::invalid_argument("max_parallel must be at least 1");
  if (config.request_bucket) {
    const std::size_t burst = config.request_bucket->rate().burst;
    const std::size_t needed = planned_requests(config, true);
    if (burst < needed) {
      throw std::invalid_argument("a request burst of " + std::to_string(burst) +
                                  " is less than the " + std::to_string(needed) +
                                  " requests one namespace sends");
    }
  }
  if (config.connect_timeout.count() <= 0 || config.request_timeout.count() <= 0 ||
      config.deadline.count() <= 0) {
    throw std::invalid_argument("timeouts and the deadline must be positive");
  }
}

std::optional<std::string> response_header(CURL* easy, const char* name) {
  curl_header* header = nullptr;
  if (curl_easy_header(easy, name, 0, CURLH_HEADER, -1, &header) != CURLHE_OK ||
      header == nullptr || header->value == nullptr) {
    return std::nullopt;
  }
  std::string value(header->value);
  if (value.size() > 256) value.resize(256);
  return value;
}

class Collector;

struct Request {
  Collector* owner = nullptr;
  std::size_t target = 0;
  Family family = Family::v4;
  std::size_t observation = 0;  // index into the target's observations
  Step step = Step::token_put;
  int netns = -1;              // where its socket is created (-1: own namespace)
  std::optional<int> min_ttl;  // IP_MINTTL / IPV6_MINHOPCOUNT (hop-limit search only)
  CurlEasy easy;
  CurlSlist headers;
  std::string token;  // token_put: the response body, a secret; moved out or wiped
  std::string body;
  bool body_truncated = false;
  bool token_oversized = false;
  std::size_t header_bytes = 0;
  bool headers_oversized = false;
  std::array<char, CURL_ERROR_SIZE> error_buffer{};
  int fd = -1;  // the socket curl asked us to open, while it is open
  std::optional<SocketName> local;  // the connection's local end, once connected
  int socket_errno = 0;
  bool cut_by_deadline = false;  // its timeout is what was left of the overall deadline
  bool retried = false;          // this is (or waits to be) the retry of an unanswered connect
  bool permit_delayed = false;   // the retry waited for the request bucket
  Clock::time_point started;

  // Back to a request not yet started, for the retry; the easy handle is out of the multi.
  void prepare_retry() {
    easy.reset();
    headers.reset();
    wipe(token);
    body.clear();
    body_truncated = false;
    token_oversized = false;
    header_bytes = 0;
    headers_oversized = false;
    error_buffer.fill('\0');
    fd = -1;
    local.reset();
    socket_errno = 0;
    cut_by_deadline = false;
    retried = true;
  }

  ~Request() { wipe(token); }
};

struct FamilyState {
  const Endpoint* endpoint = nullptr;
  std::optional<PacketTtlSocket> packets;
  std::optional<int> handshake_ttl;  // SYN-ACK TTL in this namespace (any of our connections)
  std::optional<int> put_ttl;        // token PUT response TTL here (at the host: the hop limit)
  bool put_succeeded = false;
  std::string token;  // secret: in memory only, wiped at the end
  Request* put = nullptr;
  std::size_t put_observation = 0;
  std::vector<std::size_t> token_followups;  // v2_get, listing, identity observations
  std::optional<std::size_t> v1_observation;

  FamilyState() = default;
  FamilyState(FamilyState&&) = default;
  FamilyState& operator=(FamilyState&&) = default;
  ~FamilyState() { wipe(token); }
};

struct TargetState {
  TargetObservations out;
  UniqueFd netns;
  std::vector<FamilyState> families;  // in CollectConfig order: v4, then v6
  std::size_t outstanding = 0;        // requests queued or in flight
  bool active = false;
  std::size_t permits = 0;  // taken from the request bucket and not used yet
  bool delayed = false;     // it waited for the request bucket
};

class Collector {
 public:
  Collector(const CollectConfig& config, const std::vector<NetnsTarget>& targets);
  Collector(const Collector&) = delete;
  Collector& operator=(const Collector&) = delete;
  ~Collector();

  CollectResult run();

  // curl callbacks
  static curl_socket_t open_socket(void* clientp, curlsocktype purpose, curl_sockaddr* address);
  static int close_socket(void* clientp, curl_socket_t fd);

 private:
  TargetState& target_of(const Request& request) { return targets_[request.target]; }
  FamilyState& family_of(const Request& request) {
    return target_of(request).families[family_index(request.family)];
  }
  HttpResult& result_of(const Request& request) {
    return target_of(request).out.observations[request.observation].result;
  }

  void build_observations(TargetState& state);
  bool schedule();
  void start_retries();
  bool take_permits(TargetState& state);
  void use_permit(const Request& request);
  bool wait_for_one_permit();
  void activate(TargetState& state);
  Request& make_request(TargetState& state, FamilyState& family, std::size_t observation);
  void configure(Request& request, milliseconds timeout);
  void start(Request& request);
  void finish(Request& request, CURLcode code);
  [[nodiscard]] bool worth_retrying(const Request& request, const HttpResult& result) const;
  void settle(Request& request);
  void abort(Request& request, DropPrediction prediction);
  void release(Request& request);
  void record_connection(Request& request, HttpResult& result);
  void after_put(TargetState& state, FamilyState& family);
  void read_packets();
  void observe_ports();
  void predict_dropped_puts();
  void expire_everything();
  void search_hop_limit(CollectResult& result);
  std::optional<bool> put_with_min_ttl(std::size_t host, FamilyState& family, int min_ttl);
  void set_distances();
  [[nodiscard]] milliseconds remaining() const;
  [[nodiscard]] std::string deadline_message() const {
    return "overall deadline of " + std::to_string(config_.deadline.count()) + " ms reached";
  }

  const CollectConfig& config_;
  NetnsSocketFactory sockets_;
  std::vector<Endpoint> endpoints_;
  std::vector<TargetState> targets_;
  std::optional<std::size_t> host_;
  std::size_t next_target_ = 0;
  std::deque<Request*> ready_;                  // follow-ups waiting for a free slot
  std::deque<Request*> retries_;                // unanswered connects waiting to be retried
  std::vector<std::unique_ptr<Request>> live_;  // queued or in flight
  std::size_t running_ = 0;                     // in flight (added to the multi handle)
  std::optional<std::chrono::microseconds> permit_wait_;  // the next namespace waits for permits
  std::unordered_map<int, Request*> by_fd_;
  bool packet_ttl_available_ = false;
  std::vector<UniqueFd> retired_packet_sockets_;  // closed in bulk: see close_packet_sockets
  Clock::time_point deadline_;
  CurlMulti multi_;  // declared last: cleaned up first, while everything it calls back exists
};

Collector::Collector(const CollectConfig& config, const std::vector<NetnsTarget>& targets)
    : config_(config), multi_(curl_multi_init()) {
  validate(config, targets.size());
  ensure_curl_initialised();
  if (!multi_) throw std::bad_alloc();
  endpoints_.reserve(2);
  endpoints_.push_back(endpoint_or_throw(config.endpoint_v4, Family::v4));
  if (config.probe_v6) endpoints_.push_back(endpoint_or_throw(config.endpoint_v6, Family::v6));
  curl_multi_setopt(multi_.get(), CURLMOPT_MAX_TOTAL_CONNECTIONS,
                    static_cast<long>(config.max_parallel));
  targets_.reserve(targets.size());
  for (const NetnsTarget& target : targets) {
    TargetState state;
    state.out.target = target;
    if (target.is_host) {
      state.out.distance = 0;
      if (!host_) host_ = targets_.size();
    }
    build_observations(state);
    targets_.push_back(std::move(state));
  }
  // The host goes first: its PUT response TTL is what lets container verdicts be predicted.
  if (host_ && *host_ != 0) std::swap(targets_[0], targets_[*host_]);
}

Collector::~Collector() {
  for (auto& request : live_) {
    if (request->easy) curl_multi_remove_handle(multi_.get(), request->easy.get());
  }
}

void Collector::build_observations(TargetState& state) {
  const auto add = [&](Step step, Family family, std::string_view path) {
    Observation observation;
    observation.step = step;
    observation.family = family;
    observation.path = path;
    observation.result.outcome = Outcome::skipped;
    observation.result.skip = SkipReason::not_started;
    state.out.observations.push_back(std::move(observation));
    return state.out.observations.size() - 1;
  };
  for (const Endpoint& endpoint : endpoints_) {
    FamilyState family;
    family.endpoint = &endpoint;
    family.put_observation = add(Step::token_put, endpoint.family, kTokenPath);
    family.token_followups.push_back(add(Step::v2_get, endpoint.family, config_.probe_path));
    const std::size_t listing = add(Step::listing, endpoint.family, kListingPath);
    if (config_.probe_listing) {
      family.token_followups.push_back(listing);
    } else {
      state.out.observations[listing].result.skip = SkipReason::listing_disabled;
    }
    if (state.out.target.is_host && config_.probe_identity) {
      for (const std::string_view path : kIdentityPaths) {
        family.token_followups.push_back(add(Step::identity, endpoint.family, path));
      }
    }
    const std::size_t v1 = add(Step::v1_get, endpoint.family, config_.probe_path);
    if (config_.probe_v1) {
      family.v1_observation = v1;
    } else {
      state.out.observations[v1].result.skip = SkipReason::v1_disabled;
    }
    state.families.push_back(std::move(family));
  }
}

milliseconds Collector::remaining() const {
  return std::max(milliseconds{0},
                  std::chrono::duration_cast<milliseconds>(deadline_ - Clock::now()));
}

CollectResult Collector::run() {
  deadline_ = Clock::now() + config_.deadline;
  std::vector<curl_waitfd> extra;
  while (schedule()) {
    if (remaining().count() == 0) {
      expire_everything();
      break;
    }
    int running = 0;
    curl_multi_perform(multi_.get(), &running);
    int queued = 0;
    while (CURLMsg* message = curl_multi_info_read(multi_.get(), &queued)) {
      if (message->msg != CURLMSG_DONE) continue;
      Request* request = nullptr;
      curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, &request);
      const CURLcode code = message->data.result;
      finish(*request, code);  // invalidates `message`
    }
    read_packets();
    observe_ports();
    predict_dropped_puts();
    // Start what became possible at once rather than after the next wait.
    if (!permit_wait_ && (running_ == 0 || (!ready_.empty() && running_ < config_.max_parallel))) {
      continue;
    }
    extra.clear();
    for (const TargetState& state : targets_) {
      if (!state.active) continue;
      for (const FamilyState& family : state.families) {
        if (family.packets) extra.push_back({family.packets->fd(), CURL_WAIT_POLLIN, 0});
      }
    }
    auto wait = std::min(remaining(), kPollSlice);
    if (permit_wait_) wait = std::min(wait, std::chrono::ceil<milliseconds>(*permit_wait_));
    curl_multi_poll(multi_.get(), extra.data(), static_cast<unsigned>(extra.size()),
                    static_cast<int>(std::max(milliseconds{1}, wait).count()), nullptr);
  }
  close_packet_sockets(retired_packet_sockets_);
  CollectResult result;
  if (config_.exact_hop_limit_search) search_hop_limit(result);
  set_distances();
  result.packet_ttl_available = packet_ttl_available_;
  result.proxy = collect_proxy_environment();
  for (TargetState& state : targets_) {
    for (FamilyState& family : state.families) wipe(family.token);
  }
  // Back to the caller's order.
  if (host_ && *host_ != 0) std::swap(targets_[0], targets_[*host_]);
  result.targets.reserve(targets_.size());
  for (TargetState& state : targets_) result.targets.push_back(std::move(state.out));
  return result;
}

// Starts what fits; returns false once nothing is queued, in flight or left to activate.
bool Collector::schedule() {
  permit_wait_.reset();
  start_retries();
  while (!ready_.empty() && running_ < config_.max_parallel) {
    Request* request = ready_.front();
    ready_.pop_front();
    start(*request);
  }
  // A retry waiting for a permit goes before namespaces not started yet.
  while (next_target_ < targets_.size() && ready_.empty() && retries_.empty()) {
    const std::size_t needed = endpoints_.size() * (config_.probe_v1 ? 2 : 1);
    if (running_ != 0 && running_ + needed > config_.max_parallel) break;
    if (!take_permits(targets_[next_target_])) break;
    activate(targets_[next_target_++]);
  }
  return !live_.empty() || next_target_ < targets_.size();
}

// The request bound: a namespace starts with the permits for every request it may send.
// When they come too late for the deadline, it and those after it are deferred: never
// started, so they keep SkipReason::not_started and no verdict is made up for them.
bool Collector::take_permits(TargetState& state) {
  const auto& bucket = config_.request_bucket;
  if (!bucket) return true;
  const std::size_t needed = planned_requests(config_, state.out.target.is_host);
  if (bucket->try_take(needed)) {
    state.permits = needed;
    return true;
  }
  const std::chrono::microseconds wait = bucket->time_until(needed);
  if (wait == std::chrono::microseconds::max() || wait + config_.request_timeout > remaining()) {
    bucket->count_deferred(targets_.size() - next_target_);
    next_target_ = targets_.size();
    return false;
  }
  state.delayed = true;
  permit_wait_ = wait;
  return false;
}

void Collector::use_permit(const Request& request) {
  if (!config_.request_bucket) return;
  TargetState& state = target_of(request);
  if (request.retried) {
    // Its permit was taken for it alone (start_retries): the namespace's are for its plan.
    config_.request_bucket->count_sent(request.permit_delayed);
    return;
  }
  if (state.permits > 0) --state.permits;
  config_.request_bucket->count_sent(state.delayed);
}

// A retry is one more request: it takes its own permit, waiting for one while the retry can
// still finish before the deadline. When it cannot, the first attempt's failure stands.
void Collector::start_retries() {
  while (!retries_.empty() && running_ < config_.max_parallel) {
    Request& request = *retries_.front();
    if (remaining() < config_.connect_timeout) {
      retries_.pop_front();
      settle(request);
      continue;
    }
    if (const auto& bucket = config_.request_bucket; bucket && !bucket->try_take(1)) {
      const std::chrono::microseconds wait = bucket->time_until(1);
      if (wait != std::chrono::microseconds::max() &&
          wait + config_.connect_timeout <= remaining()) {
        request.permit_delayed = true;
        permit_wait_ = wait;
        return;
      }
      retries_.pop_front();
      settle(request);
      continue;
    }
    retries_.pop_front();
    HttpResult& result = result_of(request);
    result = HttpResult{};
    result.retried = true;
    start(request);
  }
}

// For the IP_MINTTL search, one request at a time: waits (within the deadline) for a permit.
bool Collector::wait_for_one_permit() {
  const auto& bucket = config_.request_bucket;
  if (!bucket) return true;
  bool delayed = false;
  while (!bucket->try_take(1)) {
    const std::chrono::microseconds wait = bucket->time_until(1);
    if (wait == std::chrono::microseconds::max() || wait + config_.search_timeout > remaining()) {
      return false;
    }
    delayed = true;
    std::this_thread::sleep_for(wait);
  }
  bucket->count_sent(delayed);
  return true;
}

void Collector::activate(TargetState& state) {
  const NetnsTarget& target = state.out.target;
  if (!target.is_host) {
    auto opened = sockets_.open_namespace(target.path, target.inode);
    if (!opened) {
      if (config_.request_bucket) config_.request_bucket->give_back(state.permits);
      state.permits = 0;
      const std::string& error = opened.error().message;
      state.out.error = error;
      for (Observation& observation : state.out.observations) {
        observation.result.skip = SkipReason::namespace_not_entered;
      }
      return;
    }
    state.netns = std::move(opened).value();
  }
  state.active = true;
  for (FamilyState& family : state.families) {
    if (config_.packet_ttl) {
      auto opened = PacketTtlSocket::open(sockets_, state.netns.get(), family.endpoint->address);
      if (opened) {
        family.packets.emplace(std::move(opened).value());
        packet_ttl_available_ = true;
      }  // else: no CAP_NET_RAW (or no AF_PACKET); TTLs stay unknown, nothing else changes
    }
  }
  for (FamilyState& family : state.families) {
    Request& put = make_request(state, family, family.put_observation);
    family.put = &put;
    start(put);
    if (family.v1_observation) start(make_request(state, family, *family.v1_observation));
  }
}

Request& Collector::make_request(TargetState& state, FamilyState& family, std::size_t observation) {
  const Observation& planned = state.out.observations[observation];
  // The last line of defence; configuration validation refuses such paths long before.
  if (is_forbidden_path(planned.path)) {
    throw std::logic_error("refusing to request a path that carries secrets: " + planned.path);
  }
  auto request = std::make_unique<Request>();
  request->owner = this;
  request->target = static_cast<std::size_t>(&state - targets_.data());
  request->family = family.endpoint->family;
  request->observation = observation;
  request->step = planned.step;
  request->netns = state.netns.get();
  live_.push_back(std::move(request));
  ++state.outstanding;
  return *live_.back();
}

void Collector::configure(Request& request, milliseconds timeout) {
  request.easy.reset(curl_easy_init());
  if (!request.easy) throw std::bad_alloc();
  CURL* easy = request.easy.get();
  const FamilyState& family = family_of(request);
  const Observation& planned = target_of(request).out.observations[request.observation];
  const std::string url = family.endpoint->base + planned.path;

  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_PRIVATE, &request);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, request.error_buffer.data());
  // Only plain HTTP to exactly this address: no proxy, no redirects, no other schemes.
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http");
  curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http");
  curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(easy, CURLOPT_PROXY, "");
  curl_easy_setopt(easy, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
  // libcurl copies string options.
  curl_easy_setopt(easy, CURLOPT_USERAGENT,
                   config_.user_agent.empty() ? "imds-probe/" IMDS_VERSION
                                              : config_.user_agent.c_str());
  curl_easy_setopt(easy, CURLOPT_IPRESOLVE,
                   request.family == Family::v4 ? CURL_IPRESOLVE_V4 : CURL_IPRESOLVE_V6);
  // Every connection belongs to one namespace: never share one between requests.
  curl_easy_setopt(easy, CURLOPT_FRESH_CONNECT, 1L);
  curl_easy_setopt(easy, CURLOPT_FORBID_REUSE, 1L);
  const long total = std::max(1L, static_cast<long>(timeout.count()));
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, total);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                   std::min(total, static_cast<long>(config_.connect_timeout.count())));
  curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, &Collector::open_socket);
  curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, &request);
  curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, &Collector::close_socket);
  curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, this);

  using WriteFn = size_t (*)(char*, size_t, size_t, void*);
  const WriteFn on_header = [](char* data, size_t size, size_t count, void* user) -> size_t {
    auto* r = static_cast<Request*>(user);
    r->header_bytes += size * count;
    if (r->header_bytes > kMaxHeaderBytes) {
      r->headers_oversized = true;
      return 0;
    }
    (void)data;  // values are read afterwards with curl_easy_header()
    return size * count;
  };
  const WriteFn on_body = [](char* data, size_t size, size_t count, void* user) -> size_t {
    auto* r = static_cast<Request*>(user);
    const std::size_t bytes = size * count;
    if (r->step == Step::token_put) {
      if (r->token.size() + bytes > kMaxTokenBytes) {
        r->token_oversized = true;
        return 0;
      }
      r->token.append(data, bytes);
      return bytes;
    }
    const std::size_t room = r->owner->config_.max_body_bytes - r->body.size();
    if (bytes > room) {
      r->body.append(data, room);
      r->body_truncated = true;
      return 0;  // enough seen: stop the transfer
    }
    r->body.append(data, bytes);
    return bytes;
  };
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &request);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &request);

  if (request.step == Step::token_put) {
    // PUT with Content-Length: 0; the IMDS answers 417 to `Expect: 100-continue`.
    using ReadFn = size_t (*)(char*, size_t, size_t, void*);
    const ReadFn nothing = [](char*, size_t, size_t, void*) -> size_t { return 0; };
    curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(0));
    curl_easy_setopt(easy, CURLOPT_READFUNCTION, nothing);
    append_header(request.headers, "X-aws-ec2-metadata-token-ttl-seconds: " +
                                       std::to_string(config_.token_ttl_seconds));
    append_header(request.headers, "Expect:");
  } else if (request.step != Step::v1_get && !family.token.empty()) {
    std::string line = "X-aws-ec2-metadata-token: " + family.token;
    append_header(request.headers, line);
    wipe(line);
  }
  if (request.headers) curl_easy_setopt(easy, CURLOPT_HTTPHEADER, request.headers.get());
}

void Collector::start(Request& request) {
  const milliseconds left = remaining();
  request.cut_by_deadline = left < config_.request_timeout;
  configure(request, std::min(config_.request_timeout, left));
  request.started = Clock::now();
  use_permit(request);
  HttpResult& result = result_of(request);
  result.skip = SkipReason::none;
  result.outcome = Outcome::timeout;  // until it ends otherwise
  if (curl_multi_add_handle(multi_.get(), request.easy.get()) != CURLM_OK) {
    result.outcome = Outcome::error;
    result.error = "curl could not start the transfer";
    request.easy.reset();
    if (request.step == Step::token_put) {
      family_of(request).put = nullptr;
      after_put(target_of(request), family_of(request));
    }
    release(request);
    return;
  }
  ++running_;
}

curl_socket_t Collector::open_socket(void* clientp, curlsocktype purpose, curl_sockaddr* address) {
  auto* request = static_cast<Request*>(clientp);
  if (purpose != CURLSOCKTYPE_IPCXN) return CURL_SOCKET_BAD;
  const int fd = request->owner->sockets_.socket_in(request->netns, address->family,
                                                    address->socktype, address->protocol);
  if (fd < 0) {
    request->socket_errno = -fd;
    return CURL_SOCKET_BAD;
  }
  if (request->min_ttl) {
    const bool v4 = address->family == AF_INET;
    const int level = v4 ? IPPROTO_IP : IPPROTO_IPV6;
    const int option = v4 ? IP_MINTTL : IPV6_MINHOPCOUNT;
    const int value = *request->min_ttl;
    if (::setsockopt(fd, level, option, &value, sizeof value) != 0) {
      request->socket_errno = errno;
      ::close(fd);
      return CURL_SOCKET_BAD;
    }
  }
  request->fd = fd;
  request->owner->by_fd_[fd] = request;
  return fd;
}

int Collector::close_socket(void* clientp, curl_socket_t fd) {
  auto* self = static_cast<Collector*>(clientp);
  if (const auto found = self->by_fd_.find(fd); found != self->by_fd_.end()) {
    Request* request = found->second;
    if (!request->local) request->local = socket_name_of(fd);
    request->fd = -1;
    self->by_fd_.erase(found);
  }
  return ::close(fd);
}

void Collector::finish(Request& request, CURLcode code) {
  CURL* easy = request.easy.get();
  HttpResult& result = result_of(request);

  long os_errno = 0;
  curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os_errno);
  result.outcome = outcome_from_curl(code, os_errno, request.error_buffer.data());
  if (code != CURLE_OK) {
    result.error =
        request.error_buffer[0] != '\0' ? request.error_buffer.data() : curl_easy_strerror(code);
  }
  long status = 0;
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
  if (code == CURLE_WRITE_ERROR && request.body_truncated && status != 0) {
    result.outcome = Outcome::http;  // we stopped reading at the cap, the answer was there
    result.error.clear();
  }
  if (request.headers_oversized) {
    result.outcome = Outcome::error;
    result.error = "response headers larger than " + std::to_string(kMaxHeaderBytes) + " bytes";
  } else if (request.token_oversized) {
    result.outcome = Outcome::error;
    result.error = "token response larger than " + std::to_string(kMaxTokenBytes) + " bytes";
  } else if (request.socket_errno != 0) {
    result.outcome = Outcome::error;
    result.error =
        errno_message("cannot create a socket in the target namespace", request.socket_errno);
  }
  if (result.outcome == Outcome::timeout && request.cut_by_deadline) {
    result.cut_by_deadline = true;
    result.error = deadline_message();
  }
  if (result.outcome == Outcome::http) {
    result.status = static_cast<int>(status);
    result.server = response_header(easy, "Server");
    if (auto ttl = response_header(easy, "X-aws-ec2-metadata-token-ttl-seconds")) {
      result.token_ttl_seconds = parse_token_ttl(*ttl);
    }
  }
  if (request.step != Step::token_put) {
    result.body = std::move(request.body);
    result.body_truncated = request.body_truncated;
  }
  record_connection(request, result);
  if (worth_retrying(request, result)) {
    curl_multi_remove_handle(multi_.get(), easy);
    --running_;
    if (request.fd >= 0) by_fd_.erase(request.fd);  // curl may close it later, unknown to us
    request.prepare_retry();
    retries_.push_back(&request);
    return;
  }
  settle(request);
}

// No SYN-ACK came back before the connect timeout. A firewall drops every SYN, but so can a
// moment on the way: the 1024 packets/s the link-local services share, or (seen in the lab)
// a server still holding the port in TIME_WAIT. The kernel would resend the SYN only after
// 1 s, as late as the connect timeout, so one fresh connection is tried at once instead.
bool Collector::worth_retrying(const Request& request, const HttpResult& result) const {
  return !request.retried && !request.min_ttl && request.socket_errno == 0 &&
         result.outcome == Outcome::timeout && !result.connected && !result.cut_by_deadline &&
         remaining() >= config_.connect_timeout;
}

// A request's last attempt is over: a token PUT hands its token (or its failure) to its
// follow-ups, and the request ends.
void Collector::settle(Request& request) {
  if (request.step == Step::token_put) {
    FamilyState& family = family_of(request);
    HttpResult& result = result_of(request);
    family.put = nullptr;
    if (result.ttl) family.put_ttl = result.ttl;
    // EC2 sends the bare token; tolerate a line ending added by something in between.
    while (!request.token.empty() &&
           std::isspace(static_cast<unsigned char>(request.token.back())) != 0) {
      request.token.pop_back();
    }
    if (result.outcome == Outcome::http && result.status == 200 && plausible_token(request.token)) {
      family.token = std::move(request.token);
      family.put_succeeded = true;
    } else if (result.outcome == Outcome::http && result.status == 200) {
      result.outcome = Outcome::error;
      result.error = "HTTP 200, but the body is not a token";
    }
    wipe(request.token);
    after_put(target_of(request), family);
  }
  release(request);
}

void Collector::after_put(TargetState& state, FamilyState& family) {
  if (family.put_succeeded) {
    for (const std::size_t observation : family.token_followups) {
      ready_.push_back(&make_request(state, family, observation));
    }
    return;
  }
  // The follow-ups' words come from the PUT's own observation.
  for (const std::size_t observation : family.token_followups) {
    state.out.observations[observation].result.skip = SkipReason::no_token;
  }
}

void Collector::abort(Request& request, DropPrediction prediction) {
  HttpResult& result = result_of(request);
  FamilyState& family = family_of(request);
  result.outcome = Outcome::skipped;
  result.skip = SkipReason::predicted_drop;
  result.prediction = prediction;
  record_connection(request, result);
  if (request.step == Step::token_put) {
    family.put = nullptr;
    wipe(request.token);
    after_put(target_of(request), family);
  }
  release(request);
}

// What is known about a request's connection however it ended: latency, whether the
// handshake completed, and the TTLs its packet socket saw.
void Collector::record_connection(Request& request, HttpResult& result) {
  CURL* easy = request.easy.get();
  result.latency =
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - request.started);
  curl_off_t connect_us = 0;
  curl_easy_getinfo(easy, CURLINFO_CONNECT_TIME_T, &connect_us);
  result.connected = connect_us > 0;
  if (!request.local && request.fd >= 0) request.local = socket_name_of(request.fd);
  if (!request.local) {
    char* address = nullptr;
    long port = 0;
    curl_easy_getinfo(easy, CURLINFO_LOCAL_IP, &address);
    curl_easy_getinfo(easy, CURLINFO_LOCAL_PORT, &port);
    request.local = socket_name_from(address, port);
  }
  FamilyState& family = family_of(request);
  if (!family.packets || !request.local) return;
  family.packets->drain();
  const PortTtls ttls = family.packets->at(*request.local);
  result.handshake_ttl = ttls.handshake_ttl;
  result.ttl = ttls.data_ttl;
  if (ttls.handshake_ttl) result.connected = true;
  if (!family.handshake_ttl) family.handshake_ttl = ttls.handshake_ttl;
  family.packets->forget(*request.local);
}

// Ends a request's life: out of the multi handle, socket bookkeeping, target bookkeeping.
void Collector::release(Request& request) {
  if (request.easy) {
    curl_multi_remove_handle(multi_.get(), request.easy.get());
    --running_;
  }
  if (request.fd >= 0) by_fd_.erase(request.fd);  // curl may close it later, unknown to us
  request.easy.reset();
  TargetState& state = target_of(request);
  if (--state.outstanding == 0 && state.active) {
    // Done with this namespace: give its descriptors back before activating more.
    for (FamilyState& family : state.families) {
      if (!family.packets) continue;
      retired_packet_sockets_.push_back(std::move(*family.packets).take_fd());
      family.packets.reset();
    }
    if (retired_packet_sockets_.size() >= kRetiredPacketSocketsBatch) {
      close_packet_sockets(retired_packet_sockets_);
    }
    state.netns.reset();
    state.active = false;
    // Permits of requests it never sent (no token, no follow-ups) go back.
    if (config_.request_bucket) config_.request_bucket->give_back(state.permits);
    state.permits = 0;
  }
  const auto found = std::find_if(live_.begin(), live_.end(),
                                  [&](const auto& owned) { return owned.get() == &request; });
  if (found != live_.end()) live_.erase(found);
}

void Collector::read_packets() {
  for (TargetState& state : targets_) {
    if (!state.active) continue;
    for (FamilyState& family : state.families) {
      if (family.packets) family.packets->drain();
    }
  }
}

// Learns each live connection's local port (the kernel picks it at connect()) and what the
// packet socket has seen for it so far.
void Collector::observe_ports() {
  for (const auto& owned : live_) {
    Request& request = *owned;
    if (!request.easy) continue;  // queued, not started
    if (!request.local && request.fd >= 0) request.local = socket_name_of(request.fd);
    if (!request.local) continue;
    FamilyState& family = family_of(request);
    if (!family.packets) continue;
    const PortTtls ttls = family.packets->at(*request.local);
    if (!family.handshake_ttl && ttls.handshake_ttl) family.handshake_ttl = ttls.handshake_ttl;
    if (request.step == Step::token_put && !family.put_ttl && ttls.data_ttl) {
      family.put_ttl = ttls.data_ttl;
    }
  }
}

// The host's PUT response TTL and a namespace's distance decide whether that namespace's
// PUT response can arrive (hops.hpp): when it cannot, say so now instead of sitting out the
// timeout.
void Collector::predict_dropped_puts() {
  if (!host_) return;
  const TargetState& host = targets_[0];
  for (std::size_t f = 0; f < endpoints_.size(); ++f) {
    const FamilyState& at_host = host.families[f];
    if (!at_host.put_ttl || !at_host.handshake_ttl) continue;
    const int hop_limit = *at_host.put_ttl;
    for (std::size_t t = 1; t < targets_.size(); ++t) {
      TargetState& state = targets_[t];
      if (!state.active) continue;
      FamilyState& family = state.families[f];
      // A PUT waiting for its retry has no connection to abort; its retry may be.
      if (family.put == nullptr || !family.put->easy || !family.handshake_ttl) continue;
      const auto distance = distance_from_handshakes(*at_host.handshake_ttl, *family.handshake_ttl);
      if (!distance || put_response_crosses(hop_limit, *distance)) continue;
      abort(*family.put, DropPrediction{hop_limit, *distance});
    }
  }
}

void Collector::expire_everything() {
  // Retries that did not start: the first attempt's failure stands.
  while (!retries_.empty()) {
    Request& request = *retries_.front();
    retries_.pop_front();
    settle(request);
  }
  const std::string message = deadline_message();
  while (!live_.empty()) {
    Request& request = *live_.front();
    HttpResult& result = result_of(request);
    if (request.easy) {
      result.outcome = Outcome::timeout;
      result.cut_by_deadline = true;
      result.error = message;
      record_connection(request, result);
      if (request.step == Step::token_put) family_of(request).put = nullptr;
    }  // else: queued, never started; keeps SkipReason::not_started
    release(request);
  }
  ready_.clear();
}

// Unprivileged exact hop limit (IMDS.md): with IP_MINTTL = k the kernel drops the PUT response
// unless it arrives with TTL >= k. The host got a token, so k = 1 works; find the largest k.
void Collector::search_hop_limit(CollectResult& result) {
  if (!host_) return;
  for (std::size_t f = 0; f < endpoints_.size(); ++f) {
    FamilyState& family = targets_[0].families[f];
    if (!family.put_succeeded) continue;
    int works = 1;
    int fails = kMaxHopLimit + 1;
    while (fails - works > 1) {
      const int middle = works + (fails - works) / 2;
      const std::optional<bool> ok = put_with_min_ttl(0, family, middle);
      if (!ok) return;  // out of time or a local error: no claim at all
      (*ok ? works : fails) = middle;
    }
    result.searched_hop_limit = works;
    return;
  }
}

std::optional<bool> Collector::put_with_min_ttl(std::size_t host, FamilyState& family,
                                                int min_ttl) {
  const milliseconds budget = std::min(config_.search_timeout, remaining());
  if (budget.count() < 10) return std::nullopt;
  TargetState& state = targets_[host];
  // A scratch observation: the search's PUTs are not part of the reported observations.
  Observation scratch;
  scratch.step = Step::token_put;
  scratch.family = family.endpoint->family;
  scratch.path = kTokenPath;
  state.out.observations.push_back(scratch);
  const std::size_t index = state.out.observations.size() - 1;
  if (!wait_for_one_permit()) {
    state.out.observations.pop_back();
    return std::nullopt;
  }
  Request& request = make_request(state, family, index);
  request.min_ttl = min_ttl;
  configure(request, budget);
  request.started = Clock::now();
  const CURLcode code = curl_easy_perform(request.easy.get());
  long status = 0;
  curl_easy_getinfo(request.easy.get(), CURLINFO_RESPONSE_CODE, &status);
  std::optional<bool> answer;
  if (request.socket_errno == 0) {
    const Outcome outcome = outcome_from_curl(code, 0, request.error_buffer.data());
    if (code == CURLE_OK) {
      answer = status == 200 && plausible_token(request.token);
    } else if (outcome == Outcome::timeout || outcome == Outcome::reset) {
      answer = false;  // the response was dropped by IP_MINTTL (or the server gave up)
    }
  }
  wipe(request.token);
  request.easy.reset();
  --state.outstanding;
  live_.pop_back();
  state.out.observations.pop_back();
  return answer;
}

// The one place a target's distance is decided: the host is 0, others from SYN-ACK TTLs,
// and a simulated container is one veth hop away by construction when TTLs cannot show it.
void Collector::set_distances() {
  for (TargetState& state : targets_) {
    if (state.out.target.is_host) {
      state.out.distance = 0;
      continue;
    }
    if (host_) {
      const TargetState& host = targets_[0];
      for (std::size_t f = 0; f < endpoints_.size() && !state.out.distance; ++f) {
        const auto& at_host = host.families[f].handshake_ttl;
        const auto& here = state.families[f].handshake_ttl;
        if (at_host && here) state.out.distance = distance_from_handshakes(*at_host, *here);
      }
    }
    if (!state.out.distance && state.out.target.source == TargetSource::simulated) {
      state.out.distance = 1;
    }
  }
}

}  // namespace

std::size_t planned_requests(const CollectConfig& config, bool is_host) {
  std::size_t per_family = 2;  // token PUT, GET with the token
  if (config.probe_listing) ++per_family;
  if (is_host && config.probe_identity) per_family += kIdentityPaths.size();
  if (config.probe_v1) ++per_family;
  return per_family * (config.probe_v6 ? 2 : 1);
}

CollectResult collect(const CollectConfig& config, const std::vector<NetnsTarget>& targets) {
  Collector collector(config, targets);
  return collector.run();
}

}  // namespace imds
