// The packet socket: its header parser on crafted IPv4/IPv6 + TCP byte buffers, its BPF
// program, and closing many of them at once.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

#include "packet_ttl.hpp"

namespace imds {
namespace {

constexpr std::uint8_t kSyn = 0x02;
constexpr std::uint8_t kAck = 0x10;
constexpr std::uint8_t kPsh = 0x08;

void put16(std::vector<std::uint8_t>& bytes, std::size_t at, std::uint16_t value) {
  bytes[at] = static_cast<std::uint8_t>(value >> 8);
  bytes[at + 1] = static_cast<std::uint8_t>(value & 0xff);
}

std::vector<std::uint8_t> tcp_header(std::uint16_t source, std::uint16_t destination,
                                     std::uint8_t flags, std::size_t option_bytes = 0) {
  std::vector<std::uint8_t> tcp(20 + option_bytes, 0);
  put16(tcp, 0, source);
  put16(tcp, 2, destination);
  tcp[12] = static_cast<std::uint8_t>(((20 + option_bytes) / 4) << 4);
  tcp[13] = flags;
  for (std::size_t i = 20; i < tcp.size(); ++i) tcp[i] = 1;  // NOP options
  return tcp;
}

std::vector<std::uint8_t> ipv4_packet(int ttl, const std::vector<std::uint8_t>& tcp,
                                      std::size_t payload, std::size_t ip_option_bytes = 0,
                                      std::uint8_t protocol = IPPROTO_TCP) {
  const std::size_t header = 20 + ip_option_bytes;
  std::vector<std::uint8_t> packet(header, 0);
  packet[0] = static_cast<std::uint8_t>(0x40 | (header / 4));
  put16(packet, 2, static_cast<std::uint16_t>(header + tcp.size() + payload));
  packet[8] = static_cast<std::uint8_t>(ttl);
  packet[9] = protocol;
  packet[12] = 169;
  packet[13] = 254;
  packet[14] = 169;
  packet[15] = 254;
  packet.insert(packet.end(), tcp.begin(), tcp.end());
  packet.resize(packet.size() + payload, 'x');
  return packet;
}

std::vector<std::uint8_t> ipv6_packet(int hop_limit, const std::vector<std::uint8_t>& tcp,
                                      std::size_t payload, std::uint8_t next = IPPROTO_TCP) {
  std::vector<std::uint8_t> packet(40, 0);
  packet[0] = 0x60;
  put16(packet, 4, static_cast<std::uint16_t>(tcp.size() + payload));
  packet[6] = next;
  packet[7] = static_cast<std::uint8_t>(hop_limit);
  packet.insert(packet.end(), tcp.begin(), tcp.end());
  packet.resize(packet.size() + payload, 'x');
  return packet;
}

TEST(PacketParser, ReadsTtlPortsAndFlagsOfAnIpv4SynAck) {
  const auto packet = ipv4_packet(63, tcp_header(80, 40000, kSyn | kAck), 0);
  const auto segment = parse_tcp_segment(packet);
  ASSERT_TRUE(segment);
  EXPECT_EQ(segment->family, Family::v4);
  EXPECT_EQ(segment->ttl, 63);
  EXPECT_EQ(segment->source_port, 80);
  EXPECT_EQ(segment->destination_port, 40000);
  EXPECT_TRUE(segment->syn);
  EXPECT_TRUE(segment->ack);
  EXPECT_EQ(segment->payload_bytes, 0U);
}

TEST(PacketParser, CountsPayloadFromTheIpLengthEvenWhenOnlyHeadersWereCaptured) {
  auto packet = ipv4_packet(2, tcp_header(80, 51000, kAck | kPsh), 1200);
  packet.resize(60);  // a snap length that keeps the headers only
  const auto segment = parse_tcp_segment(packet);
  ASSERT_TRUE(segment);
  EXPECT_EQ(segment->ttl, 2);
  EXPECT_FALSE(segment->syn);
  EXPECT_EQ(segment->payload_bytes, 1200U);
}

TEST(PacketParser, SkipsIpv4AndTcpOptions) {
  const auto packet = ipv4_packet(7, tcp_header(8080, 1234, kAck, 12), 5, 8);
  const auto segment = parse_tcp_segment(packet);
  ASSERT_TRUE(segment);
  EXPECT_EQ(segment->ttl, 7);
  EXPECT_EQ(segment->source_port, 8080);
  EXPECT_EQ(segment->destination_port, 1234);
  EXPECT_EQ(segment->payload_bytes, 5U);
}

TEST(PacketParser, ReadsTheHopLimitOfAnIpv6Segment) {
  const auto packet = ipv6_packet(1, tcp_header(80, 33333, kAck | kPsh), 56);
  const auto segment = parse_tcp_segment(packet);
  ASSERT_TRUE(segment);
  EXPECT_EQ(segment->family, Family::v6);
  EXPECT_EQ(segment->ttl, 1);
  EXPECT_EQ(segment->destination_port, 33333);
  EXPECT_EQ(segment->payload_bytes, 56U);
}

TEST(PacketParser, RejectsEveryTruncationOfTheHeaders) {
  const auto v4 = ipv4_packet(64, tcp_header(80, 40000, kSyn | kAck), 0);
  for (std::size_t size = 0; size < 40; ++size) {
    EXPECT_FALSE(parse_tcp_segment({v4.data(), size})) << "IPv4 cut at " << size;
  }
  const auto v6 = ipv6_packet(64, tcp_header(80, 40000, kSyn | kAck), 0);
  for (std::size_t size = 0; size < 60; ++size) {
    EXPECT_FALSE(parse_tcp_segment({v6.data(), size})) << "IPv6 cut at " << size;
  }
}

TEST(PacketParser, RejectsOtherProtocolsAndIpv6ExtensionHeaders) {
  EXPECT_FALSE(parse_tcp_segment(ipv4_packet(64, tcp_header(80, 1, kAck), 0, 0, IPPROTO_UDP)));
  EXPECT_FALSE(parse_tcp_segment(ipv6_packet(64, tcp_header(80, 1, kAck), 0, IPPROTO_UDP)));
  EXPECT_FALSE(parse_tcp_segment(ipv6_packet(64, tcp_header(80, 1, kAck), 0, 0 /* hop-by-hop */)));
  auto not_ip = ipv4_packet(64, tcp_header(80, 1, kAck), 0);
  not_ip[0] = 0x55;
  EXPECT_FALSE(parse_tcp_segment(not_ip));
}

TEST(PacketParser, RejectsLengthFieldsThatContradictTheHeaders) {
  auto short_ihl = ipv4_packet(64, tcp_header(80, 1, kAck), 0);
  short_ihl[0] = 0x44;  // IHL 4: shorter than the fixed header
  EXPECT_FALSE(parse_tcp_segment(short_ihl));

  auto short_total = ipv4_packet(64, tcp_header(80, 1, kAck), 0);
  put16(short_total, 2, 30);  // total length leaves no room for a TCP header
  EXPECT_FALSE(parse_tcp_segment(short_total));

  auto long_doff = ipv4_packet(64, tcp_header(80, 1, kAck), 0);
  long_doff[20 + 12] = 0xf0;  // TCP header of 60 bytes in a 20-byte segment
  EXPECT_FALSE(parse_tcp_segment(long_doff));

  auto tiny_doff = ipv6_packet(64, tcp_header(80, 1, kAck), 10);
  tiny_doff[40 + 12] = 0x40;  // data offset 4 words: less than a TCP header
  EXPECT_FALSE(parse_tcp_segment(tiny_doff));
}

TEST(PacketParser, RejectsIpv4Fragments) {
  auto first = ipv4_packet(64, tcp_header(80, 1, kAck), 10);
  put16(first, 6, 0x2000);  // more fragments
  EXPECT_FALSE(parse_tcp_segment(first));
  auto later = ipv4_packet(64, tcp_header(80, 1, kAck), 10);
  put16(later, 6, 0x0003);  // offset 24
  EXPECT_FALSE(parse_tcp_segment(later));
}

TEST(PacketFilter, EndsWithAcceptAndRejectAndJumpsOnlyForward) {
  ImdsAddress from;
  from.family = Family::v4;
  ::inet_pton(AF_INET, "169.254.169.254", &from.v4);
  for (const Family family : {Family::v4, Family::v6}) {
    from.family = family;
    const auto program = imds_segment_filter(from, 160);
    ASSERT_GE(program.size(), 4U);
    EXPECT_EQ(program.back().code, BPF_RET | BPF_K);
    EXPECT_EQ(program.back().k, 0U);
    EXPECT_EQ(program[program.size() - 2].k, 160U);
    for (std::size_t i = 0; i < program.size(); ++i) {
      if (BPF_CLASS(program[i].code) != BPF_JMP) continue;
      // Every conditional jump's rejecting branch lands exactly on `ret #0`.
      const std::size_t reject = program.size() - 1;
      const bool rejects_on_true = BPF_OP(program[i].code) == BPF_JSET;
      const std::size_t target = i + 1 + (rejects_on_true ? program[i].jt : program[i].jf);
      EXPECT_EQ(target, reject) << "instruction " << i;
    }
  }
}

TEST(PacketSockets, ClosingInBulkClosesEverySocket) {
  if (::geteuid() != 0) GTEST_SKIP() << "AF_PACKET needs CAP_NET_RAW";
  const NetnsSocketFactory factory;
  ImdsAddress from;
  ::inet_pton(AF_INET, "127.0.0.1", &from.v4);
  std::vector<UniqueFd> sockets;
  std::vector<int> numbers;
  for (int i = 0; i < 20; ++i) {
    auto opened = PacketTtlSocket::open(factory, -1, from);
    ASSERT_TRUE(opened) << opened.error().message;
    numbers.push_back(opened->fd());
    sockets.push_back(std::move(opened).value().take_fd());
  }
  close_packet_sockets(sockets);
  EXPECT_TRUE(sockets.empty());
  for (const int fd : numbers) EXPECT_EQ(::fcntl(fd, F_GETFD), -1) << "fd " << fd << " is open";
}

}  // namespace
}  // namespace imds
