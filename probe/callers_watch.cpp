// The passive watch of IMDS callers: packet sockets, the namespace address map, rendering.
// See callers_watch.hpp.
#include "callers_watch.hpp"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <ctime>
#include <iomanip>
#include <set>
#include <sstream>

#include "netns.hpp"
#include "sock_owner.hpp"
#include "words.hpp"

namespace imds {

namespace {

constexpr std::uint32_t kSnapBytes = 2048;  // IP and TCP headers and the start of a request
constexpr int kMaxReadsPerDrain = 4096;
constexpr std::size_t kMaxAddressesPerNamespace = 64;
constexpr auto kRefreshGap = std::chrono::seconds(5);
constexpr std::size_t kMaxLookupsPerStep = 16;

std::string address_text(const SocketName& end) {
  std::array<char, INET6_ADDRSTRLEN> text{};
  ::inet_ntop(end.family == Family::v4 ? AF_INET : AF_INET6, end.address.data(), text.data(),
              text.size());
  return text.data();
}

// The addresses of the namespace `netns` (an fd), by a NETLINK_ROUTE RTM_GETADDR dump made
// from inside it. Bounded in count and in time (the socket has a receive timeout).
std::vector<std::pair<Family, std::array<std::uint8_t, 16>>> namespace_addresses(
    const NetnsSocketFactory& factory, int netns) {
  std::vector<std::pair<Family, std::array<std::uint8_t, 16>>> out;
  const UniqueFd fd = factory.netlink_in(netns, NETLINK_ROUTE, std::chrono::seconds(1));
  if (!fd) return out;
  struct {
    nlmsghdr header;
    ifaddrmsg message;
  } request{};
  request.header.nlmsg_len = sizeof request;
  request.header.nlmsg_type = RTM_GETADDR;
  request.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  request.header.nlmsg_seq = 1;
  request.message.ifa_family = AF_UNSPEC;
  if (::send(fd.get(), &request, sizeof request, 0) < 0) return out;
  std::array<std::uint8_t, 16384> buffer{};
  for (int reads = 0; reads < 64; ++reads) {
    const ssize_t n = ::recv(fd.get(), buffer.data(), buffer.size(), 0);
    if (n <= 0) return out;
    auto remaining = static_cast<std::size_t>(n);
    std::size_t at = 0;
    while (remaining >= sizeof(nlmsghdr)) {
      nlmsghdr header{};
      std::memcpy(&header, buffer.data() + at, sizeof header);
      if (header.nlmsg_len < sizeof header || header.nlmsg_len > remaining) return out;
      if (header.nlmsg_type == NLMSG_DONE || header.nlmsg_type == NLMSG_ERROR) return out;
      if (header.nlmsg_type == RTM_NEWADDR &&
          header.nlmsg_len >= NLMSG_LENGTH(sizeof(ifaddrmsg))) {
        ifaddrmsg message{};
        std::memcpy(&message, buffer.data() + at + NLMSG_HDRLEN, sizeof message);
        const Family family = message.ifa_family == AF_INET6 ? Family::v6 : Family::v4;
        const std::size_t bytes = family == Family::v4 ? 4 : 16;
        std::size_t attribute = at + NLMSG_LENGTH(sizeof(ifaddrmsg));
        const std::size_t end = at + header.nlmsg_len;
        while (attribute + sizeof(rtattr) <= end) {
          rtattr rta{};
          std::memcpy(&rta, buffer.data() + attribute, sizeof rta);
          if (rta.rta_len < sizeof rta || attribute + rta.rta_len > end) break;
          if ((rta.rta_type == IFA_ADDRESS || rta.rta_type == IFA_LOCAL) &&
              rta.rta_len >= RTA_LENGTH(bytes) &&
              (message.ifa_family == AF_INET || message.ifa_family == AF_INET6)) {
            std::array<std::uint8_t, 16> address{};
            std::memcpy(address.data(), buffer.data() + attribute + RTA_LENGTH(0), bytes);
            if (out.size() < kMaxAddressesPerNamespace &&
                std::find(out.begin(), out.end(), std::pair{family, address}) == out.end()) {
              out.emplace_back(family, address);
            }
          }
          attribute += RTA_ALIGN(rta.rta_len);
        }
      }
      const std::size_t step = std::min<std::size_t>(NLMSG_ALIGN(header.nlmsg_len), remaining);
      at += step;
      remaining -= step;
    }
  }
  return out;
}

std::string iso_time(std::chrono::system_clock::time_point t) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  ::gmtime_r(&seconds, &tm);
  std::array<char, 32> text{};
  std::strftime(text.data(), text.size(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text.data();
}

SocketName imds_end(const ImdsAddress& imds) {
  SocketName end;
  end.family = imds.family;
  end.port = imds.port;
  if (imds.family == Family::v4) {
    std::memcpy(end.address.data(), &imds.v4, sizeof imds.v4);
  } else {
    std::memcpy(end.address.data(), &imds.v6, sizeof imds.v6);
  }
  return end;
}

}  // namespace

void NamespaceAddresses::refresh(const DiscoveryConfig& discovery,
                                 std::vector<std::string>* notes) {
  const Discovery found = discover_containers(discovery);
  const NetnsSocketFactory factory;
  std::map<std::pair<Family, std::array<std::uint8_t, 16>>, CallerPlace> by_address;
  std::map<std::uint64_t, std::string> paths;
  std::size_t namespaces = 0;
  for (const NetnsTarget& target : found.targets) {
    const auto netns = factory.open_namespace(target.path, target.inode);
    if (!netns) continue;
    const auto addresses = namespace_addresses(factory, netns->get());
    if (addresses.empty()) continue;
    ++namespaces;
    paths.emplace(target.inode, target.path);
    CallerPlace place{target.name, target.container_id, target.inode, target.container_name};
    for (const auto& address : addresses) {
      // Loopback and link-local addresses name no namespace (every one has 127.0.0.1, ::1).
      const auto& a = address.second;
      if (address.first == Family::v4 && a[0] == 127) continue;
      if (address.first == Family::v6 &&
          (std::all_of(a.begin(), a.begin() + 15, [](std::uint8_t b) { return b == 0; }) ||
           (a[0] == 0xfe && (a[1] & 0xc0) == 0x80))) {
        continue;
      }
      // Two namespaces with one address (two bridges with one subnet): neither is named.
      const auto [it, inserted] = by_address.try_emplace(address, place);
      if (!inserted && it->second.netns_inode != place.netns_inode) {
        it->second = CallerPlace{"ambiguous address", std::nullopt, 0, std::nullopt};
      }
    }
  }
  if (notes != nullptr) {
    for (const auto& note : found.notes) {
      if (notes->size() < 16) notes->push_back(note);
    }
  }
  by_address_ = std::move(by_address);
  paths_ = std::move(paths);
  namespaces_ = namespaces;
}

const std::string* NamespaceAddresses::path_of(std::uint64_t inode) const {
  const auto it = paths_.find(inode);
  return it == paths_.end() ? nullptr : &it->second;
}

CallerPlace NamespaceAddresses::place_of(const FlowOrigin& origin) const {
  if (origin.local) return CallerPlace{"host", std::nullopt, 0, std::nullopt};
  const auto found = by_address_.find({origin.client.family, origin.client.address});
  if (found != by_address_.end()) return found->second;
  std::array<char, IF_NAMESIZE> name{};
  const bool named = ::if_indextoname(static_cast<unsigned>(origin.ifindex), name.data()) != nullptr;
  return CallerPlace{address_text(origin.client) + (named ? std::string(" via ") + name.data() : ""),
                     std::nullopt, 0, std::nullopt};
}

Result<std::unique_ptr<CallerWatcher>> CallerWatcher::open(WatchOptions options) {
  const NetnsSocketFactory factory;
  std::vector<Capture> captures;
  std::vector<SocketName> ends;
  for (const ImdsAddress& imds : options.imds) {
    auto fd = open_imds_packet_socket(factory, -1, imds, kSnapBytes);
    if (!fd) return Error{fd.error().message + " (watching callers needs CAP_NET_RAW)"};
    const int buffer = 4 << 20;
    ::setsockopt(fd->get(), SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    captures.push_back({std::move(*fd), imds.family == Family::v4 ? ETH_P_IP : ETH_P_IPV6});
    ends.push_back(imds_end(imds));
  }
  return std::make_unique<CallerWatcher>(std::move(options), std::move(captures), std::move(ends));
}

CallerWatcher::CallerWatcher(WatchOptions options, std::vector<Capture> captures,
                             std::vector<SocketName> ends)
    : options_(std::move(options)),
      captures_(std::move(captures)),
      tracker_(std::move(ends), options_.limits),
      start_(WatchClock::now()),
      wall_start_(std::chrono::system_clock::now()) {
  places_.refresh(options_.discovery, &report_.notes);
  refreshed_ = WatchClock::now();
}

void CallerWatcher::refresh_places() {
  places_.refresh(options_.discovery, nullptr);
  refreshed_ = WatchClock::now();
}

void CallerWatcher::book(const std::vector<Exchange>& exchanges) {
  for (const Exchange& exchange : exchanges) {
    if (!options_.ignore_product.empty() && exchange.request.sdk &&
        exchange.request.sdk->product == options_.ignore_product) {
      ++report_.ignored;
      continue;
    }
    CallerPlace place = places_.place_of(exchange.origin);
    if (!exchange.origin.local && place.netns_inode == 0 &&
        WatchClock::now() - refreshed_ >= kRefreshGap) {
      refresh_places();  // a container that came since
      place = places_.place_of(exchange.origin);
    }
    const auto when = wall_start_ + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                        exchange.requested - start_);
    report_.book.add(place, exchange, when);
  }
}

void CallerWatcher::step(std::chrono::milliseconds wait) {
  std::vector<pollfd> fds;
  fds.reserve(captures_.size());
  for (const Capture& c : captures_) fds.push_back({c.fd.get(), POLLIN, 0});
  ::poll(fds.data(), fds.size(), static_cast<int>(std::clamp<long>(wait.count(), 0, 1000)));
  std::array<std::uint8_t, kSnapBytes> buffer{};
  for (const Capture& c : captures_) {
    for (int reads = 0; reads < kMaxReadsPerDrain; ++reads) {
      sockaddr_ll peer{};
      socklen_t peer_length = sizeof peer;
      const ssize_t n = ::recvfrom(c.fd.get(), buffer.data(), buffer.size(),
                                   MSG_TRUNC | MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&peer),
                                   &peer_length);
      if (n < 0) break;
      if (ntohs(peer.sll_protocol) != c.protocol) continue;
      const auto captured = std::min(static_cast<std::size_t>(n), buffer.size());
      tracker_.take(peer.sll_ifindex, peer.sll_pkttype == PACKET_OUTGOING,
                    {buffer.data(), captured}, WatchClock::now());
    }
  }
  look_up_processes();
  book(tracker_.take_finished(WatchClock::now()));
}

// The owners of the connections that just opened, while their sockets still exist: a
// NETLINK_SOCK_DIAG query in the client's namespace each (at most kMaxLookupsPerStep), then
// one scan of /proc for all of them. What is not found stays unknown.
void CallerWatcher::look_up_processes() {
  const auto opened = tracker_.take_opened();
  if (opened.empty() || !options_.processes) return;
  std::map<std::uint64_t, const ExchangeTracker::Opened*> by_inode;
  std::size_t looked = 0;
  for (const auto& o : opened) {
    if (looked >= kMaxLookupsPerStep) {
      ++report_.processes_not_looked_up;
      continue;
    }
    ++looked;
    std::optional<std::uint64_t> inode;
    if (o.origin.local) {
      inode = tcp_socket_inode(factory_, -1, o.client, o.server);
    } else {
      const CallerPlace place = places_.place_of(o.origin);
      const std::string* path = places_.path_of(place.netns_inode);
      if (path != nullptr) {
        if (auto netns = factory_.open_namespace(*path, place.netns_inode)) {
          inode = tcp_socket_inode(factory_, netns->get(), o.client, o.server);
        }
      }
    }
    if (inode) {
      by_inode.emplace(*inode, &o);
    } else {
      ++report_.processes_not_found;
    }
  }
  if (by_inode.empty()) return;
  std::set<std::uint64_t> inodes;
  for (const auto& [inode, o] : by_inode) inodes.insert(inode);
  const auto owners = socket_owners(inodes, "/proc", static_cast<int>(::getpid()));
  for (const auto& [inode, o] : by_inode) {
    const auto owner = owners.find(inode);
    if (owner == owners.end()) {
      ++report_.processes_not_found;
      continue;
    }
    ++report_.processes_found;
    tracker_.set_process(o->client, o->server, owner->second);
  }
}

void CallerWatcher::settle() {
  // What is still waiting gets its full time, as it would have had in a longer watch.
  const auto settle = WatchClock::now() + options_.limits.answer_timeout;
  book(tracker_.take_finished(settle));
  book(tracker_.take_all());
}

WatchReport CallerWatcher::report() {
  report_.watched = std::chrono::duration_cast<std::chrono::milliseconds>(WatchClock::now() - start_);
  report_.counters = tracker_.counters();
  report_.namespaces = places_.namespaces();
  for (const Capture& c : captures_) {
    tpacket_stats stats{};  // reading the statistics resets them: they are added up here
    socklen_t length = sizeof stats;
    if (::getsockopt(c.fd.get(), SOL_PACKET, PACKET_STATISTICS, &stats, &length) == 0) {
      report_.kernel_drops += stats.tp_drops;
    }
  }
  return report_;
}

Result<WatchReport> watch_callers(const WatchOptions& options, const std::atomic<bool>* stop) {
  auto watcher = CallerWatcher::open(options);
  if (!watcher) return watcher.error();
  const auto start = WatchClock::now();
  while (stop == nullptr || !stop->load()) {
    const auto elapsed = WatchClock::now() - start;
    if (elapsed >= options.duration) break;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(options.duration - elapsed);
    (*watcher)->step(std::clamp(left, std::chrono::milliseconds(1), std::chrono::milliseconds(200)));
  }
  (*watcher)->settle();
  WatchReport report = (*watcher)->report();
  if (report.kernel_drops > 0) {
    report.notes.push_back(std::to_string(report.kernel_drops) +
                           " packets were dropped by the kernel (socket buffer full): counts "
                           "are low");
  }
  return report;
}

bool needs_attention(const CallerStats& s) {
  return s.imdsv1 > 0 || s.imdsv1_fallback > 0 || s.token_puts_unanswered > 0;
}

std::vector<std::pair<const CallerKey*, const CallerStats*>> callers_in_order(
    const WatchReport& report) {
  std::vector<std::pair<const CallerKey*, const CallerStats*>> out;
  for (const bool attention : {true, false}) {
    for (const auto& [key, s] : report.book.callers()) {
      if (needs_attention(s) == attention) out.emplace_back(&key, &s);
    }
  }
  return out;
}

nlohmann::json callers_to_json(const WatchReport& report, std::size_t max_listed) {
  using nlohmann::json;
  json callers = json::array();
  const auto order = callers_in_order(report);
  for (const auto& [key_p, s_p] : order) {
    if (callers.size() >= max_listed) break;
    const CallerKey& key = *key_p;
    const CallerStats& s = *s_p;
    json categories = json::object();
    for (std::size_t i = 0; i < kPathCategories; ++i) {
      if (s.categories.at(i) > 0) {
        categories[std::string(to_string(static_cast<PathCategory>(i)))] = s.categories.at(i);
      }
    }
    json statuses = json::object();
    for (const auto& [code, count] : s.statuses) statuses[code == 0 ? "other" : std::to_string(code)] = count;
    callers.push_back({
        {"where", key.where},
        {"container_id", s.container_id ? json(*s.container_id) : json(nullptr)},
        {"container_name", s.container_name ? json(*s.container_name) : json(nullptr)},
        {"netns_inode", s.netns_inode == 0 ? json(nullptr) : json(s.netns_inode)},
        {"sdk", key.sdk_product.empty()
                    ? json(nullptr)
                    : json{{"product", key.sdk_product}, {"version", key.sdk_version}}},
        {"process", s.process ? json{{"pid", s.process->pid},
                                     {"comm", s.process->comm},
                                     {"unit", s.process->unit ? json(*s.process->unit) : json(nullptr)}}
                              : json(nullptr)},
        {"imdsv1_calls", s.imdsv1},
        {"imdsv1_fallback_calls", s.imdsv1_fallback},
        {"imdsv1_answered_200", s.imdsv1_ok},
        {"imdsv1_answered_401", s.imdsv1_unauthorized},
        {"imdsv2_calls", s.imdsv2},
        {"token_puts", s.token_puts},
        {"token_puts_unanswered", s.token_puts_unanswered},
        {"token_puts_dropped_here", s.token_puts_dropped_here},
        {"dropped_put_ttl", s.dropped_put_ttl ? json(*s.dropped_put_ttl) : json(nullptr)},
        {"other_calls", s.other},
        {"categories", categories},
        {"statuses", statuses},
        {"first_seen", iso_time(s.first_seen)},
        {"last_seen", iso_time(s.last_seen)},
    });
  }
  const auto& c = report.counters;
  return {
      {"watched_ms", report.watched.count()},
      {"namespaces_mapped", report.namespaces},
      {"callers", callers},
      {"callers_omitted", order.size() - callers.size()},
      {"callers_overflowed", report.book.overflowed()},
      {"packets",
       {{"seen", c.packets},
        {"malformed", c.malformed},
        {"copies", c.copies},
        {"out_of_order", c.out_of_order},
        {"of_unseen_connections", c.unseen_connections},
        {"not_http", c.not_http},
        {"answers_without_request", c.answers_without_request},
        {"dropped_by_kernel", report.kernel_drops}}},
      {"exchanges", c.exchanges},
      {"processes", {{"found", report.processes_found},
                     {"not_found", report.processes_not_found},
                     {"not_looked_up", report.processes_not_looked_up}}},
      {"flows_evicted", c.flows_evicted},
      {"requests_dropped", c.requests_dropped},
      {"notes", report.notes},
  };
}

// The text of a callers document (callers_to_json, or the agent's GET /v1/callers): read
// defensively, since it may come from a socket; a value of the wrong type throws
// nlohmann::json::exception.
std::string render_callers_text(const nlohmann::json& doc) {
  using nlohmann::json;
  const auto number = [](const json& j, const char* key) -> std::uint64_t {
    const auto it = j.find(key);
    return it == j.end() || it->is_null() ? 0 : it->get<std::uint64_t>();
  };
  const auto text = [](const json& j, const char* key, std::string_view none) {
    const auto it = j.find(key);
    return it == j.end() || it->is_null() ? std::string(none) : printable(it->get<std::string>());
  };
  const auto counted = [](std::uint64_t n, const char* one, const char* many) {
    return std::to_string(n) + ' ' + (n == 1 ? one : many);
  };
  static const json kNone = json::array();
  const auto found = doc.find("callers");
  const json& callers = found == doc.end() ? kNone : *found;
  if (!callers.is_array()) throw json::type_error::create(302, "callers is not an array", &doc);
  std::ostringstream out;
  out << "Watched the IMDS traffic for " << std::fixed << std::setprecision(1)
      << static_cast<double>(number(doc, "watched_ms")) / 1000.0 << " s";
  if (doc.contains("watching_since")) out << " (since " << text(doc, "watching_since", "?") << ")";
  out << ": " << counted(number(doc, "exchanges"), "request", "requests") << " from "
      << counted(callers.size(), "caller", "callers") << " ("
      << counted(number(doc, "namespaces_mapped"), "container namespace", "container namespaces")
      << " mapped).\n";
  if (callers.empty()) return out.str();
  out << '\n';
  std::vector<std::vector<std::string>> rows{{"CALLER", "CONTAINER", "SDK", "IMDSv1", "FALLBACK",
                                              "IMDSv2", "PUTS", "PUTS LOST", "LAST SEEN",
                                              "PROCESS"}};
  for (const json& c : callers) {
    std::string lost = std::to_string(number(c, "token_puts_unanswered"));
    if (c.contains("dropped_put_ttl") && !c["dropped_put_ttl"].is_null()) {
      lost += " (TTL " + std::to_string(number(c, "dropped_put_ttl")) + " here)";
    }
    const std::string v1 = std::to_string(number(c, "imdsv1_calls")) +
                           (number(c, "imdsv1_answered_200") > 0 ? " 200" : "") +
                           (number(c, "imdsv1_answered_401") > 0 ? " 401" : "");
    std::string sdk = "-";
    if (const auto it = c.find("sdk"); it != c.end() && it->is_object()) {
      sdk = text(*it, "product", "?") + " " + text(*it, "version", "");
    }
    std::string process = "unknown";
    if (const auto it = c.find("process"); it != c.end() && it->is_object()) {
      process = text(*it, "comm", "?") + "[" + std::to_string(number(*it, "pid")) + "]";
      if (it->contains("unit") && !(*it)["unit"].is_null()) process += " " + text(*it, "unit", "");
    }
    std::string container = text(c, "container_id", "-").substr(0, 12);
    if (c.contains("container_name") && c["container_name"].is_string()) {
      container += " " + text(c, "container_name", "");
    }
    rows.push_back({text(c, "where", "?"), container, sdk, v1,
                    std::to_string(number(c, "imdsv1_fallback_calls")),
                    std::to_string(number(c, "imdsv2_calls")),
                    std::to_string(number(c, "token_puts")), lost, text(c, "last_seen", "?"),
                    process});
  }
  std::vector<std::size_t> widths(rows.front().size(), 0);
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) {
      out << row[i];
      if (i + 1 < row.size()) out << std::string(widths[i] - row[i].size() + 2, ' ');
    }
    out << '\n';
  }
  out << '\n';
  for (const json& c : callers) {
    std::string who = text(c, "where", "?");
    if (const auto it = c.find("sdk"); it != c.end() && it->is_object()) {
      who += " (" + text(*it, "product", "?") + ")";
    }
    const std::uint64_t v1 = number(c, "imdsv1_calls");
    const std::uint64_t fallback = number(c, "imdsv1_fallback_calls");
    const std::uint64_t unanswered = number(c, "token_puts_unanswered");
    const char* falls_back = fallback > 0 ? "; it falls back to IMDSv1 after a timeout.\n" : ".\n";
    if (v1 > 0) {
      out << "- " << who << " calls IMDSv1 on purpose (" << counted(v1, "tokenless request", "tokenless requests")
          << "): it breaks when HttpTokens=required.\n";
    }
    if (number(c, "token_puts_dropped_here") > 0) {
      out << "- " << who << "'s token PUT answers reach this namespace with TTL "
          << number(c, "dropped_put_ttl") << " and are not forwarded: the hop limit is too low for it"
          << falls_back;
    } else if (unanswered > 0) {
      out << "- " << who << "'s token PUTs went unanswered (" << unanswered << ")" << falls_back;
    }
  }
  return out.str();
}

}  // namespace imds
