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
#include <stdexcept>
#include <system_error>
#include <thread>

namespace imds {

namespace {

constexpr std::size_t kMaxTrackedPorts = 8192;
constexpr int kMaxReadsPerDrain = 4096;
constexpr std::uint32_t kSnapBytes = 160;  // IPv6 40 + TCP 60 + slack; headers only

std::optional<TcpSegment> parse_tcp(std::span<const std::uint8_t> tcp, std::size_t tcp_length,
                                    std::size_t tcp_offset, TcpSegment segment) {
  tcphdr header{};
  if (tcp.size() < sizeof header || tcp_length < sizeof header) return std::nullopt;
  std::memcpy(&header, tcp.data(), sizeof header);
  const std::size_t header_bytes = static_cast<std::size_t>(header.th_off) * 4;
  if (header_bytes < sizeof header || header_bytes > tcp_length) return std::nullopt;
  segment.source_port = ntohs(header.th_sport);
  segment.destination_port = ntohs(header.th_dport);
  segment.syn = (header.th_flags & TH_SYN) != 0;
  segment.ack = (header.th_flags & TH_ACK) != 0;
  segment.fin = (header.th_flags & TH_FIN) != 0;
  segment.rst = (header.th_flags & TH_RST) != 0;
  segment.sequence = ntohl(header.th_seq);
  segment.acknowledgement = ntohl(header.th_ack);
  segment.payload_bytes = tcp_length - header_bytes;
  segment.payload_offset = tcp_offset + header_bytes;
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
  std::memcpy(segment.source_address.data(), &header.ip_src, sizeof header.ip_src);
  std::memcpy(segment.destination_address.data(), &header.ip_dst, sizeof header.ip_dst);
  return parse_tcp(packet.subspan(header_bytes), total - header_bytes, header_bytes, segment);
}

std::optional<TcpSegment> parse_v6(std::span<const std::uint8_t> packet) {
  ip6_hdr header{};
  if (packet.size() < sizeof header) return std::nullopt;
  std::memcpy(&header, packet.data(), sizeof header);
  if (header.ip6_nxt != IPPROTO_TCP) return std::nullopt;  // extension headers: not ours
  TcpSegment segment;
  segment.family = Family::v6;
  segment.ttl = header.ip6_hlim;
  std::memcpy(segment.source_address.data(), &header.ip6_src, sizeof header.ip6_src);
  std::memcpy(segment.destination_address.data(), &header.ip6_dst, sizeof header.ip6_dst);
  return parse_tcp(packet.subspan(sizeof header), ntohs(header.ip6_plen), sizeof header,
                   segment);
}

// A classic BPF program assembled front to back: conditional jumps name labels, and the
// distances are filled in once every label's place is known (classic BPF jumps only forward).
class FilterAssembler {
 public:
  enum Label : std::uint8_t { next, accept, reject, to_imds, source_port, kLabels };

  void statement(std::uint16_t code, std::uint32_t k) { program_.push_back(BPF_STMT(code, k)); }
  void jump(std::uint16_t code, std::uint32_t k, Label on_true, Label on_false) {
    jumps_.push_back({program_.size(), on_true, on_false});
    program_.push_back(BPF_JUMP(code, k, 0, 0));
  }
  // A = value, or go to `otherwise`.
  void expect(std::uint32_t value, Label otherwise) {
    jump(BPF_JMP | BPF_JEQ | BPF_K, value, next, otherwise);
  }
  void place(Label label) { places_.at(label) = program_.size(); }

  std::vector<sock_filter> finish() && {
    for (const Jump& jump : jumps_) {
      program_[jump.index].jt = distance(jump.index, jump.on_true);
      program_[jump.index].jf = distance(jump.index, jump.on_false);
    }
    return std::move(program_);
  }

 private:
  struct Jump {
    std::size_t index;
    Label on_true;
    Label on_false;
  };
  [[nodiscard]] std::uint8_t distance(std::size_t from, Label to) const {
    const std::size_t target = to == next ? from + 1 : places_.at(to);
    if (target <= from || target - from - 1 > 255) {
      throw std::logic_error("packet filter: a jump that classic BPF cannot take");
    }
    return static_cast<std::uint8_t>(target - from - 1);
  }

