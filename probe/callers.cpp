// Classifying IMDS requests and answers, the connection table and the caller book; see
// callers.hpp.
#include "callers.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <iterator>

namespace imds {

namespace {

constexpr std::size_t kMaxMethod = 16;
constexpr std::size_t kMaxProduct = 40;
constexpr std::size_t kMaxVersion = 32;
constexpr std::size_t kMaxStatuses = 16;
constexpr std::size_t kMaxRecent = 16;

std::string_view as_text(std::span<const std::uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

char lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower(x) == lower(y); });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The products parse_user_agent names, as they spell themselves (compared without case).
struct KnownProduct {
  std::string_view spelled;
  std::string_view name;
};
constexpr std::array kKnownProducts{
    KnownProduct{"botocore", "botocore"},
    KnownProduct{"boto3", "boto3"},
    KnownProduct{"aws-cli", "aws-cli"},
    KnownProduct{"aws-sdk-go-v2", "aws-sdk-go-v2"},
    KnownProduct{"aws-sdk-go", "aws-sdk-go"},
    KnownProduct{"aws-sdk-js", "aws-sdk-js"},
    KnownProduct{"aws-sdk-nodejs", "aws-sdk-js"},
    KnownProduct{"aws-sdk-java", "aws-sdk-java"},
    KnownProduct{"aws-sdk-dotnet-coreclr", "aws-sdk-dotnet"},
    KnownProduct{"aws-sdk-dotnet", "aws-sdk-dotnet"},
    KnownProduct{"aws-sdk-rust", "aws-sdk-rust"},
    KnownProduct{"aws-sdk-cpp", "aws-sdk-cpp"},
    KnownProduct{"aws-sdk-ruby3", "aws-sdk-ruby"},
    KnownProduct{"aws-sdk-php", "aws-sdk-php"},
    KnownProduct{"curl", "curl"},
    KnownProduct{"wget", "wget"},
    KnownProduct{"cloud-init", "cloud-init"},
    KnownProduct{"amazon-ssm-agent", "ssm-agent"},
    KnownProduct{"ec2-metadata", "ec2-metadata"},
    KnownProduct{"python-urllib", "python-urllib"},
    KnownProduct{"python-requests", "python-requests"},
    KnownProduct{"python-urllib3", "python-urllib3"},
    KnownProduct{"go-http-client", "go-http-client"},
    KnownProduct{"imds-probe", "imds-probe"},
    KnownProduct{"imds-agent", "imds-agent"},
};

std::string keep(std::string_view s, std::size_t most, std::string_view extra) {
  std::string out;
  for (const char c : s) {
    if (out.size() == most) break;
    if (std::isalnum(static_cast<unsigned char>(c)) != 0 || extra.find(c) != std::string_view::npos) {
      out.push_back(c);
    }
  }
  return out;
}

// "/latest/meta-data/..." and the like: the category of an origin-form path.
PathCategory categorise(std::string_view path) {
  if (path.empty() || path.front() != '/') return PathCategory::other;
  path.remove_prefix(1);
  const auto cut = [](std::string_view& p) {
    const auto slash = p.find('/');
    const std::string_view first = p.substr(0, slash);
    p = slash == std::string_view::npos ? std::string_view{} : p.substr(slash + 1);
    return first;
  };
  const std::string_view version = cut(path);
  if (version.empty()) return PathCategory::other;
  const std::string_view section = cut(path);
  if (section == "api" && cut(path) == "token") return PathCategory::token;
  if (section == "user-data") return PathCategory::user_data;
  if (section == "dynamic") return PathCategory::dynamic;
  if (section == "meta-data") {
    const std::string_view first = cut(path);
    if (first == "identity-credentials") return PathCategory::credentials;
    if (first == "iam" && cut(path) == "security-credentials") return PathCategory::credentials;
    return PathCategory::meta_data;
  }
  return PathCategory::other;
}

// Sequence numbers compare modulo 2^32.
bool before(std::uint32_t a, std::uint32_t b) { return static_cast<std::int32_t>(a - b) < 0; }

}  // namespace

std::string_view to_string(PathCategory category) {
  switch (category) {
    case PathCategory::token: return "token";
    case PathCategory::meta_data: return "meta-data";
    case PathCategory::dynamic: return "dynamic";
    case PathCategory::credentials: return "credentials";
    case PathCategory::user_data: return "user-data";
    case PathCategory::other: return "other";
  }
  return "other";
}

