// The packet socket: its header parser on crafted IPv4/IPv6 + TCP byte buffers, its BPF
// program run by the kernel, the matching of segments to our connections, and closing many
// sockets at once.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstring>
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

constexpr std::array<std::uint8_t, 4> kImds4{169, 254, 169, 254};
constexpr std::array<std::uint8_t, 4> kLocal4{172, 17, 0, 2};
constexpr std::array<std::uint8_t, 4> kOther4{172, 17, 0, 3};

std::vector<std::uint8_t> ipv4_packet(int ttl, const std::vector<std::uint8_t>& tcp,
                                      std::size_t payload, std::size_t ip_option_bytes = 0,
                                      std::uint8_t protocol = IPPROTO_TCP,
                                      std::array<std::uint8_t, 4> source = kImds4,
                                      std::array<std::uint8_t, 4> destination = kLocal4) {
  const std::size_t header = 20 + ip_option_bytes;
  std::vector<std::uint8_t> packet(header, 0);
  packet[0] = static_cast<std::uint8_t>(0x40 | (header / 4));
  put16(packet, 2, static_cast<std::uint16_t>(header + tcp.size() + payload));
  packet[8] = static_cast<std::uint8_t>(ttl);
  packet[9] = protocol;
  std::memcpy(&packet[12], source.data(), 4);
  std::memcpy(&packet[16], destination.data(), 4);
  packet.insert(packet.end(), tcp.begin(), tcp.end());
  packet.resize(packet.size() + payload, 'x');
  return packet;
}

std::array<std::uint8_t, 16> v6(const char* text) {
  std::array<std::uint8_t, 16> bytes{};
  EXPECT_EQ(::inet_pton(AF_INET6, text, bytes.data()), 1) << text;
  return bytes;
}

std::vector<std::uint8_t> ipv6_packet(int hop_limit, const std::vector<std::uint8_t>& tcp,
                                      std::size_t payload, std::uint8_t next = IPPROTO_TCP,
                                      const char* source = "fd00:ec2::254",
                                      const char* destination = "fd00:1::2") {
  std::vector<std::uint8_t> packet(40, 0);
  packet[0] = 0x60;
  put16(packet, 4, static_cast<std::uint16_t>(tcp.size() + payload));
  packet[6] = next;
  packet[7] = static_cast<std::uint8_t>(hop_limit);
  std::memcpy(&packet[8], v6(source).data(), 16);
  std::memcpy(&packet[24], v6(destination).data(), 16);
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
  EXPECT_EQ(0, std::memcmp(segment->source_address.data(), kImds4.data(), 4));
  EXPECT_EQ(0, std::memcmp(segment->destination_address.data(), kLocal4.data(), 4));
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

ImdsAddress imds_v4() {
  ImdsAddress imds;
  imds.family = Family::v4;
  ::inet_pton(AF_INET, "169.254.169.254", &imds.v4);
  return imds;
}

ImdsAddress imds_v6() {
  ImdsAddress imds;
  imds.family = Family::v6;
  ::inet_pton(AF_INET6, "fd00:ec2::254", &imds.v6);
  return imds;
}

// The filter as the kernel runs it: attached to the receiving end of an AF_UNIX datagram
// pair, it sees each datagram from its first byte (as a packet socket's filter sees the IP
// header) and drops or trims it. Returns how many bytes of `packet` got through (0: dropped).
class KernelFilter {
 public:
  explicit KernelFilter(const ImdsAddress& imds, std::uint32_t snap = 160) {
    std::array<int, 2> pair{-1, -1};
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, pair.data()), 0);
    send_ = UniqueFd(pair[0]);
    receive_ = UniqueFd(pair[1]);
    std::vector<sock_filter> program = imds_segment_filter(imds, snap);
    sock_fprog fprog{};
    fprog.len = static_cast<unsigned short>(program.size());
    fprog.filter = program.data();
    EXPECT_EQ(::setsockopt(receive_.get(), SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog), 0)
        << std::strerror(errno);
  }

  std::size_t passes(const std::vector<std::uint8_t>& packet) {
    EXPECT_EQ(::send(send_.get(), packet.data(), packet.size(), 0),
              static_cast<ssize_t>(packet.size()));
    std::array<std::uint8_t, 2048> buffer{};
    const ssize_t n = ::recv(receive_.get(), buffer.data(), buffer.size(), 0);
    return n < 0 ? 0 : static_cast<std::size_t>(n);
  }

 private:
  UniqueFd send_;
  UniqueFd receive_;
};

