// Packet parsing, the BPF filter and the packet socket; see packet_ttl.hpp.
#include "packet_ttl.hpp"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <thread>

namespace imds {

namespace {

constexpr std::size_t kMaxTrackedPorts = 8192;
constexpr int kMaxReadsPerDrain = 4096;
constexpr std::uint32_t kSnapBytes = 160;  // IPv6 40 + TCP 60 + slack; headers only

std::optional<TcpSegment> parse_tcp(std::span<const std::uint8_t> tcp, std::size_t tcp_length,
                                    TcpSegment segment) {
  tcphdr header{};
  if (tcp.size() < sizeof header || tcp_length < sizeof header) return std::nullopt;
  std::memcpy(&header, tcp.data(), sizeof header);
  const std::size_t header_bytes = static_cast<std::size_t>(header.th_off) * 4;
  if (header_bytes < sizeof header || header_bytes > tcp_length) return std::nullopt;
  segment.source_port = ntohs(header.th_sport);
  segment.destination_port = ntohs(header.th_dport);
  segment.syn = (header.th_flags & TH_SYN) != 0;
  segment.ack = (header.th_flags & TH_ACK) != 0;
  segment.payload_bytes = tcp_length - header_bytes;
  return segment;
}

std::optional<TcpSegment> parse_v4(std::span<const std::uint8_t> packet) {
  ip header{};
  if (packet.size() < sizeof header) return std::nullopt;
  std::memcpy(&header, packet.data(), sizeof header);
  const std::size_t header_bytes = static_cast<std::size_t>(header.ip_hl) * 4;
  const std::size_t total = ntohs(header.ip_len);
  if (header_bytes < sizeof header || total < header_bytes || packet.size() < header_bytes) {
    return std::nullopt;
  }
  if (header.ip_p != IPPROTO_TCP) return std::nullopt;
  if ((ntohs(header.ip_off) & (IP_MF | IP_OFFMASK)) != 0) return std::nullopt;
  TcpSegment segment;
  segment.family = Family::v4;
  segment.ttl = header.ip_ttl;
  return parse_tcp(packet.subspan(header_bytes), total - header_bytes, segment);
}

std::optional<TcpSegment> parse_v6(std::span<const std::uint8_t> packet) {
  ip6_hdr header{};
  if (packet.size() < sizeof header) return std::nullopt;
  std::memcpy(&header, packet.data(), sizeof header);
  if (header.ip6_nxt != IPPROTO_TCP) return std::nullopt;  // extension headers: not ours
  TcpSegment segment;
  segment.family = Family::v6;
  segment.ttl = header.ip6_hlim;
  return parse_tcp(packet.subspan(sizeof header), ntohs(header.ip6_plen), segment);
}

sock_filter statement(std::uint16_t code, std::uint32_t k) { return BPF_STMT(code, k); }
sock_filter jump(std::uint16_t code, std::uint32_t k, std::uint8_t jt, std::uint8_t jf) {
  return BPF_JUMP(code, k, jt, jf);
}

}  // namespace

std::optional<TcpSegment> parse_tcp_segment(std::span<const std::uint8_t> packet) {
  if (packet.empty()) return std::nullopt;
  switch (packet[0] >> 4) {
    case 4:
      return parse_v4(packet);
    case 6:
      return parse_v6(packet);
    default:
      return std::nullopt;
  }
}

std::vector<sock_filter> imds_segment_filter(const ImdsAddress& from, std::uint32_t snap_bytes) {
  // Offsets are from the IP header: AF_PACKET SOCK_DGRAM hands the filter the network layer.
  // Every "no" jumps to the final `ret #0`; the program is built front to back and the jump
  // distances are patched once its length is known.
  std::vector<sock_filter> program;
  struct Reject {
    std::size_t index;  // of a conditional jump
    bool on_true;       // which of its branches rejects
  };
  std::vector<Reject> rejects;
  const auto expect = [&](std::uint16_t load, std::uint32_t offset, std::uint32_t value) {
    program.push_back(statement(load, offset));
    rejects.push_back({program.size(), false});
    program.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, value, 0, 0));
  };
  program.push_back(statement(BPF_LD | BPF_B | BPF_ABS, 0));
  program.push_back(statement(BPF_ALU | BPF_AND | BPF_K, 0xf0));
  rejects.push_back({program.size(), false});
  if (from.family == Family::v4) {
    program.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, 0x40, 0, 0));
    expect(BPF_LD | BPF_B | BPF_ABS, 9, IPPROTO_TCP);
    expect(BPF_LD | BPF_W | BPF_ABS, 12, ntohl(from.v4.s_addr));
    // Fragments carry no TCP header at the expected place.
    program.push_back(statement(BPF_LD | BPF_H | BPF_ABS, 6));
    rejects.push_back({program.size(), true});
    program.push_back(jump(BPF_JMP | BPF_JSET | BPF_K, 0x3fff, 0, 0));
    program.push_back(statement(BPF_LDX | BPF_B | BPF_MSH, 0));
    expect(BPF_LD | BPF_H | BPF_IND, 0, from.port);
  } else {
    program.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, 0x60, 0, 0));
    expect(BPF_LD | BPF_B | BPF_ABS, 6, IPPROTO_TCP);
    for (std::uint32_t word = 0; word < 4; ++word) {
      std::uint32_t value = 0;
      std::memcpy(&value, &from.v6.s6_addr[std::size_t{word} * 4], sizeof value);
      expect(BPF_LD | BPF_W | BPF_ABS, 8 + word * 4, ntohl(value));
    }
    expect(BPF_LD | BPF_H | BPF_ABS, 40, from.port);
  }
  program.push_back(statement(BPF_RET | BPF_K, snap_bytes));
  const std::size_t reject_at = program.size();
  program.push_back(statement(BPF_RET | BPF_K, 0));
  for (const Reject& reject : rejects) {
    const auto distance = static_cast<std::uint8_t>(reject_at - reject.index - 1);
    (reject.on_true ? program[reject.index].jt : program[reject.index].jf) = distance;
  }
  return program;
}

