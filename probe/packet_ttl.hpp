// Reading the TTL / hop limit of the IMDS's TCP segments as they arrive in a namespace, with
// an AF_PACKET socket (needs CAP_NET_RAW) and a classic BPF filter for the IMDS's address.
//
// A segment counts only for the connection it belongs to: its destination must be the local
// address and port of one of our connections, and it must arrive on the interface that
// connection's SYN left by. Anything else that claims to come from the IMDS (a SYN-ACK forged
// over `lo` by a process with CAP_NET_RAW in the container, say) is counted and ignored.
#pragma once

#include <linux/filter.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <compare>
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

// One end of a TCP connection: address (IPv4 in the first 4 bytes) and port.
struct SocketName {
  Family family = Family::v4;
  std::array<std::uint8_t, 16> address{};
  std::uint16_t port = 0;
  auto operator<=>(const SocketName&) const = default;
};

// The local end of a connected (or connecting) socket, from getsockname(2).
std::optional<SocketName> socket_name_of(int fd);
// The same from a numeric address text and a port (libcurl's CURLINFO_LOCAL_IP/PORT).
std::optional<SocketName> socket_name_from(const char* address, long port);

// The parts of one IPv4/IPv6 + TCP segment the probe needs.
struct TcpSegment {
  Family family = Family::v4;
  int ttl = 0;  // IPv4 TTL or IPv6 hop limit as received
  std::array<std::uint8_t, 16> source_address{};  // IPv4 in the first 4 bytes
  std::array<std::uint8_t, 16> destination_address{};
  std::uint16_t source_port = 0;
  std::uint16_t destination_port = 0;
  bool syn = false;
  bool ack = false;
  bool fin = false;
  bool rst = false;
  std::uint32_t sequence = 0;          // of the first payload byte (of the SYN itself on a SYN)
  std::uint32_t acknowledgement = 0;
  std::size_t payload_bytes = 0;   // from the IP length fields, not the captured length
  std::size_t payload_offset = 0;  // where the payload starts in the packet given
  // The payload bytes that were captured (a snap length cuts them short), within `packet`.
  [[nodiscard]] std::span<const std::uint8_t> captured_payload(
      std::span<const std::uint8_t> packet) const {
    if (payload_offset >= packet.size()) return {};
    return packet.subspan(payload_offset, std::min(payload_bytes, packet.size() - payload_offset));
  }
};

// Parses a packet that starts at the IP header (AF_PACKET SOCK_DGRAM). Returns nothing for
// anything that is not a complete, unfragmented TCP header: truncated, other protocols, IPv4
// fragments, IPv6 extension headers. Every length field is checked against the buffer.
std::optional<TcpSegment> parse_tcp_segment(std::span<const std::uint8_t> packet);

// A classic BPF program for a packet that starts at the IP header: it accepts TCP segments
// from `imds` (source address and port) and to it (destination address and port), passing at
// most `snap_bytes` of each.
std::vector<sock_filter> imds_segment_filter(const ImdsAddress& imds, std::uint32_t snap_bytes);

// An AF_PACKET socket (SOCK_DGRAM, every protocol, non-blocking) inside `netns` (-1: the
// thread's own) with imds_segment_filter attached before it is bound, so nothing else is ever
// queued. Needs CAP_NET_RAW; errors are values.
Result<UniqueFd> open_imds_packet_socket(const NetnsSocketFactory& factory, int netns,
                                         const ImdsAddress& imds, std::uint32_t snap_bytes);

// What the segments of one connection showed.
struct PortTtls {
  std::optional<int> handshake_ttl;  // SYN-ACK
  std::optional<int> data_ttl;       // first segment with payload
};

// The bookkeeping behind PacketTtlSocket, apart from the socket: which connections our SYNs
// opened (local end, interface) and what the IMDS's segments to each showed.
class ConnectionTtls {
 public:
  explicit ConnectionTtls(const ImdsAddress& imds);

  // One captured packet: the interface it was seen on, whether it was leaving
  // (PACKET_OUTGOING), and its bytes from the IP header.
  void take(int ifindex, bool outgoing, std::span<const std::uint8_t> packet);
  [[nodiscard]] PortTtls at(const SocketName& local) const;
  void forget(const SocketName& local) { connections_.erase(local); }
  // Segments from the IMDS's address and port that belonged to none of our connections, or
  // arrived on another interface than the connection's SYN left by.
  [[nodiscard]] std::uint64_t foreign_segments() const noexcept { return foreign_; }
  [[nodiscard]] Family family() const noexcept { return family_; }

 private:
  struct Connection {
    int ifindex = 0;
    PortTtls ttls;
  };
  [[nodiscard]] bool from_imds(const TcpSegment& segment) const;
  [[nodiscard]] bool to_imds(const TcpSegment& segment) const;

  Family family_;
  std::array<std::uint8_t, 16> imds_address_{};
  std::uint16_t imds_port_;
  std::map<SocketName, Connection> connections_;
  std::uint64_t foreign_ = 0;
};

// One packet socket inside one namespace, collecting PortTtls by connection.
class PacketTtlSocket {
 public:
  // Created inside `netns` (-1: the thread's own namespace). Errors (EPERM without
  // CAP_NET_RAW, ...) are values.
  static Result<PacketTtlSocket> open(const NetnsSocketFactory& factory, int netns,
                                      const ImdsAddress& from);

  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  // Reads every queued segment (non-blocking, bounded per call).
  void drain();
  [[nodiscard]] PortTtls at(const SocketName& local) const { return ttls_.at(local); }
  void forget(const SocketName& local) { ttls_.forget(local); }
  [[nodiscard]] std::uint64_t foreign_segments() const noexcept {
    return ttls_.foreign_segments();
  }
  // Gives up the socket without closing it (see close_packet_sockets).
  UniqueFd take_fd() && { return std::move(fd_); }

 private:
  PacketTtlSocket(UniqueFd fd, const ImdsAddress& imds) : fd_(std::move(fd)), ttls_(imds) {}

  UniqueFd fd_;
  ConnectionTtls ttls_;
};

// Closes packet sockets. Each close waits for an RCU grace period (~10 ms, synchronize_net
// in packet_release); closes from many threads share grace periods, so 64 sockets take about
// as long as one instead of most of a second.
void close_packet_sockets(std::vector<UniqueFd>& sockets) noexcept;

}  // namespace imds