TEST(PacketFilter, TheKernelPassesSegmentsFromAndToTheImdsTrimmedToTheSnapLength) {
  KernelFilter filter(imds_v4(), 60);
  // From the IMDS to us, and from us to the IMDS (our SYN), trimmed to 60 bytes.
  EXPECT_EQ(filter.passes(ipv4_packet(63, tcp_header(80, 40000, kSyn | kAck), 0)), 40U);
  EXPECT_EQ(filter.passes(ipv4_packet(64, tcp_header(80, 40000, kAck), 500)), 60U);
  EXPECT_EQ(filter.passes(ipv4_packet(64, tcp_header(40000, 80, kSyn), 0, 0, IPPROTO_TCP, kLocal4,
                                      kImds4)),
            40U);
  // Both ends on one address (an IMDS on loopback): our SYN from another port passes.
  EXPECT_EQ(filter.passes(ipv4_packet(64, tcp_header(40000, 80, kSyn), 0, 0, IPPROTO_TCP, kImds4,
                                      kImds4)),
            40U);
  // With IP options the ports are found after them.
  EXPECT_EQ(filter.passes(ipv4_packet(64, tcp_header(80, 40000, kAck), 0, 8)), 48U);
}

TEST(PacketFilter, TheKernelDropsWhatIsNeitherFromNorToTheImdsPort) {
  KernelFilter filter(imds_v4());
  EXPECT_EQ(filter.passes(ipv4_packet(64, tcp_header(8080, 40000, kAck), 0)), 0U);  // other port
  EXPECT_EQ(filter.passes(ipv4_packet(64, tcp_header(40000, 8080, kSyn), 0, 0, IPPROTO_TCP,
                                      kLocal4, kImds4)),
            0U);
  EXPECT_EQ(filter.passes(ipv4_packet(64, tcp_header(80, 40000, kAck), 0, 0, IPPROTO_TCP, kOther4,
                                      kLocal4)),
            0U);  // other address
  EXPECT_EQ(filter.passes(ipv4_packet(64, tcp_header(80, 40000, kAck), 0, 0, IPPROTO_UDP)), 0U);
  auto fragment = ipv4_packet(64, tcp_header(80, 40000, kAck), 10);
  put16(fragment, 6, 0x2000);
  EXPECT_EQ(filter.passes(fragment), 0U);
  // An IPv6 packet does not pass the IPv4 filter, even with the same bytes where IPv4 has them.
  EXPECT_EQ(filter.passes(ipv6_packet(64, tcp_header(80, 40000, kAck), 0)), 0U);
}

TEST(PacketFilter, TheKernelRunsTheIpv6ProgramOnEveryAddressWord) {
  KernelFilter filter(imds_v6());
  EXPECT_EQ(filter.passes(ipv6_packet(2, tcp_header(80, 40000, kSyn | kAck), 0)), 60U);
  EXPECT_EQ(filter.passes(ipv6_packet(64, tcp_header(40000, 80, kSyn), 0, IPPROTO_TCP,
                                      "fd00:1::2", "fd00:ec2::254")),
            60U);
  EXPECT_EQ(filter.passes(ipv6_packet(64, tcp_header(40000, 80, kSyn), 0, IPPROTO_TCP,
                                      "fd00:ec2::254", "fd00:ec2::254")),
            60U);
  // One word off in each position of the source address.
  for (const char* other : {"fd01:ec2::254", "fd00:ec2:1::254", "fd00:ec2::1:0:254",
                            "fd00:ec2::255"}) {
    EXPECT_EQ(filter.passes(ipv6_packet(2, tcp_header(80, 40000, kAck), 0, IPPROTO_TCP, other)), 0U)
        << other;
  }
  EXPECT_EQ(filter.passes(ipv6_packet(2, tcp_header(81, 40000, kAck), 0)), 0U);
  EXPECT_EQ(filter.passes(ipv6_packet(2, tcp_header(80, 40000, kAck), 0, 0 /* hop-by-hop */)), 0U);
  EXPECT_EQ(filter.passes(ipv4_packet(64, tcp_header(80, 40000, kAck), 0)), 0U);
}

