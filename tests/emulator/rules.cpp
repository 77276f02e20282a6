// The IMDS response rules (IMDS.md), the token store, options with a pending change, and
// the request log. Pure apart from the CSPRNG used for tokens.
#include "rules.hpp"

#include <sys/random.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <system_error>

namespace imds::emu {
namespace {

constexpr std::size_t kTokenLength = 56;
constexpr std::size_t kMaxLoggedPath = 2048;
constexpr std::size_t kMaxLoggedTtl = 64;

bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; };
    return lower(x) == lower(y);
  });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

const std::string* find_header(const std::vector<Header>& headers, std::string_view name) {
  for (const auto& h : headers) {
    if (iequals(h.name, name)) return &h.value;
  }
  return nullptr;
}

std::string bounded(std::string_view s, std::size_t limit) {
  return std::string(s.substr(0, limit));
}

void fill_random(void* data, std::size_t size) {
  auto* p = static_cast<unsigned char*>(data);
  while (size > 0) {
    const ssize_t n = ::getrandom(p, size, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "getrandom");
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

// The TTL a token PUT asks for: 1..21600 whole seconds, digits only.
std::optional<long> parse_token_ttl(const std::string* value) {
  if (value == nullptr) return std::nullopt;
  const std::string_view v = trim(*value);
  if (v.empty() || v.size() > 10) return std::nullopt;
  if (!std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  long ttl = 0;
  const auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), ttl);
  if (ec != std::errc{} || ptr != v.data() + v.size()) return std::nullopt;
  if (ttl < 1 || ttl > kMaxTokenTtlSeconds) return std::nullopt;
  return ttl;
}

// Real IMDS error pages are small XHTML documents.
std::string xhtml_page(int status, std::string_view reason) {
  const std::string title = std::to_string(status) + " - " + std::string(reason);
  return "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n"
         "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n"
         "\t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n"
         "<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n"
         " <head>\n"
         "  <title>" +
         title +
         "</title>\n"
         " </head>\n"
         " <body>\n"
         "  <h1>" +
         title +
         "</h1>\n"
         " </body>\n"
         "</html>\n";
}

Response base(int status) {
  Response r;
  r.status = status;
  r.headers = {{"Server", "EC2ws"}, {"Connection", "close"}};
  return r;
}

Response empty(int status) { return base(status); }

Response page(int status, std::string_view reason) {
  Response r = base(status);
  r.headers.push_back({"Content-Type", "text/html"});
  r.body = xhtml_page(status, reason);
  return r;
}

Response text(std::string body) {
  Response r = base(200);
  r.headers.push_back({"Content-Type", "text/plain"});
  r.body = std::move(body);
  return r;
}

Response unauthorized(const Options& o) {
  if (o.unauthorized_body == UnauthorizedBody::empty) return empty(401);
  return page(401, "Unauthorized");
}

// "/latest/api/token/", "/2021-03-23/api/token", "/latest/api/token/x": a token path that
// is not the one IMDS answers on.
bool is_other_token_path(std::string_view path) {
  if (path.empty() || path.front() != '/') return false;
  path.remove_prefix(1);
  const auto slash = path.find('/');
  if (slash == std::string_view::npos || slash == 0) return false;
  const std::string_view rest = path.substr(slash);
  return rest == "/api/token" || rest.starts_with("/api/token/");
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) {
    if (!out.empty()) out += '\n';
    out += l;
  }
  return out;
}

std::string hostname(const Options& o) {
  if (o.region == "us-east-1") return "ip-10-0-0-12.ec2.internal";
  return "ip-10-0-0-12." + o.region + ".compute.internal";
}

// Listing of the directory `dir` ("" for /latest/) from the leaves of `tree`.
std::optional<std::string> listing(const std::map<std::string, std::string>& tree,
                                   const std::string& dir, const Options& o) {
  const std::string prefix = dir.empty() ? "" : dir + "/";
  std::set<std::string> children;
  for (const auto& [path, value] : tree) {
    if (!path.starts_with(prefix)) continue;
    const std::string rest = path.substr(prefix.size());
    const auto slash = rest.find('/');
    // /latest/ lists its categories without the trailing '/' that deeper listings use.
    const std::size_t keep = dir.empty() ? slash : slash + 1;
    children.insert(slash == std::string::npos ? rest : rest.substr(0, keep));
  }
  if (dir == "meta-data" && o.tags_enabled) children.insert("tags/");
  if (children.empty()) return std::nullopt;
  return join_lines(std::vector<std::string>(children.begin(), children.end()));
}