  std::vector<sock_filter> program_;
  std::vector<Jump> jumps_;
  std::array<std::size_t, kLabels> places_{};
};

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

std::vector<sock_filter> imds_segment_filter(const ImdsAddress& imds, std::uint32_t snap_bytes) {
  // Offsets are from the IP header: AF_PACKET SOCK_DGRAM hands the filter the network layer.
  // The link-layer protocol (the socket sees every protocol, to see its own outgoing SYNs) is
  // checked by drain(); here the version nibble keeps the offsets meaningful.
  using L = FilterAssembler;
  FilterAssembler a;
  a.statement(BPF_LD | BPF_B | BPF_ABS, 0);
  a.statement(BPF_ALU | BPF_AND | BPF_K, 0xf0);
  if (imds.family == Family::v4) {
    a.expect(0x40, L::reject);
    a.statement(BPF_LD | BPF_B | BPF_ABS, 9);
    a.expect(IPPROTO_TCP, L::reject);
    // Fragments carry no TCP header at the expected place.
    a.statement(BPF_LD | BPF_H | BPF_ABS, 6);
    a.jump(BPF_JMP | BPF_JSET | BPF_K, 0x3fff, L::reject, L::next);
    a.statement(BPF_LDX | BPF_B | BPF_MSH, 0);  // X = IP header length
    const std::uint32_t address = ntohl(imds.v4.s_addr);
    a.statement(BPF_LD | BPF_W | BPF_ABS, 12);  // source address
    a.expect(address, L::to_imds);
    a.statement(BPF_LD | BPF_H | BPF_IND, 0);  // source port
    // Another port: still ours when both ends share the address (an IMDS on loopback).
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, imds.port, L::accept, L::to_imds);
    a.place(L::to_imds);
    a.statement(BPF_LD | BPF_W | BPF_ABS, 16);  // destination address
    a.expect(address, L::reject);
    a.statement(BPF_LD | BPF_H | BPF_IND, 2);  // destination port
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, imds.port, L::accept, L::reject);
  } else {
    a.expect(0x60, L::reject);
    a.statement(BPF_LD | BPF_B | BPF_ABS, 6);
    a.expect(IPPROTO_TCP, L::reject);  // extension headers: not ours
    std::array<std::uint32_t, 4> words{};
    for (std::size_t word = 0; word < words.size(); ++word) {
      std::uint32_t value = 0;
      std::memcpy(&value, &imds.v6.s6_addr[word * 4], sizeof value);
      words.at(word) = ntohl(value);
    }
    for (std::uint32_t word = 0; word < 4; ++word) {  // source address
      a.statement(BPF_LD | BPF_W | BPF_ABS, 8 + word * 4);
      a.expect(words.at(word), L::to_imds);
    }
    a.statement(BPF_LD | BPF_H | BPF_ABS, 40);  // source port
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, imds.port, L::accept, L::to_imds);
    a.place(L::to_imds);
    for (std::uint32_t word = 0; word < 4; ++word) {  // destination address
      a.statement(BPF_LD | BPF_W | BPF_ABS, 24 + word * 4);
      a.expect(words.at(word), L::reject);
    }
    a.statement(BPF_LD | BPF_H | BPF_ABS, 42);  // destination port
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, imds.port, L::accept, L::reject);
  }
  a.place(L::accept);
  a.statement(BPF_RET | BPF_K, snap_bytes);
  a.place(L::reject);
  a.statement(BPF_RET | BPF_K, 0);
  return std::move(a).finish();
}

std::optional<SocketName> socket_name_of(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) return std::nullopt;
  SocketName name;
  if (address.ss_family == AF_INET && length >= sizeof(sockaddr_in)) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&address);
    name.family = Family::v4;
    std::memcpy(name.address.data(), &v4->sin_addr, sizeof v4->sin_addr);
    name.port = ntohs(v4->sin_port);
  } else if (address.ss_family == AF_INET6 && length >= sizeof(sockaddr_in6)) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&address);
    name.family = Family::v6;
    std::memcpy(name.address.data(), &v6->sin6_addr, sizeof v6->sin6_addr);
    name.port = ntohs(v6->sin6_port);
  } else {
    return std::nullopt;
  }
  if (name.port == 0) return std::nullopt;  // not bound yet
  return name;
}

std::optional<SocketName> socket_name_from(const char* address, long port) {
  if (address == nullptr || port <= 0 || port > 65535) return std::nullopt;
  SocketName name;
  name.port = static_cast<std::uint16_t>(port);
  if (::inet_pton(AF_INET, address, name.address.data()) == 1) {
    name.family = Family::v4;
  } else if (::inet_pton(AF_INET6, address, name.address.data()) == 1) {
    name.family = Family::v6;
  } else {
    return std::nullopt;
  }
  return name;
}

ConnectionTtls::ConnectionTtls(const ImdsAddress& imds)
    : family_(imds.family), imds_port_(imds.port) {
  if (imds.family == Family::v4) {
    std::memcpy(imds_address_.data(), &imds.v4, sizeof imds.v4);
  } else {
    std::memcpy(imds_address_.data(), &imds.v6, sizeof imds.v6);
  }
}