std::string_view to_string(RequestKind kind) {
  switch (kind) {
    case RequestKind::token_put: return "token-put";
    case RequestKind::imdsv2: return "imdsv2";
    case RequestKind::imdsv1: return "imdsv1";
    case RequestKind::other: return "other";
  }
  return "other";
}

bool known_sdk_product(std::string_view product) {
  return std::any_of(kKnownProducts.begin(), kKnownProducts.end(),
                     [&](const KnownProduct& k) { return k.name == product; });
}

std::optional<Sdk> parse_user_agent(std::string_view value) {
  value = trim(value);
  const std::string_view first = value.substr(0, value.find_first_of(" \t"));
  const auto slash = first.find('/');
  const std::string_view product = first.substr(0, slash);
  const std::string_view version =
      slash == std::string_view::npos ? std::string_view{} : first.substr(slash + 1);
  Sdk sdk;
  for (const KnownProduct& k : kKnownProducts) {
    if (iequals(product, k.spelled)) sdk.product = k.name;
  }
  if (sdk.product.empty()) sdk.product = keep(product, kMaxProduct, ".-_");
  if (sdk.product.empty()) return std::nullopt;
  sdk.version = keep(version, kMaxVersion, ".-_+");
  return sdk;
}

std::optional<RequestStart> classify_request(std::span<const std::uint8_t> bytes) {
  std::string_view text = as_text(bytes);
  // The request line: METHOD SP TARGET SP HTTP/1.x, all of it within the capture.
  const auto line_end = text.find("\r\n");
  if (line_end == std::string_view::npos) return std::nullopt;
  const std::string_view line = text.substr(0, line_end);
  const auto sp1 = line.find(' ');
  const auto sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp1 == 0 || sp1 > kMaxMethod || sp2 <= sp1) {
    return std::nullopt;
  }
  const std::string_view method = line.substr(0, sp1);
  if (!std::all_of(method.begin(), method.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) {
    return std::nullopt;
  }
  const std::string_view version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return std::nullopt;
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  // Exactly one target, not empty: "GET  HTTP/1.1" or "GET a b HTTP/1.1" is no request line.
  if (target.empty() || target.find(' ') != std::string_view::npos) return std::nullopt;
  const auto query = target.find_first_of("?#");
  target = target.substr(0, query);

  RequestStart start;
  start.category = categorise(target);
  bool token_header = false;
  text.remove_prefix(line_end + 2);
  while (true) {
    const auto end = text.find("\r\n");
    if (end == std::string_view::npos || end == 0) break;  // cut off, or the blank line
    const std::string_view header = text.substr(0, end);
    text.remove_prefix(end + 2);
    const auto colon = header.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string_view name = header.substr(0, colon);
    if (iequals(name, "x-aws-ec2-metadata-token")) token_header = true;  // its value: never read
    if (iequals(name, "user-agent")) start.sdk = parse_user_agent(header.substr(colon + 1));
  }
  if (method == "PUT" && start.category == PathCategory::token) {
    start.kind = RequestKind::token_put;
  } else if (token_header) {
    start.kind = RequestKind::imdsv2;
  } else if (method == "GET" || method == "HEAD") {
    start.kind = RequestKind::imdsv1;
  } else {
    start.kind = RequestKind::other;
  }
  return start;
}

std::optional<int> response_status(std::span<const std::uint8_t> bytes) {
  const std::string_view text = as_text(bytes);
  if (text.size() < 12 || (text.substr(0, 9) != "HTTP/1.1 " && text.substr(0, 9) != "HTTP/1.0 ")) {
    return std::nullopt;
  }
  int status = 0;
  const auto [end, ec] = std::from_chars(text.data() + 9, text.data() + 12, status);
  if (ec != std::errc() || end != text.data() + 12 || status < 100 || status > 599) {
    return std::nullopt;
  }
  return status;
}

// ----- the connection table ----------------------------------------------------------------

ExchangeTracker::ExchangeTracker(std::vector<SocketName> imds, Limits limits)
    : imds_(std::move(imds)), limits_(limits) {}

bool ExchangeTracker::is_imds(const SocketName& end) const {
  return std::find(imds_.begin(), imds_.end(), end) != imds_.end();
}

