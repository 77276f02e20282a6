// Endpoint URLs, parsed with curl's URL API (the same parser that later reads them to send
// the requests), then held to what an IMDS base URL can be.
#include "endpoint.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstddef>
#include <new>
#include <optional>
#include <system_error>

#include "http.hpp"
#include "quote.hpp"

namespace imds {
namespace {

constexpr std::size_t kMaxEndpointBytes = 256;

std::string_view example(Family family) {
  return family == Family::v4 ? "e.g. http://169.254.169.254 or http://127.0.0.1:8080"
                              : "e.g. http://[fd00:ec2::254] or http://[::1]:8080";
}

std::string not_http(Family family) {
  return "must be an http:// URL (the IMDS speaks plain HTTP), " + std::string(example(family));
}

// A part of the URL, or nullopt when the URL has none (an empty user as in "http://@host" is
// a part, and is refused like any other).
std::optional<std::string> url_part(const CurlUrl& url, CURLUPart part, unsigned flags = 0) {
  char* value = nullptr;
  if (curl_url_get(url.get(), part, &value, flags) != CURLUE_OK || value == nullptr) {
    return std::nullopt;
  }
  std::string copy(value);
  curl_free(value);
  return copy;
}

// What curl could not parse, in the words of an endpoint. curl's own error codes for IPv6 and
// login syntax are newer than some distributions' curl, so brackets are looked at here.
std::string unparsable(std::string_view text, CURLUcode code, Family family) {
  const std::string url = quoted(text);
  if (code == CURLUE_BAD_PORT_NUMBER) return url + " has a port outside 1..65535";
  if (code == CURLUE_UNSUPPORTED_SCHEME) return url + " " + not_http(family);
  const auto authority = text.find("://");
  if (authority != std::string_view::npos && text.substr(authority + 3).starts_with('[')) {
    return url + " has a malformed IPv6 address (expected one in brackets, " +
           std::string(example(Family::v6)) + ")";
  }
  return url + " is not a URL (expected http://ADDRESS[:PORT], " + std::string(example(family)) +
         ")";
}

}  // namespace

Result<Endpoint> parse_endpoint(std::string_view text, Family family) {
  const std::string url = quoted(text);
  const std::string hint(example(family));
  if (text.size() > kMaxEndpointBytes) {
    return Error{url + " is too long for an endpoint URL (at most 256 characters)"};
  }
  CurlUrl parsed(curl_url());
  if (!parsed) throw std::bad_alloc();
  const std::string copy(text);  // curl wants a NUL-terminated string
  if (const CURLUcode code = curl_url_set(parsed.get(), CURLUPART_URL, copy.c_str(), 0);
      code != CURLUE_OK) {
    return Error{unparsable(text, code, family)};
  }
  if (url_part(parsed, CURLUPART_SCHEME) != "http") return Error{url + " " + not_http(family)};
  if (url_part(parsed, CURLUPART_USER) || url_part(parsed, CURLUPART_PASSWORD)) {
    return Error{url + " must not hold a user name or password"};
  }
  if (url_part(parsed, CURLUPART_QUERY) || url_part(parsed, CURLUPART_FRAGMENT)) {
    return Error{url + " must not have a query or fragment"};
  }
  const auto path = url_part(parsed, CURLUPART_PATH);
  if (path && !path->empty() && *path != "/") {
    return Error{url + " must not have a path: give the base URL, " + hint};
  }
  if (url_part(parsed, CURLUPART_ZONEID)) {
    return Error{url + " has an IPv6 zone id, which is not supported"};
  }

  const std::string host = url_part(parsed, CURLUPART_HOST).value_or("");
  const std::string port = url_part(parsed, CURLUPART_PORT, CURLU_DEFAULT_PORT).value_or("");
  Endpoint endpoint;
  endpoint.family = family;
  endpoint.address.family = family;
  const bool bracketed = host.size() > 2 && host.front() == '[' && host.back() == ']';
  endpoint.host = bracketed ? host.substr(1, host.size() - 2) : host;
  const bool v4 =
      !bracketed && ::inet_pton(AF_INET, endpoint.host.c_str(), &endpoint.address.v4) == 1;
  const bool v6 =
      bracketed && ::inet_pton(AF_INET6, endpoint.host.c_str(), &endpoint.address.v6) == 1;
  if (family == Family::v4 && v6) {
    return Error{url + " is an IPv6 address: the IPv4 endpoint needs an IPv4 address, " + hint};
  }
  if (family == Family::v6 && v4) {
    return Error{
        url + " is an IPv4 address: the IPv6 endpoint needs an IPv6 address in brackets, " + hint};
  }
  if (!v4 && !v6) {
    if (host.find_first_not_of("0123456789.") == std::string::npos) {
      return Error{url + " has a malformed IPv4 address, " + hint};
    }
    return Error{url +
                 " names a host, not an IP address: a name would be resolved in this "
                 "namespace even for container targets; give the address, " +
                 hint};
  }
  // curl has checked the port's digits and its upper bound; 0 it lets through.
  unsigned number = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
  if (ec != std::errc() || end != port.data() + port.size() || number < 1 || number > 65535) {
    return Error{url + " has a port outside 1..65535"};
  }
  endpoint.address.port = static_cast<std::uint16_t>(number);
  endpoint.base = "http://" + host + ":" + std::to_string(number);
  return endpoint;
}

}  // namespace imds
