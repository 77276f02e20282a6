// Fuzzes imds::parse_tcp_segment (probe/packet_ttl.hpp) with whatever a packet socket could
// hand it: every length field must be checked against the buffer, whatever the bytes say.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "packet_ttl.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto segment = imds::parse_tcp_segment(std::span<const std::uint8_t>(data, size));
  if (segment) {
    // A TTL / hop limit is one byte on the wire.
    if (segment->ttl < 0 || segment->ttl > 255) std::abort();
    // A complete TCP header came first: 20 bytes after at least a 20-byte IP header.
    if (size < 40) std::abort();
  }
  return 0;
}