// Body for GET /latest/<rel> (rel without a leading slash), or nullopt for 404.
std::optional<std::string> lookup(const Options& o, std::string rel) {
  if (rel.ends_with('/')) rel.pop_back();
  if (rel.find("//") != std::string::npos || rel.ends_with('/')) return std::nullopt;

  // Tags in metadata: a directory only when enabled. With tags disabled one report shows
  // tags/instance answering 200 with an empty body [seen once]: imitated.
  if (rel == "meta-data/tags" || rel.starts_with("meta-data/tags/")) {
    if (!o.tags_enabled) {
      if (rel == "meta-data/tags/instance") return std::string();
      return std::nullopt;
    }
    if (rel == "meta-data/tags") return std::string("instance");
    if (rel == "meta-data/tags/instance") {
      std::vector<std::string> keys;
      keys.reserve(o.tags.size());
      for (const auto& [k, v] : o.tags) keys.push_back(k);
      return join_lines(keys);
    }
    constexpr std::string_view kTagPrefix = "meta-data/tags/instance/";
    if (rel.starts_with(kTagPrefix)) {
      const auto it = o.tags.find(rel.substr(kTagPrefix.size()));
      if (it != o.tags.end()) return it->second;
    }
    return std::nullopt;
  }

  const auto tree = metadata_tree(o);
  if (const auto it = tree.find(rel); it != tree.end()) return it->second;
  return listing(tree, rel, o);
}

bool fault_applies_to(const Faults& f, std::string_view path) {
  if (f.paths.empty()) return true;
  return std::any_of(f.paths.begin(), f.paths.end(), [&](const std::string& p) {
    return p.ends_with('/') ? path.starts_with(p) : path == p;
  });
}

bool has_request_fault(const Faults& f) {
  return f.delay.count() > 0 || f.hang || f.reset || f.status != 0 || f.no_server_header ||
         f.oversized_bytes > 0 || f.malformed || f.trickle.count() > 0 ||
         f.oversized_header_bytes > 0 || f.no_ttl_header || f.token_lifetime.has_value();
}

// The rules proper, for a request that no fault short-circuited.
Response respond(const Request& req, std::string_view path, const Options& o, State& state, Now now,
                 const std::string* token, bool has_xff) {
  if (has_expectation(req)) return empty(417);
  if (!o.endpoint_enabled) return empty(403);

  if (path == kTokenPath) {
    if (req.method == "PUT") {
      if (has_xff) return empty(403);
      const auto ttl = parse_token_ttl(find_header(req.headers, kTokenTtlHeader));
      if (!ttl) return page(400, "Bad Request");
      Response r = text(state.tokens.issue(std::chrono::seconds(*ttl), now.steady));
      r.headers.push_back({std::string(kTokenTtlHeader), std::to_string(*ttl)});
      return r;
    }
    Response r = req.method == "OPTIONS" ? empty(200) : page(405, "Method Not Allowed");
    r.headers.push_back({"Allow", std::string(kTokenAllow)});
    return r;
  }
  if (is_other_token_path(path)) return empty(403);
  if (req.method != "GET" && req.method != "HEAD") return page(405, "Method Not Allowed");

  std::optional<std::chrono::seconds> remaining;
  if (token != nullptr) {
    // The token header makes the request IMDSv2 even when tokens are optional.
    if (has_xff) return empty(403);
    remaining = state.tokens.remaining(*token, now.steady);
    if (!remaining) return unauthorized(o);
  } else if (o.http_tokens == HttpTokens::required) {
    return unauthorized(o);
  }

  Response r = page(404, "Not Found");
  if (path == "/") {
    r = text("latest");
  } else if (path == "/latest" || path.starts_with("/latest/")) {
    const std::string rel(path.size() > 8 ? path.substr(8) : std::string_view());
    if (auto body = lookup(o, rel)) r = text(std::move(*body));
  }
  if (remaining)
    r.headers.push_back({std::string(kTokenTtlHeader), std::to_string(remaining->count())});
  return r;
}

std::string malformed_bytes() {
  // Not HTTP: a client must fail to parse this, not hang on it.
  return "HTTP/1.1 2OO NOT-A-STATUS\r\nthis line is no header\r\n\r\n\x01\x02garbage";
}

}  // namespace

std::optional<std::string> Response::header(std::string_view name) const {
  if (const auto* v = find_header(headers, name)) return *v;
  return std::nullopt;
}

LogEntry& RequestLog::append(LogEntry entry) {
  entry.seq = next_seq_++;
  if (entries_.size() >= kCapacity) entries_.pop_front();
  entries_.push_back(std::move(entry));
  return entries_.back();
}

std::string random_token() {
  static constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  static_assert(kAlphabet.size() == 64);
  std::array<unsigned char, kTokenLength> bytes{};
  fill_random(bytes.data(), bytes.size());
  std::string token(kTokenLength, ' ');
  for (std::size_t i = 0; i < kTokenLength; ++i) token[i] = kAlphabet[bytes[i] & 63U];
  return token;
}