bool ConnectionTtls::from_imds(const TcpSegment& segment) const {
  return segment.family == family_ && segment.source_address == imds_address_ &&
         segment.source_port == imds_port_;
}

bool ConnectionTtls::to_imds(const TcpSegment& segment) const {
  return segment.family == family_ && segment.destination_address == imds_address_ &&
         segment.destination_port == imds_port_;
}

void ConnectionTtls::take(int ifindex, bool outgoing, std::span<const std::uint8_t> packet) {
  const auto segment = parse_tcp_segment(packet);
  if (!segment) return;
  if (outgoing) {
    // Our SYN (or anybody's in this namespace): it names the connection's local end and the
    // interface the IMDS's answers must arrive on.
    if (!segment->syn || segment->ack || !to_imds(*segment)) return;
    const SocketName local{segment->family, segment->source_address, segment->source_port};
    const auto found = connections_.find(local);
    if (found != connections_.end()) {
      if (found->second.ifindex != ifindex) found->second = Connection{ifindex, {}};
      return;  // a retransmitted SYN changes nothing
    }
    if (connections_.size() >= kMaxTrackedPorts) return;
    connections_.emplace(local, Connection{ifindex, {}});
    return;
  }
  if (!from_imds(*segment)) return;  // our own SYN looped back on lo, say
  const SocketName local{segment->family, segment->destination_address,
                         segment->destination_port};
  const auto found = connections_.find(local);
  if (found == connections_.end() || found->second.ifindex != ifindex) {
    ++foreign_;
    return;
  }
  PortTtls& ttls = found->second.ttls;
  if (segment->syn && segment->ack) {
    // A SYN-ACK starts the connection: forget what an earlier one on this port showed.
    ttls = PortTtls{segment->ttl, std::nullopt};
  } else if (segment->payload_bytes > 0 && !ttls.data_ttl) {
    ttls.data_ttl = segment->ttl;
  }
}

PortTtls ConnectionTtls::at(const SocketName& local) const {
  const auto found = connections_.find(local);
  return found == connections_.end() ? PortTtls{} : found->second.ttls;
}

Result<UniqueFd> open_imds_packet_socket(const NetnsSocketFactory& factory, int netns,
                                         const ImdsAddress& imds, std::uint32_t snap_bytes) {
  // Protocol 0 receives nothing until bind(): attach the filter first so no unrelated packet
  // is ever queued.
  const int raw = factory.socket_in(netns, AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  if (raw < 0) return Error{errno_message("cannot open a packet socket", -raw)};
  UniqueFd fd(raw);
  std::vector<sock_filter> program = imds_segment_filter(imds, snap_bytes);
  sock_fprog fprog{};
  fprog.len = static_cast<unsigned short>(program.size());
  fprog.filter = program.data();
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog) != 0) {
    return Error{errno_message("cannot attach the IMDS filter to a packet socket", errno)};
  }
  // Every protocol: only a socket bound to ETH_P_ALL sees outgoing packets (our SYNs).
  sockaddr_ll address{};
  address.sll_family = AF_PACKET;
  address.sll_protocol = htons(ETH_P_ALL);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    return Error{errno_message("cannot bind a packet socket", errno)};
  }
  return fd;
}

Result<PacketTtlSocket> PacketTtlSocket::open(const NetnsSocketFactory& factory, int netns,
                                              const ImdsAddress& from) {
  auto fd = open_imds_packet_socket(factory, netns, from, kSnapBytes);
  if (!fd) return fd.error();
  return PacketTtlSocket(std::move(*fd), from);
}

void PacketTtlSocket::drain() {
  std::array<std::uint8_t, kSnapBytes> buffer{};
  for (int reads = 0; reads < kMaxReadsPerDrain; ++reads) {
    sockaddr_ll peer{};
    socklen_t peer_length = sizeof peer;
    const ssize_t n = ::recvfrom(fd_.get(), buffer.data(), buffer.size(), MSG_TRUNC,
                                 reinterpret_cast<sockaddr*>(&peer), &peer_length);
    if (n < 0) return;  // EAGAIN: drained; anything else: nothing more to learn now
    const int expected = ttls_.family() == Family::v4 ? ETH_P_IP : ETH_P_IPV6;
    if (ntohs(peer.sll_protocol) != expected) continue;
    const auto captured = std::min(static_cast<std::size_t>(n), buffer.size());
    ttls_.take(peer.sll_ifindex, peer.sll_pkttype == PACKET_OUTGOING, {buffer.data(), captured});
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

}  // namespace imds
