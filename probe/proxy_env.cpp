// Proxy variables that would capture an SDK's or curl's requests to the IMDS; see collect.hpp.
#include <arpa/inet.h>

#include <array>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "collect.hpp"

namespace imds {

namespace {

constexpr std::string_view kImdsHost = "169.254.169.254";
// kImdsHost as a host-order number, for the CIDR entries.
constexpr std::uint32_t kImdsHostIpv4 = (169U << 24) | (254U << 16) | (169U << 8) | 254U;
constexpr std::size_t kMaxNoProxyBytes = std::size_t{64} * 1024;

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

std::optional<std::uint32_t> ipv4(std::string_view text) {
  if (text.size() > 15) return std::nullopt;
  const std::string copy(text);
  in_addr address{};
  if (::inet_pton(AF_INET, copy.c_str(), &address) != 1) return std::nullopt;
  return ntohl(address.s_addr);
}

// One no_proxy entry, with curl's and the SDKs' meanings: "*", an exact host, a domain
// suffix (".254" or "254" matching "...254" at a dot boundary), an IPv4 CIDR block, and an
// optional ":port" which we ignore (the IMDS is on port 80 either way).
bool entry_covers_imds(std::string_view entry) {
  entry = trim(entry);
  if (entry.empty()) return false;
  if (entry == "*") return true;
  if (const auto slash = entry.find('/'); slash != std::string_view::npos) {
    const auto network = ipv4(entry.substr(0, slash));
    const std::string_view bits_text = entry.substr(slash + 1);
    int bits = -1;
    const auto [end, error] =
        std::from_chars(bits_text.data(), bits_text.data() + bits_text.size(), bits);
    if (!network || error != std::errc() || end != bits_text.data() + bits_text.size() ||
        bits < 0 || bits > 32) {
      return false;
    }
    const std::uint32_t mask = bits == 0 ? 0 : ~std::uint32_t{0} << (32 - bits);
    return (*network & mask) == (kImdsHostIpv4 & mask);
  }
  if (const auto colon = entry.rfind(':'); colon != std::string_view::npos) {
    entry = entry.substr(0, colon);
  }
  if (!entry.empty() && entry.front() == '.') entry.remove_prefix(1);
  if (entry.empty()) return false;
  if (entry == kImdsHost) return true;
  return kImdsHost.size() > entry.size() && kImdsHost.ends_with(entry) &&
         kImdsHost[kImdsHost.size() - entry.size() - 1] == '.';
}

bool list_covers_imds(std::string_view list) {
  if (list.size() > kMaxNoProxyBytes) list = list.substr(0, kMaxNoProxyBytes);
  while (!list.empty()) {
    const auto comma = list.find(',');
    if (entry_covers_imds(list.substr(0, comma))) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

ProxyEnvironment proxy_environment(const std::function<const char*(const char*)>& getenv_fn) {
  ProxyEnvironment environment;
  for (const char* name : {"http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"}) {
    const char* value = getenv_fn(name);
    if (value != nullptr && !trim(value).empty()) {
      environment.variable = name;
      break;
    }
  }
  for (const char* name : {"no_proxy", "NO_PROXY"}) {
    const char* value = getenv_fn(name);
    if (value != nullptr && list_covers_imds(value)) environment.no_proxy_covers_imds = true;
  }
  return environment;
}

ProxyEnvironment collect_proxy_environment() {
  return proxy_environment([](const char* name) { return std::getenv(name); });
}

}  // namespace imds