std::uint64_t random_seed() {
  std::uint64_t seed = 0;
  fill_random(&seed, sizeof seed);
  return seed;
}

void TokenStore::evict(SteadyTime now) {
  std::erase_if(expiry_, [now](const auto& kv) { return kv.second <= now; });
  if (expiry_.size() < kCapacity) return;
  const auto oldest =
      std::min_element(expiry_.begin(), expiry_.end(),
                       [](const auto& a, const auto& b) { return a.second < b.second; });
  expiry_.erase(oldest);
}

std::string TokenStore::issue(std::chrono::seconds ttl, SteadyTime now) {
  if (expiry_.size() >= kCapacity) evict(now);
  std::string token = random_token();
  expiry_[token] = now + ttl;
  return token;
}

void TokenStore::shorten(std::string_view token, SteadyTime expiry) {
  const auto it = expiry_.find(std::string(token));
  if (it != expiry_.end() && expiry < it->second) it->second = expiry;
}

std::optional<std::chrono::seconds> TokenStore::remaining(std::string_view token,
                                                          SteadyTime now) const {
  const auto it = expiry_.find(std::string(token));
  if (it == expiry_.end() || it->second <= now) return std::nullopt;
  return std::chrono::ceil<std::chrono::seconds>(it->second - now);
}

State::State(Options initial, std::uint64_t seed) : in_force_(std::move(initial)), rng_(seed) {}

const Options& State::in_force(SteadyTime now) {
  if (pending_ && now >= pending_until_) {
    in_force_ = std::move(*pending_);
    pending_.reset();
  }
  return in_force_;
}

const Options& State::requested() const { return pending_ ? *pending_ : in_force_; }

bool State::pending(SteadyTime now) const { return pending_ && now < pending_until_; }

std::optional<SteadyTime> State::pending_until() const {
  if (!pending_) return std::nullopt;
  return pending_until_;
}

void State::set_options(Options next, std::chrono::milliseconds delay, SteadyTime now) {
  in_force(now);
  if (delay.count() <= 0) {
    in_force_ = std::move(next);
    pending_.reset();
    return;
  }
  pending_ = std::move(next);
  pending_until_ = now + delay;
}

double State::draw() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

bool has_expectation(const Request& request) {
  const auto* expect = find_header(request.headers, "Expect");
  return expect != nullptr && !trim(*expect).empty();
}

Response handle(const Request& req, State& state, Now now) {
  const Options& o = state.in_force(now.steady);
  const std::string_view target = req.target;
  const std::string_view path = target.substr(0, target.find('?'));
  const std::string* token = find_header(req.headers, kTokenHeader);
  const bool has_xff = find_header(req.headers, "X-Forwarded-For") != nullptr;

  LogEntry entry;
  entry.time = now.wall;
  entry.peer = req.peer;
  entry.port = req.port;
  entry.family = req.family;
  entry.method = bounded(req.method, 32);
  entry.path = bounded(target, kMaxLoggedPath);
  entry.has_token = token != nullptr;
  entry.token_valid = token != nullptr && state.tokens.remaining(*token, now.steady).has_value();
  entry.has_xff = has_xff;
  if (const auto* ttl = find_header(req.headers, kTokenTtlHeader)) {
    entry.ttl_header = bounded(*ttl, kMaxLoggedTtl);
  }

  const Faults& f = state.faults;
  const bool faulted = has_request_fault(f) && fault_applies_to(f, path) &&
                       (f.share >= 1.0 || (f.share > 0.0 && state.draw() < f.share));

  Response r;
  if (faulted && f.malformed) {
    r.action = Action::malformed;
    r.body = malformed_bytes();
    entry.faults.emplace_back("malformed");
  } else if (faulted && f.reset) {
    r.action = Action::reset;
    entry.faults.emplace_back("reset");
  } else if (faulted && f.hang) {
    r.action = Action::hang;
    entry.faults.emplace_back("hang");
  } else if (faulted && f.status != 0) {
    r = empty(f.status);
    entry.faults.emplace_back("status");
  } else {
    r = respond(req, path, o, state, now, token, has_xff);
  }

  if (faulted && r.action == Action::respond) {
    // Before any padding: the body is still the token.
    if (f.token_lifetime && req.method == "PUT" && path == kTokenPath && r.status == 200) {
      state.tokens.shorten(r.body, now.steady + *f.token_lifetime);
      entry.faults.emplace_back("token_lifetime");
    }
    if (f.no_server_header) {
      std::erase_if(r.headers, [](const Header& h) { return iequals(h.name, "Server"); });
      entry.faults.emplace_back("no_server_header");
    }
    if (f.oversized_bytes > r.body.size()) {
      r.body.resize(f.oversized_bytes, 'x');
      entry.faults.emplace_back("oversized");
    }
    if (f.oversized_header_bytes > 0) {
      r.headers.push_back({"X-Padding", std::string(f.oversized_header_bytes, 'x')});
      entry.faults.emplace_back("oversized_header");
    }
    if (f.no_ttl_header) {
      std::erase_if(r.headers, [](const Header& h) { return iequals(h.name, kTokenTtlHeader); });
      entry.faults.emplace_back("no_ttl_header");
    }
    if (f.trickle.count() > 0) {
      r.trickle = f.trickle;
      entry.faults.emplace_back("trickle");
    }
  }
  if (faulted && f.delay.count() > 0) {
    r.delay = f.delay;
    entry.faults.emplace_back("delay");
  }
  r.head_only = req.method == "HEAD";

  // The hop limit is the TTL of whatever answers a token PUT (EC2 limits the PUT
  // response, not the handshake and not GETs).
  if (req.method == "PUT" && path == kTokenPath &&
      (r.action == Action::respond || r.action == Action::malformed)) {
    r.hop_limit = o.hop_limit;
    r.after_dropped_put = f.after_dropped_put;
    if (f.after_dropped_put != AfterDroppedPut::none) {
      entry.faults.emplace_back(f.after_dropped_put == AfterDroppedPut::hang
                                    ? "after_dropped_put_hang"
                                    : "after_dropped_put_reset");
    }
  }

  entry.status = r.action == Action::respond ? r.status : 0;
  entry.hop_limit = r.hop_limit;
  r.seq = state.log.append(std::move(entry)).seq;
  return r;
}