SocketName local4(std::uint16_t port, std::array<std::uint8_t, 4> address = kLocal4) {
  SocketName name;
  name.family = Family::v4;
  std::memcpy(name.address.data(), address.data(), 4);
  name.port = port;
  return name;
}

constexpr int kEth0 = 7;
constexpr int kLo = 1;

std::vector<std::uint8_t> our_syn(std::uint16_t port) {
  return ipv4_packet(64, tcp_header(port, 80, kSyn), 0, 0, IPPROTO_TCP, kLocal4, kImds4);
}

TEST(ConnectionTtls, CountsSegmentsOfOurConnectionOnTheInterfaceItsSynLeftBy) {
  ConnectionTtls ttls(imds_v4());
  ttls.take(kEth0, true, our_syn(40000));
  ttls.take(kEth0, false, ipv4_packet(63, tcp_header(80, 40000, kSyn | kAck), 0));
  ttls.take(kEth0, false, ipv4_packet(1, tcp_header(80, 40000, kAck | kPsh), 56));
  ttls.take(kEth0, false, ipv4_packet(9, tcp_header(80, 40000, kAck | kPsh), 56));  // later data
  EXPECT_EQ(ttls.at(local4(40000)).handshake_ttl, 63);
  EXPECT_EQ(ttls.at(local4(40000)).data_ttl, 1);
  EXPECT_EQ(ttls.foreign_segments(), 0U);
}

TEST(ConnectionTtls, IgnoresASynAckAndDataForgedOverAnotherInterface) {
  // A process with CAP_NET_RAW in the namespace answers our SYN over lo, claiming to be the
  // IMDS zero hops away, before and after the real answers.
  ConnectionTtls ttls(imds_v4());
  ttls.take(kEth0, true, our_syn(40000));
  ttls.take(kLo, false, ipv4_packet(64, tcp_header(80, 40000, kSyn | kAck), 0));
  ttls.take(kLo, false, ipv4_packet(64, tcp_header(80, 40000, kAck | kPsh), 56));
  ttls.take(kEth0, false, ipv4_packet(63, tcp_header(80, 40000, kSyn | kAck), 0));
  ttls.take(kLo, false, ipv4_packet(64, tcp_header(80, 40000, kSyn | kAck), 0));
  ttls.take(kLo, false, ipv4_packet(64, tcp_header(80, 40000, kAck | kPsh), 56));
  ttls.take(kEth0, false, ipv4_packet(1, tcp_header(80, 40000, kAck | kPsh), 56));
  EXPECT_EQ(ttls.at(local4(40000)).handshake_ttl, 63);
  EXPECT_EQ(ttls.at(local4(40000)).data_ttl, 1);
  EXPECT_EQ(ttls.foreign_segments(), 4U);
}