Result<PacketTtlSocket> PacketTtlSocket::open(const NetnsSocketFactory& factory, int netns,
                                              const ImdsAddress& from) {
  // Protocol 0 receives nothing until bind(): attach the filter first so no unrelated packet
  // is ever queued.
  const int raw = factory.socket_in(netns, AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  if (raw < 0) return Error{errno_message("cannot open a packet socket", -raw)};
  UniqueFd fd(raw);
  std::vector<sock_filter> program = imds_segment_filter(from, kSnapBytes);
  sock_fprog fprog{};
  fprog.len = static_cast<unsigned short>(program.size());
  fprog.filter = program.data();
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog) != 0) {
    return Error{errno_message("cannot attach the IMDS filter to a packet socket", errno)};
  }
  sockaddr_ll address{};
  address.sll_family = AF_PACKET;
  address.sll_protocol = htons(from.family == Family::v4 ? ETH_P_IP : ETH_P_IPV6);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    return Error{errno_message("cannot bind a packet socket", errno)};
  }
  return PacketTtlSocket(std::move(fd));
}

void PacketTtlSocket::drain() {
  std::array<std::uint8_t, kSnapBytes> buffer{};
  for (int reads = 0; reads < kMaxReadsPerDrain; ++reads) {
    sockaddr_ll peer{};
    socklen_t peer_length = sizeof peer;
    const ssize_t n = ::recvfrom(fd_.get(), buffer.data(), buffer.size(), MSG_TRUNC,
                                 reinterpret_cast<sockaddr*>(&peer), &peer_length);
    if (n < 0) return;  // EAGAIN: drained; anything else: nothing more to learn now
    if (peer.sll_pkttype == PACKET_OUTGOING) continue;
    const auto captured = std::min(static_cast<std::size_t>(n), buffer.size());
    if (auto segment = parse_tcp_segment({buffer.data(), captured})) record(*segment);
  }
}

void PacketTtlSocket::record(const TcpSegment& segment) {
  auto found = ports_.find(segment.destination_port);
  if (found == ports_.end()) {
    if (ports_.size() >= kMaxTrackedPorts) return;
    found = ports_.emplace(segment.destination_port, PortTtls{}).first;
  }
  PortTtls& ttls = found->second;
  if (segment.syn && segment.ack) {
    // A SYN-ACK starts a new connection on this port: forget the previous one's data.
    ttls = PortTtls{segment.ttl, std::nullopt};
  } else if (segment.payload_bytes > 0 && !ttls.data_ttl) {
    ttls.data_ttl = segment.ttl;
  }
}

void close_packet_sockets(std::vector<UniqueFd>& sockets) noexcept {
  constexpr std::size_t kMaxClosers = 64;
  const std::size_t closers = std::min(sockets.size(), kMaxClosers);
  if (closers > 1) {
    try {
      std::vector<std::jthread> workers;
      workers.reserve(closers);
      for (std::size_t first = 0; first < closers; ++first) {
        workers.emplace_back([&sockets, first, closers] {
          for (std::size_t i = first; i < sockets.size(); i += closers) sockets[i].reset();
        });
      }
    } catch (const std::system_error&) {
      // Fewer threads than hoped (all joined by now): what they did not close goes below.
    }
  }
  sockets.clear();
}

PortTtls PacketTtlSocket::at(std::uint16_t local_port) const {
  const auto found = ports_.find(local_port);
  return found == ports_.end() ? PortTtls{} : found->second;
}

}  // namespace imds