ExchangeTracker::Advance ExchangeTracker::advance(Stream& stream, const TcpSegment& segment) {
  const auto length = static_cast<std::uint32_t>(segment.payload_bytes);
  if (!stream.started) return Advance::gap;
  if (segment.sequence == stream.next) {
    stream.next += length;
    return Advance::take;
  }
  if (before(segment.sequence, stream.next)) return Advance::copy;
  stream.next = segment.sequence + length;  // resynchronised after a gap
  return Advance::gap;
}

void ExchangeTracker::take(int ifindex, bool outgoing, std::span<const std::uint8_t> packet,
                           WatchClock::time_point now) {
  ++counters_.packets;
  const auto segment = parse_tcp_segment(packet);
  if (!segment) {
    ++counters_.malformed;
    return;
  }
  const SocketName source{segment->family, segment->source_address, segment->source_port};
  const SocketName destination{segment->family, segment->destination_address,
                               segment->destination_port};
  if (is_imds(destination)) {
    client_segment(*segment, packet, ifindex, outgoing, now);
  } else if (is_imds(source)) {
    server_segment(*segment, packet, ifindex, outgoing, now);
  } else {
    ++counters_.malformed;
  }
}

std::vector<ExchangeTracker::Opened> ExchangeTracker::take_opened() {
  std::vector<Opened> out;
  out.swap(opened_);
  return out;
}

void ExchangeTracker::set_process(const SocketName& client, const SocketName& server,
                                  const ProcessInfo& process) {
  const auto it = flows_.find(FlowKey{client, server});
  if (it == flows_.end()) return;
  it->second.process = process;
  for (Exchange& e : it->second.pending) e.process = process;
}

void ExchangeTracker::open_flow(const FlowKey& key, Flow flow) {
  if (flows_.size() >= limits_.max_flows) {
    auto oldest = std::min_element(flows_.begin(), flows_.end(), [](const auto& a, const auto& b) {
      return a.second.last < b.second.last;
    });
    counters_.requests_dropped += oldest->second.pending.size();
    oldest->second.pending.clear();
    ++counters_.flows_evicted;
    close_flow(oldest, false);
  }
  if (!flow.alias_of && !flow.origin.local) {
    by_isn_[{key.server, flow.client_isn}] = key;
  }
  flows_.insert_or_assign(key, std::move(flow));
}

void ExchangeTracker::close_flow(std::map<FlowKey, Flow>::iterator it, bool reset) {
  end_flow(it->second, reset);
  const auto isn = by_isn_.find({it->first.server, it->second.client_isn});
  if (isn != by_isn_.end() && isn->second == it->first) by_isn_.erase(isn);
  flows_.erase(it);
}

void ExchangeTracker::end_flow(Flow& flow, bool reset) {
  while (!flow.pending.empty()) {
    flow.pending.front().reset = reset;
    finish_front(flow);
  }
  flow.ended = true;
}

void ExchangeTracker::finish_front(Flow& flow) {
  finished_.push_back(std::move(flow.pending.front()));
  flow.pending.erase(flow.pending.begin());
  ++counters_.exchanges;
}