std::map<std::string, std::string> metadata_tree(const Options& o) {
  const std::string mac = "0e:12:34:56:78:9a";
  const std::string host = hostname(o);
  const std::string nic = "meta-data/network/interfaces/macs/" + mac + "/";
  const nlohmann::json identity = {
      {"accountId", "123456789012"},
      {"architecture", "x86_64"},
      {"availabilityZone", o.availability_zone},
      {"imageId", o.ami_id},
      {"instanceId", o.instance_id},
      {"instanceType", "t3.micro"},
      {"privateIp", "10.0.0.12"},
      {"region", o.region},
      {"version", "2017-09-30"},
  };
  return {
      {"meta-data/ami-id", o.ami_id},
      {"meta-data/ami-launch-index", "0"},
      {"meta-data/ami-manifest-path", "(unknown)"},
      {"meta-data/block-device-mapping/ami", "xvda"},
      {"meta-data/block-device-mapping/root", "/dev/xvda"},
      {"meta-data/hostname", host},
      {"meta-data/instance-action", "none"},
      {"meta-data/instance-id", o.instance_id},
      {"meta-data/instance-life-cycle", "on-demand"},
      {"meta-data/instance-type", "t3.micro"},
      {"meta-data/local-hostname", host},
      {"meta-data/local-ipv4", "10.0.0.12"},
      {"meta-data/mac", mac},
      {nic + "device-number", "0"},
      {nic + "interface-id", "eni-0123456789abcdef0"},
      {nic + "local-hostname", host},
      {nic + "local-ipv4s", "10.0.0.12"},
      {nic + "mac", mac},
      {nic + "owner-id", "123456789012"},
      {nic + "security-group-ids", "sg-0123456789abcdef0"},
      {nic + "security-groups", "default"},
      {nic + "subnet-id", "subnet-0123456789abcdef0"},
      {nic + "vpc-id", "vpc-0123456789abcdef0"},
      {"meta-data/placement/availability-zone", o.availability_zone},
      {"meta-data/placement/region", o.region},
      {"meta-data/profile", "default-hvm"},
      {"meta-data/reservation-id", "r-0123456789abcdef0"},
      {"meta-data/security-groups", "default"},
      {"meta-data/services/domain", "amazonaws.com"},
      {"meta-data/services/partition", "aws"},
      {"dynamic/instance-identity/document", identity.dump(2)},
  };
}

std::string_view to_string(HttpTokens v) {
  return v == HttpTokens::required ? "required" : "optional";
}
std::string_view to_string(UnauthorizedBody v) {
  return v == UnauthorizedBody::empty ? "empty" : "xhtml";
}
std::string_view to_string(Family v) { return v == Family::v6 ? "ipv6" : "ipv4"; }
std::string_view to_string(AfterDroppedPut v) {
  switch (v) {
    case AfterDroppedPut::hang:
      return "hang";
    case AfterDroppedPut::reset:
      return "reset";
    case AfterDroppedPut::none:
      break;
  }
  return "none";
}

}  // namespace imds::emu
