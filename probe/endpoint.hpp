// The IMDS endpoints: base URLs such as http://169.254.169.254, checked by one parser for the
// collector, imds-probe's --endpoint flags and the agent's configuration alike.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "model.hpp"
#include "result.hpp"

namespace imds {

// Where the IMDS answers from: the packet filter accepts TCP segments from this address and
// port.
struct ImdsAddress {
  Family family = Family::v4;
  in_addr v4{};
  in6_addr v6{};
  std::uint16_t port = 80;
};

// An endpoint URL taken apart with curl's own URL parser.
struct Endpoint {
  Family family = Family::v4;
  std::string base;     // "http://ADDRESS:PORT", no trailing slash; IPv6 in brackets
  std::string host;     // the address alone: "169.254.169.254", "fd00:ec2::254"
  ImdsAddress address;  // the same, for the packet filter
};

// Parses the base URL of the IMDS endpoint of `family`: http://, an IP address of that
// family (IPv6 in brackets), an optional port 1..65535, and nothing else: no user or
// password, no path but "/", no query or fragment. Host names are refused: a name would be
// resolved in this process's namespace even for container targets, and resolving it is a
// request that may leave the machine. The error starts with the quoted URL
// ("'http://x' must ..."), for the caller to prefix with where it came from.
Result<Endpoint> parse_endpoint(std::string_view text, Family family);

}  // namespace imds