void ExchangeTracker::client_segment(const TcpSegment& segment,
                                     std::span<const std::uint8_t> packet, int ifindex,
                                     bool outgoing, WatchClock::time_point now) {
  const FlowKey key{{segment.family, segment.source_address, segment.source_port},
                    {segment.family, segment.destination_address, segment.destination_port}};
  auto it = flows_.find(key);
  if (segment.syn && !segment.ack) {
    if (it != flows_.end() && it->second.client_isn == segment.sequence) {
      ++counters_.copies;  // the same SYN on another interface, or retransmitted
      if (outgoing) it->second.egress_ifindex = ifindex;  // forwarded without NAT
      return;
    }
    if (it != flows_.end()) close_flow(it, false);  // the port was reused
    Flow flow;
    flow.client_isn = segment.sequence;
    flow.client = Stream{true, segment.sequence + 1};
    flow.last = now;
    flow.origin = FlowOrigin{outgoing, ifindex, key.client};
    if (outgoing) flow.egress_ifindex = ifindex;
    if (outgoing) {
      // Leaving with the initial sequence number of a flow that came in: the same connection
      // after masquerading, not one of this namespace's own.
      const auto original = by_isn_.find({key.server, segment.sequence});
      if (original != by_isn_.end() && flows_.contains(original->second)) {
        flow.alias_of = original->second;
        flow.origin.local = false;
      }
    }
    if (!flow.alias_of && opened_.size() < kMaxOpened) {
      opened_.push_back({key.client, key.server, flow.origin});
    }
    open_flow(key, std::move(flow));
    return;
  }
  if (it == flows_.end()) {
    ++counters_.unseen_connections;
    return;
  }
  Flow& flow = it->second;
  flow.last = now;
  if (flow.alias_of) return;  // its requests count once, on the original
  if (segment.payload_bytes > 0 && !flow.ended) {
    const Advance step = advance(flow.client, segment);
    if (step == Advance::copy) {
      ++counters_.copies;
      return;
    }
    if (step == Advance::gap) ++counters_.out_of_order;
    const auto start = classify_request(segment.captured_payload(packet));
    if (!start) {
      if (step == Advance::take && flow.pending.empty()) ++counters_.not_http;
    } else if (flow.pending.size() >= limits_.max_pending) {
      ++counters_.requests_dropped;
    } else {
      Exchange exchange;
      exchange.origin = flow.origin;
      exchange.request = *start;
      exchange.requested = now;
      exchange.process = flow.process;
      flow.pending.push_back(std::move(exchange));
    }
  }
  if (segment.rst || segment.fin) {
    // The client gave up (or is done): what it still waits for, it will not read. The flow
    // stays a little for the copies of these last segments.
    end_flow(flow, segment.rst);
  }
}

void ExchangeTracker::server_segment(const TcpSegment& segment,
                                     std::span<const std::uint8_t> packet, int ifindex,
                                     bool outgoing, WatchClock::time_point now) {
  FlowKey key{{segment.family, segment.destination_address, segment.destination_port},
              {segment.family, segment.source_address, segment.source_port}};
  auto it = flows_.find(key);
  if (it == flows_.end()) {
    ++counters_.unseen_connections;
    return;
  }
  // Arriving from the IMDS's side: by the interface the connection's SYN left by.
  const bool arrival = !outgoing && it->second.egress_ifindex != 0 &&
                       ifindex == it->second.egress_ifindex;
  bool delivery = false;
  if (it->second.alias_of) {
    // A NAT copy: the answer reached this namespace for the original flow.
    it->second.last = now;
    if (!arrival) return;
    it = flows_.find(*it->second.alias_of);
    if (it == flows_.end()) return;
  } else if (it->second.origin.local) {
    delivery = arrival;   // for this namespace's own connections arriving is delivering
    if (!arrival) return;  // (leaving: an IMDS on loopback; or in by another interface)
  } else {
    delivery = outgoing;   // a forwarded flow's answer leaving toward its client
  }
  Flow& flow = it->second;
  flow.last = now;
  if (segment.syn && segment.ack) {
    if (!flow.arrival.started) flow.arrival = Stream{true, segment.sequence + 1};
    if (!flow.delivery.started) flow.delivery = Stream{true, segment.sequence + 1};
    return;
  }
  const auto payload = segment.captured_payload(packet);
  const auto status = segment.payload_bytes > 0 ? response_status(payload) : std::nullopt;
  if (arrival && segment.payload_bytes > 0) {
    const Advance step = advance(flow.arrival, segment);
    if (step == Advance::copy) {
      ++counters_.copies;
    } else if (status) {
      const auto waiting = std::find_if(flow.pending.begin(), flow.pending.end(),
                                        [](const Exchange& e) { return !e.reached_here; });
      if (waiting == flow.pending.end()) {
        ++counters_.answers_without_request;
      } else {
        waiting->reached_here = true;
        waiting->seen_arriving = true;
        waiting->arrival_ttl = segment.ttl;
        waiting->status = status;
      }
    }
  }
  if (delivery && segment.payload_bytes > 0) {
    const Advance step = advance(flow.delivery, segment);
    if (step == Advance::copy) {
      if (!arrival) ++counters_.copies;
    } else if (status && !flow.pending.empty()) {
      Exchange& front = flow.pending.front();
      front.answered = true;
      front.status = status;
      if (!front.reached_here) {  // not seen arriving (the watch was on one interface only)
        front.reached_here = true;
        front.arrival_ttl = segment.ttl;
      }
      finish_front(flow);
    }
  }
  if (segment.rst) end_flow(flow, true);
}