TEST(ConnectionTtls, IgnoresSegmentsToAnotherLocalEndOrWithoutOurSyn) {
  ConnectionTtls ttls(imds_v4());
  // No SYN seen for this port: not our connection.
  ttls.take(kEth0, false, ipv4_packet(63, tcp_header(80, 40001, kSyn | kAck), 0));
  EXPECT_FALSE(ttls.at(local4(40001)).handshake_ttl);
  // Our SYN from 172.17.0.2:40000; a SYN-ACK to 172.17.0.3:40000 is someone else's.
  ttls.take(kEth0, true, our_syn(40000));
  ttls.take(kEth0, false, ipv4_packet(64, tcp_header(80, 40000, kSyn | kAck), 0, 0, IPPROTO_TCP,
                                      kImds4, kOther4));
  EXPECT_FALSE(ttls.at(local4(40000)).handshake_ttl);
  EXPECT_FALSE(ttls.at(local4(40000, kOther4)).handshake_ttl);
  // A SYN-ACK "from" the IMDS's address but another port.
  ttls.take(kEth0, false, ipv4_packet(64, tcp_header(8080, 40000, kSyn | kAck), 0));
  EXPECT_FALSE(ttls.at(local4(40000)).handshake_ttl);
  EXPECT_EQ(ttls.foreign_segments(), 2U);
}

TEST(ConnectionTtls, ASynAgainOnTheSamePortStartsOverOnlyWhenItLeavesByAnotherInterface) {
  ConnectionTtls ttls(imds_v4());
  ttls.take(kEth0, true, our_syn(40000));
  ttls.take(kEth0, false, ipv4_packet(63, tcp_header(80, 40000, kSyn | kAck), 0));
  ttls.take(kEth0, true, our_syn(40000));  // a retransmission
  EXPECT_EQ(ttls.at(local4(40000)).handshake_ttl, 63);
  ttls.take(kLo, true, our_syn(40000));  // the route changed: answers must now come by lo
  EXPECT_FALSE(ttls.at(local4(40000)).handshake_ttl);
  ttls.take(kEth0, false, ipv4_packet(63, tcp_header(80, 40000, kSyn | kAck), 0));
  EXPECT_FALSE(ttls.at(local4(40000)).handshake_ttl);
  ttls.take(kLo, false, ipv4_packet(62, tcp_header(80, 40000, kSyn | kAck), 0));
  EXPECT_EQ(ttls.at(local4(40000)).handshake_ttl, 62);
  ttls.forget(local4(40000));
  EXPECT_FALSE(ttls.at(local4(40000)).handshake_ttl);
}

TEST(ConnectionTtls, MatchesIpv6ConnectionsByTheirFullAddress) {
  ConnectionTtls ttls(imds_v6());
  ttls.take(kEth0, true, ipv6_packet(64, tcp_header(40000, 80, kSyn), 0, IPPROTO_TCP,
                                     "fd00:1::2", "fd00:ec2::254"));
  ttls.take(kEth0, false, ipv6_packet(1, tcp_header(80, 40000, kSyn | kAck), 0, IPPROTO_TCP,
                                      "fd00:ec2::254", "fd00:1::3"));
  ttls.take(kEth0, false, ipv6_packet(2, tcp_header(80, 40000, kSyn | kAck), 0));
  SocketName local;
  local.family = Family::v6;
  local.address = v6("fd00:1::2");
  local.port = 40000;
  EXPECT_EQ(ttls.at(local).handshake_ttl, 2);
  EXPECT_EQ(ttls.foreign_segments(), 1U);
  // An IPv4 segment means nothing to an IPv6 socket's bookkeeping.
  ttls.take(kEth0, false, ipv4_packet(64, tcp_header(80, 40000, kSyn | kAck), 0));
  EXPECT_EQ(ttls.at(local).handshake_ttl, 2);
}

TEST(SocketNames, ComeFromCurlsTextAndRejectWhatIsNotAnAddressAndPort) {
  const auto v4 = socket_name_from("172.17.0.2", 40000);
  ASSERT_TRUE(v4);
  EXPECT_EQ(*v4, local4(40000));
  const auto v6name = socket_name_from("fd00:1::2", 1);
  ASSERT_TRUE(v6name);
  EXPECT_EQ(v6name->family, Family::v6);
  EXPECT_FALSE(socket_name_from(nullptr, 1));
  EXPECT_FALSE(socket_name_from("", 1));
  EXPECT_FALSE(socket_name_from("localhost", 1));
  EXPECT_FALSE(socket_name_from("172.17.0.2", 0));
  EXPECT_FALSE(socket_name_from("172.17.0.2", 65536));
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
