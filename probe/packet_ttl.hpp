// Reading the TTL / hop limit of the IMDS's TCP segments as they arrive in a namespace, with
// an AF_PACKET socket (needs CAP_NET_RAW) and a classic BPF filter for the IMDS's address.
#pragma once

#include <linux/filter.h>
#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "endpoint.hpp"
#include "model.hpp"
#include "netns.hpp"
#include "result.hpp"

namespace imds {

// The parts of one IPv4/IPv6 + TCP segment the probe needs.
struct TcpSegment {
  Family family = Family::v4;
  int ttl = 0;  // IPv4 TTL or IPv6 hop limit as received
  std::uint16_t source_port = 0;
  std::uint16_t destination_port = 0;
  bool syn = false;
  bool ack = false;
  std::size_t payload_bytes = 0;  // from the IP length fields, not the captured length
};

// Parses a packet that starts at the IP header (AF_PACKET SOCK_DGRAM). Returns nothing for
// anything that is not a complete, unfragmented TCP header: truncated, other protocols, IPv4
// fragments, IPv6 extension headers. Every length field is checked against the buffer.
std::optional<TcpSegment> parse_tcp_segment(std::span<const std::uint8_t> packet);

// A classic BPF program that accepts TCP segments from `from` (source address and port),
// passing at most `snap_bytes` of each.
std::vector<sock_filter> imds_segment_filter(const ImdsAddress& from, std::uint32_t snap_bytes);

// What the segments for one local port showed.
struct PortTtls {
  std::optional<int> handshake_ttl;  // SYN-ACK
  std::optional<int> data_ttl;       // first segment with payload
};

// One packet socket inside one namespace, collecting PortTtls by local (destination) port.
class PacketTtlSocket {
 public:
  // Created inside `netns` (-1: the thread's own namespace). Errors (EPERM without
  // CAP_NET_RAW, ...) are values.
  static Result<PacketTtlSocket> open(const NetnsSocketFactory& factory, int netns,
                                      const ImdsAddress& from);

  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  // Reads every queued segment (non-blocking, bounded per call).
  void drain();
  [[nodiscard]] PortTtls at(std::uint16_t local_port) const;
  void forget(std::uint16_t local_port) { ports_.erase(local_port); }
  // Gives up the socket without closing it (see close_packet_sockets).
  UniqueFd take_fd() && { return std::move(fd_); }

 private:
  explicit PacketTtlSocket(UniqueFd fd) : fd_(std::move(fd)) {}
  void record(const TcpSegment& segment);

  UniqueFd fd_;
  std::map<std::uint16_t, PortTtls> ports_;
};

// Closes packet sockets. Each close waits for an RCU grace period (~10 ms, synchronize_net
// in packet_release); closes from many threads share grace periods, so 64 sockets take about
// as long as one instead of most of a second.
void close_packet_sockets(std::vector<UniqueFd>& sockets) noexcept;

}  // namespace imds