std::vector<Exchange> ExchangeTracker::take_finished(WatchClock::time_point now) {
  for (auto it = flows_.begin(); it != flows_.end();) {
    Flow& flow = it->second;
    while (!flow.pending.empty() && now - flow.pending.front().requested >= limits_.answer_timeout) {
      finish_front(flow);
    }
    if (now - flow.last >= (flow.ended ? limits_.linger : limits_.idle_timeout)) {
      const auto next = std::next(it);
      close_flow(it, false);
      it = next;
    } else {
      ++it;
    }
  }
  return std::exchange(finished_, {});
}

std::vector<Exchange> ExchangeTracker::take_all() {
  while (!flows_.empty()) close_flow(flows_.begin(), false);
  return std::exchange(finished_, {});
}

// ----- the caller book -------------------------------------------------------------------

void CallerBook::forget_before(std::chrono::system_clock::time_point before) {
  std::erase_if(callers_, [&](const auto& entry) { return entry.second.last_seen < before; });
}

void CallerBook::add(const CallerPlace& place, const Exchange& exchange,
                     std::chrono::system_clock::time_point now) {
  CallerKey key{place.where, "", ""};
  if (exchange.request.sdk) {
    key.sdk_product = exchange.request.sdk->product;
    key.sdk_version = exchange.request.sdk->version;
  }
  auto it = callers_.find(key);
  if (it == callers_.end()) {
    if (callers_.size() >= max_callers_) {
      ++overflowed_;
      key = CallerKey{"other callers", "", ""};
    }
    it = callers_.try_emplace(key).first;
    if (it->second.first_seen == std::chrono::system_clock::time_point{}) {
      it->second.first_seen = now;
      it->second.container_id = place.container_id;
      it->second.container_name = place.container_name;
      it->second.netns_inode = place.netns_inode;
    }
  }
  CallerStats& s = it->second;
  s.last_seen = now;
  if (exchange.process) s.process = exchange.process;
  ++s.categories.at(static_cast<std::size_t>(exchange.request.category));
  if (exchange.status) {
    const int code = s.statuses.size() < kMaxStatuses || s.statuses.contains(*exchange.status)
                         ? *exchange.status
                         : 0;
    ++s.statuses[code];
  }
  const auto within_window = [&](WatchClock::time_point put, WatchClock::time_point get) {
    return get >= put && get - put <= kFallbackWindow;
  };
  switch (exchange.request.kind) {
    case RequestKind::token_put:
      ++s.token_puts;
      if (!exchange.answered) {
        ++s.token_puts_unanswered;
        if (exchange.reached_here) {
          ++s.token_puts_dropped_here;
          s.dropped_put_ttl = exchange.arrival_ttl;
        }
        s.last_unanswered_put = exchange.requested;
        // Tokenless GETs sent after this PUT but counted before its time ran out: fallbacks.
        for (auto r = s.recent_imdsv1.begin(); r != s.recent_imdsv1.end();) {
          if (within_window(exchange.requested, *r) && s.imdsv1 > 0) {
            --s.imdsv1;
            ++s.imdsv1_fallback;
            r = s.recent_imdsv1.erase(r);
          } else {
            ++r;
          }
        }
      }
      break;
    case RequestKind::imdsv2:
      ++s.imdsv2;
      break;
    case RequestKind::imdsv1:
      if (exchange.status == 200) ++s.imdsv1_ok;
      if (exchange.status == 401) ++s.imdsv1_unauthorized;
      if (exchange.seen_arriving && (exchange.status == 200 || exchange.status == 401) &&
          (!latest_tokenless_ || latest_tokenless_->seen <= now)) {
        latest_tokenless_ = TokenlessEvidence{now, *exchange.status, place.where};
      }
      if (s.last_unanswered_put && within_window(*s.last_unanswered_put, exchange.requested)) {
        ++s.imdsv1_fallback;
      } else {
        ++s.imdsv1;
        s.recent_imdsv1.push_back(exchange.requested);
        if (s.recent_imdsv1.size() > kMaxRecent) s.recent_imdsv1.erase(s.recent_imdsv1.begin());
      }
      break;
    case RequestKind::other:
      ++s.other;
      break;
  }
}

}  // namespace imds
