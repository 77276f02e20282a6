// The passive caller watch's pure parts: the request and answer classifier, the User-Agent
// parser, the connection table (copies, NAT, answers dropped here, bounds) and the caller book
// (fallback against deliberate IMDSv1), on crafted IPv4 + TCP segments.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "callers.hpp"

namespace imds {
namespace {

using namespace std::chrono_literals;

std::span<const std::uint8_t> bytes(const std::string& text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

// ----- classifying requests and answers ---------------------------------------------------

TEST(ClassifyRequest, TellsTokenPutsImdsv2AndImdsv1Apart) {
  const auto put = classify_request(bytes(
      "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n"
      "X-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\r\n"));
  ASSERT_TRUE(put);
  EXPECT_EQ(put->kind, RequestKind::token_put);
  EXPECT_EQ(put->category, PathCategory::token);

  const auto v2 = classify_request(bytes(
      "GET /latest/meta-data/instance-id HTTP/1.1\r\nx-AWS-ec2-metadata-TOKEN: abc\r\n\r\n"));
  ASSERT_TRUE(v2);
  EXPECT_EQ(v2->kind, RequestKind::imdsv2);
  EXPECT_EQ(v2->category, PathCategory::meta_data);

  const auto v1 = classify_request(bytes("HEAD /latest/meta-data/ HTTP/1.0\r\n\r\n"));
  ASSERT_TRUE(v1);
  EXPECT_EQ(v1->kind, RequestKind::imdsv1);

  // The TTL header alone is not a token.
  const auto ttl_only = classify_request(bytes(
      "GET /latest/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 5\r\n\r\n"));
  ASSERT_TRUE(ttl_only);
  EXPECT_EQ(ttl_only->kind, RequestKind::imdsv1);

  const auto post = classify_request(bytes("POST /latest/api/token HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(post);
  EXPECT_EQ(post->kind, RequestKind::other);
}

TEST(ClassifyRequest, KeepsOnlyThePathsCategory) {
  const auto category = [](const std::string& path) {
    const auto start = classify_request(bytes("GET " + path + " HTTP/1.1\r\n\r\n"));
    EXPECT_TRUE(start) << path;
    return start ? start->category : PathCategory::other;
  };
  EXPECT_EQ(category("/latest/meta-data/iam/security-credentials/role"), PathCategory::credentials);
  EXPECT_EQ(category("/2021-07-15/meta-data/identity-credentials/ec2/info"),
            PathCategory::credentials);
  EXPECT_EQ(category("/latest/meta-data/iam/info"), PathCategory::meta_data);
  EXPECT_EQ(category("/latest/user-data"), PathCategory::user_data);
  EXPECT_EQ(category("/latest/dynamic/instance-identity/document"), PathCategory::dynamic);
  EXPECT_EQ(category("/latest/meta-data/placement/region?x=1"), PathCategory::meta_data);
  EXPECT_EQ(category("/"), PathCategory::other);
  EXPECT_EQ(category("/latest"), PathCategory::other);
  EXPECT_EQ(category("http://169.254.169.254/latest/user-data"), PathCategory::other);
}

TEST(ClassifyRequest, RefusesWhatIsNoHttp1RequestLine) {
  for (const char* text : {"", "GET", "GET /x HTTP/1.1", "get /x HTTP/1.1\r\n",
                           "GET /x HTTP/2\r\n", " /x HTTP/1.1\r\n", "GET  HTTP/1.1\r\n",
                           "AVERYLONGMETHODNAME /x HTTP/1.1\r\n", "\x16\x03\x01\x02\x00\r\n"}) {
    EXPECT_FALSE(classify_request(bytes(text))) << text;
  }
}

TEST(ClassifyRequest, IgnoresAHeaderTheCaptureCutOff) {
  const auto start =
      classify_request(bytes("GET /latest/meta-data/ HTTP/1.1\r\nUser-Agent: curl/7.88.1\r\n"
                             "X-aws-ec2-metadata-tok"));
  ASSERT_TRUE(start);
  EXPECT_EQ(start->kind, RequestKind::imdsv1);
  ASSERT_TRUE(start->sdk);
  EXPECT_EQ(start->sdk->product, "curl");
  const auto cut = classify_request(bytes("GET /latest/meta-data/ HTTP/1.1\r\nUser-Agent: cu"));
  ASSERT_TRUE(cut);
  EXPECT_FALSE(cut->sdk);
}

TEST(ParseUserAgent, NamesTheFirstProductAndItsVersion) {
  const auto sdk = [](const char* value) {
    const auto parsed = parse_user_agent(value);
    return parsed ? parsed->product + " " + parsed->version : std::string("none");
  };
  EXPECT_EQ(sdk("Botocore/1.29.27 Python/3.11.2 Linux/6.1.0"), "botocore 1.29.27");
  EXPECT_EQ(sdk("Boto3/1.26.27 md/Botocore#1.29.27 ua/2.0 os/linux#6.1"), "boto3 1.26.27");
  EXPECT_EQ(sdk("aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64"), "aws-cli 2.15.0");
  EXPECT_EQ(sdk("aws-sdk-go-v2/1.24.0 os/linux lang/go#1.21"), "aws-sdk-go-v2 1.24.0");
  EXPECT_EQ(sdk("aws-sdk-js/3.470.0 ua/2.0"), "aws-sdk-js 3.470.0");
  EXPECT_EQ(sdk("  curl/7.88.1"), "curl 7.88.1");
  EXPECT_EQ(sdk("Cloud-Init/22.4.2"), "cloud-init 22.4.2");
  EXPECT_EQ(sdk("amazon-ssm-agent/3.2.1"), "ssm-agent 3.2.1");
  EXPECT_EQ(sdk("MyTool (x)"), "MyTool ");
  EXPECT_EQ(sdk("we\x01ird\"/1.0<script>"), "weird 1.0script");
  EXPECT_EQ(sdk(""), "none");
  EXPECT_EQ(sdk("/1.0"), "none");
  const auto long_one = parse_user_agent(std::string(100, 'a') + "/" + std::string(100, '1'));
  ASSERT_TRUE(long_one);
  EXPECT_EQ(long_one->product.size(), 40U);
  EXPECT_EQ(long_one->version.size(), 32U);
  EXPECT_TRUE(known_sdk_product("botocore"));
  EXPECT_FALSE(known_sdk_product("MyTool"));
}

TEST(ResponseStatus, ReadsTheStatusLineOnly) {
  EXPECT_EQ(response_status(bytes("HTTP/1.1 200 OK\r\n")), 200);
  EXPECT_EQ(response_status(bytes("HTTP/1.0 401 Unauthorized")), 401);
  for (const char* text : {"HTTP/1.1 2x0 OK", "HTTP/2 200 OK\r\n", "HTTP/1.1 20", "HTTP/1.1 099 ",
                           "http/1.1 200 OK", "HTTP/1.1 600 ?"}) {
    EXPECT_FALSE(response_status(bytes(text))) << text;
  }
}

// ----- the connection table ---------------------------------------------------------------

constexpr std::uint8_t kFin = 0x01;
constexpr std::uint8_t kSyn = 0x02;
constexpr std::uint8_t kRst = 0x04;
constexpr std::uint8_t kAck = 0x10;

using Address = std::array<std::uint8_t, 4>;
constexpr Address kImds{169, 254, 169, 254};
constexpr Address kHost{169, 254, 0, 2};
constexpr Address kContainer{172, 17, 0, 2};

struct End {
  Address address;
  std::uint16_t port;
};

std::vector<std::uint8_t> segment(End from, End to, std::uint8_t flags, std::uint32_t seq,
                                  const std::string& payload = "", int ttl = 64) {
  std::vector<std::uint8_t> p(40 + payload.size(), 0);
  const auto put16 = [&](std::size_t at, std::uint32_t v) {
    p[at] = static_cast<std::uint8_t>(v >> 8);
    p[at + 1] = static_cast<std::uint8_t>(v);
  };
  p[0] = 0x45;
  put16(2, 40 + payload.size());
  p[8] = static_cast<std::uint8_t>(ttl);
  p[9] = 6;
  std::memcpy(&p[12], from.address.data(), 4);
  std::memcpy(&p[16], to.address.data(), 4);
  put16(20, from.port);
  put16(22, to.port);
  for (int i = 0; i < 4; ++i) p[24 + i] = static_cast<std::uint8_t>(seq >> (24 - 8 * i));
  p[32] = 5 << 4;
  p[33] = flags;
  std::copy(payload.begin(), payload.end(), p.begin() + 40);
  return p;
}

SocketName name(Address a, std::uint16_t port) {
  SocketName n;
  std::memcpy(n.address.data(), a.data(), 4);
  n.port = port;
  return n;
}

const std::string kPut =
    "PUT /latest/api/token HTTP/1.1\r\nUser-Agent: Botocore/1.29.27 Python/3.11\r\n"
    "X-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\r\n";
const std::string kGet = "GET /latest/meta-data/ami-id HTTP/1.1\r\nUser-Agent: curl/7.88.1\r\n\r\n";
const std::string kOk = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n";

class Tracker : public ::testing::Test {
 protected:
  WatchClock::time_point t0 = WatchClock::now();
  ExchangeTracker tracker{{name(kImds, 80)}, {}};
  const End imds{kImds, 80};

  void in(int ifindex, const std::vector<std::uint8_t>& p) { tracker.take(ifindex, false, p, t0); }
  void out(int ifindex, const std::vector<std::uint8_t>& p) { tracker.take(ifindex, true, p, t0); }
};

TEST_F(Tracker, OwnConnectionAnsweredIsOneAnsweredLocalExchange) {
  const End me{kHost, 40000};
  out(2, segment(me, imds, kSyn, 100));
  in(2, segment(imds, me, kSyn | kAck, 900, "", 1));
  out(2, segment(me, imds, kAck, 101, kPut));
  in(2, segment(imds, me, kAck, 901, kOk, 1));
  const auto done = tracker.take_finished(t0);
  ASSERT_EQ(done.size(), 1U);
  EXPECT_TRUE(done[0].origin.local);
  EXPECT_EQ(done[0].request.kind, RequestKind::token_put);
  EXPECT_TRUE(done[0].answered);
  EXPECT_EQ(done[0].status, 200);
  EXPECT_EQ(done[0].arrival_ttl, 1);
  ASSERT_TRUE(done[0].request.sdk);
  EXPECT_EQ(done[0].request.sdk->product, "botocore");
}

// A container's PUT, seen on its veth (5) and the bridge (4), masqueraded out by the uplink
// (2); the answer comes back to the masqueraded end with TTL 1 and is never forwarded.
TEST_F(Tracker, AForwardedPutWhoseAnswerDiesHereCountsOnceForItsContainer) {
  const End container{kContainer, 40000};
  const End masqueraded{kHost, 50000};
  in(5, segment(container, imds, kSyn, 7000));
  in(4, segment(container, imds, kSyn, 7000));
  out(2, segment(masqueraded, imds, kSyn, 7000));
  in(2, segment(imds, masqueraded, kSyn | kAck, 300, "", 64));
  out(4, segment(imds, container, kSyn | kAck, 300, "", 63));
  out(5, segment(imds, container, kSyn | kAck, 300, "", 63));
  in(5, segment(container, imds, kAck, 7001, kPut));
  in(4, segment(container, imds, kAck, 7001, kPut));
  out(2, segment(masqueraded, imds, kAck, 7001, kPut));
  in(2, segment(imds, masqueraded, kAck, 301, kOk, 1));
  in(2, segment(imds, masqueraded, kAck, 301, kOk, 1));  // retransmitted
  EXPECT_TRUE(tracker.take_finished(t0 + 1s).empty());
  const auto done = tracker.take_finished(t0 + 3s);
  ASSERT_EQ(done.size(), 1U);
  const Exchange& e = done[0];
  EXPECT_FALSE(e.origin.local);
  EXPECT_EQ(e.origin.ifindex, 5);
  EXPECT_EQ(e.origin.client, name(kContainer, 40000));
  EXPECT_EQ(e.request.kind, RequestKind::token_put);
  EXPECT_TRUE(e.reached_here);
  EXPECT_FALSE(e.answered);
  EXPECT_EQ(e.arrival_ttl, 1);
  EXPECT_EQ(tracker.counters().exchanges, 1U);
  // The SYN and the PUT seen again on the bridge, and the answer retransmitted; the NAT copies
  // leaving by the uplink are aliases, not copies.
  EXPECT_EQ(tracker.counters().copies, 3U);
}

TEST_F(Tracker, AForwardedAnswerPassedOnIsAnswered) {
  const End container{kContainer, 40001};
  const End masqueraded{kHost, 50001};
  in(5, segment(container, imds, kSyn, 10));
  out(2, segment(masqueraded, imds, kSyn, 10));
  in(2, segment(imds, masqueraded, kSyn | kAck, 20));
  out(5, segment(imds, container, kSyn | kAck, 20));
  in(5, segment(container, imds, kAck, 11, kGet));
  out(2, segment(masqueraded, imds, kAck, 11, kGet));
  in(2, segment(imds, masqueraded, kAck, 21, kOk, 2));
  out(4, segment(imds, container, kAck, 21, kOk, 1));
  out(5, segment(imds, container, kAck, 21, kOk, 1));
  const auto done = tracker.take_finished(t0);
  ASSERT_EQ(done.size(), 1U);
  EXPECT_TRUE(done[0].answered);
  EXPECT_EQ(done[0].arrival_ttl, 2);
  EXPECT_EQ(done[0].request.kind, RequestKind::imdsv1);
  EXPECT_EQ(done[0].origin.client, name(kContainer, 40001));
}

// A container that forges "the IMDS's" answer into its own veth (CAP_NET_RAW in it): the
// connection's SYN left this namespace by the uplink, so an answer coming in by the veth did
// not come from the IMDS's side, and neither counts nor proves anything.
TEST_F(Tracker, AnAnswerComingInByAnotherInterfaceThanTheSynLeftByIsIgnored) {
  const End container{kContainer, 40002};
  const End masqueraded{kHost, 50002};
  in(5, segment(container, imds, kSyn, 10));
  out(2, segment(masqueraded, imds, kSyn, 10));
  in(5, segment(imds, container, kSyn | kAck, 20));  // forged
  in(5, segment(container, imds, kAck, 11, kGet));
  out(2, segment(masqueraded, imds, kAck, 11, kGet));
  in(5, segment(imds, container, kAck, 21, kOk, 1));  // forged
  const auto done = tracker.take_finished(t0 + 4s);
  ASSERT_EQ(done.size(), 1U);
  EXPECT_FALSE(done[0].reached_here);
  EXPECT_FALSE(done[0].seen_arriving);
  EXPECT_FALSE(done[0].status.has_value());

  // The same for the host's own connection: its SYN left by the uplink (2).
  const End me{kHost, 40003};
  out(2, segment(me, imds, kSyn, 100));
  in(2, segment(imds, me, kSyn | kAck, 900));
  out(2, segment(me, imds, kAck, 101, kGet));
  in(5, segment(imds, me, kAck, 901, "HTTP/1.1 401 Unauthorized\r\n\r\n"));  // forged
  in(2, segment(imds, me, kAck, 901, kOk));
  const auto own = tracker.take_finished(t0 + 4s);
  ASSERT_EQ(own.size(), 1U);
  EXPECT_EQ(own[0].status, 200);
  EXPECT_TRUE(own[0].seen_arriving);
}

// A metadata proxy in this namespace that answers for the IMDS (a DNAT to a local port): the
// answer only leaves toward the container; it is answered, but not seen arriving.
TEST_F(Tracker, AnAnswerThatOnlyLeavesTowardTheClientIsNotSeenArriving) {
  const End container{kContainer, 40004};
  in(5, segment(container, imds, kSyn, 10));
  out(5, segment(imds, container, kSyn | kAck, 20));
  in(5, segment(container, imds, kAck, 11, kGet));
  out(5, segment(imds, container, kAck, 21, kOk));
  const auto done = tracker.take_finished(t0);
  ASSERT_EQ(done.size(), 1U);
  EXPECT_TRUE(done[0].answered);
  EXPECT_EQ(done[0].status, 200);
  EXPECT_FALSE(done[0].seen_arriving);
}

// Each new connection is offered once for an owner lookup (NAT copies not); the process
// found goes to its exchanges, the one waiting and those after it.
TEST_F(Tracker, NewConnectionsAreOfferedOnceAndTheirProcessGoesToTheirExchanges) {
  const End container{kContainer, 40005};
  const End masqueraded{kHost, 50005};
  in(5, segment(container, imds, kSyn, 10));
  in(4, segment(container, imds, kSyn, 10));
  out(2, segment(masqueraded, imds, kSyn, 10));
  const auto opened = tracker.take_opened();
  ASSERT_EQ(opened.size(), 1U);
  EXPECT_EQ(opened[0].client, name(kContainer, 40005));
  EXPECT_FALSE(opened[0].origin.local);
  EXPECT_TRUE(tracker.take_opened().empty());
  in(5, segment(container, imds, kAck, 11, kGet));
  tracker.set_process(opened[0].client, opened[0].server, ProcessInfo{42, "python3", std::nullopt});
  out(2, segment(masqueraded, imds, kAck, 11, kGet));
  in(2, segment(imds, masqueraded, kAck, 21, kOk));
  out(5, segment(imds, container, kAck, 21, kOk));
  in(5, segment(container, imds, kAck, 11 + static_cast<std::uint32_t>(kGet.size()), kGet));
  out(5, segment(imds, container, kAck, 21 + static_cast<std::uint32_t>(kOk.size()), kOk));
  const auto done = tracker.take_finished(t0);
  ASSERT_EQ(done.size(), 2U);
  for (const auto& e : done) {
    ASSERT_TRUE(e.process.has_value());
    EXPECT_EQ(e.process->pid, 42);
    EXPECT_EQ(e.process->comm, "python3");
  }
  CallerBook book;
  book.add({"c", std::nullopt, 1, std::nullopt}, done[0], std::chrono::system_clock::now());
  EXPECT_EQ(book.callers().begin()->second.process->pid, 42);
}

TEST_F(Tracker, AClientThatGivesUpEndsItsWaitingRequestAtOnce) {
  const End me{kHost, 40002};
  out(2, segment(me, imds, kSyn, 1));
  in(2, segment(imds, me, kSyn | kAck, 5));
  out(2, segment(me, imds, kAck, 2, kPut));
  out(2, segment(me, imds, kFin | kAck, 2 + static_cast<std::uint32_t>(kPut.size())));
  const auto done = tracker.take_finished(t0);
  ASSERT_EQ(done.size(), 1U);
  EXPECT_FALSE(done[0].answered);
  EXPECT_FALSE(done[0].reached_here);
  // Its copies and the server's last segments after that are no new connection.
  in(2, segment(imds, me, kFin | kAck, 6));
  EXPECT_EQ(tracker.counters().unseen_connections, 0U);
}

TEST_F(Tracker, AResetEndsWhatWaits) {
  const End me{kHost, 40003};
  out(2, segment(me, imds, kSyn, 1));
  in(2, segment(imds, me, kSyn | kAck, 5));
  out(2, segment(me, imds, kAck, 2, kPut));
  in(2, segment(imds, me, kRst, 6));
  const auto done = tracker.take_finished(t0);
  ASSERT_EQ(done.size(), 1U);
  EXPECT_TRUE(done[0].reset);
}

TEST_F(Tracker, AGapIsCountedAndTheNextRequestStillClassified) {
  const End me{kHost, 40004};
  out(2, segment(me, imds, kSyn, 1));
  out(2, segment(me, imds, kAck, 500, kGet));
  EXPECT_EQ(tracker.counters().out_of_order, 1U);
  in(2, segment(imds, me, kAck, 77, kOk));
  const auto done = tracker.take_finished(t0);
  ASSERT_EQ(done.size(), 1U);
  EXPECT_TRUE(done[0].answered);
}

TEST_F(Tracker, WhatIsNotOursOrIsBrokenIsCountedAndIgnored) {
  in(2, segment({kContainer, 1}, {kHost, 2}, kSyn, 1));  // neither end is the IMDS
  in(2, segment(imds, {kHost, 3}, kAck, 1, kOk));        // no SYN seen
  auto broken = segment({kHost, 4}, imds, kSyn, 1);
  broken.resize(30);
  in(2, broken);
  EXPECT_EQ(tracker.counters().malformed, 2U);
  EXPECT_EQ(tracker.counters().unseen_connections, 1U);
  EXPECT_TRUE(tracker.take_all().empty());
}

TEST(TrackerBounds, KeepsAtMostMaxFlowsAndCountsWhatItDropped) {
  ExchangeTracker tracker({name(kImds, 80)}, {.max_flows = 4, .max_pending = 2});
  const auto t = WatchClock::now();
  for (std::uint16_t port = 1; port <= 10; ++port) {
    tracker.take(2, true, segment({kHost, port}, {kImds, 80}, kSyn, port), t + port * 1ms);
  }
  EXPECT_EQ(tracker.flows(), 4U);
  EXPECT_EQ(tracker.counters().flows_evicted, 6U);
  // Three requests on one connection without an answer: the third is dropped.
  std::uint32_t seq = 11;
  for (int i = 0; i < 3; ++i) {
    tracker.take(2, true, segment({kHost, 10}, {kImds, 80}, kAck, seq, kGet), t);
    seq += static_cast<std::uint32_t>(kGet.size());
  }
  EXPECT_EQ(tracker.counters().requests_dropped, 1U);
  EXPECT_EQ(tracker.take_all().size(), 2U);
}

// ----- the caller book --------------------------------------------------------------------

Exchange exchange(RequestKind kind, WatchClock::time_point at, bool answered,
                  std::optional<int> status = std::nullopt) {
  Exchange e;
  e.request.kind = kind;
  e.request.category = kind == RequestKind::token_put ? PathCategory::token : PathCategory::meta_data;
  e.request.sdk = Sdk{"botocore", "1.29.27"};
  e.requested = at;
  e.answered = answered;
  e.status = status;
  return e;
}

TEST(CallerBook, AnImdsv1RequestAfterAnUnansweredPutIsAFallback) {
  CallerBook book;
  const auto t = WatchClock::now();
  const auto now = std::chrono::system_clock::now();
  const CallerPlace place{"boto", std::nullopt, 7, std::nullopt};
  book.add(place, exchange(RequestKind::token_put, t, false), now);
  book.add(place, exchange(RequestKind::imdsv1, t + 1s, true, 200), now);
  const CallerStats& s = book.callers().begin()->second;
  EXPECT_EQ(s.imdsv1_fallback, 1U);
  EXPECT_EQ(s.imdsv1, 0U);
  EXPECT_EQ(s.imdsv1_ok, 1U);
  EXPECT_EQ(s.token_puts_unanswered, 1U);
}

TEST(CallerBook, AFallbackCountedBeforeThePutTimedOutIsRecounted) {
  CallerBook book;
  const auto t = WatchClock::now();
  const auto now = std::chrono::system_clock::now();
  const CallerPlace place{"boto", std::nullopt, 7, std::nullopt};
  book.add(place, exchange(RequestKind::imdsv1, t - 5s, true, 200), now);  // before the PUT
  book.add(place, exchange(RequestKind::imdsv1, t + 1s, true, 200), now);
  book.add(place, exchange(RequestKind::token_put, t, false), now);
  const CallerStats& s = book.callers().begin()->second;
  EXPECT_EQ(s.imdsv1_fallback, 1U);
  EXPECT_EQ(s.imdsv1, 1U);
}

TEST(CallerBook, AnsweredPutsAndOtherCallersAreNotFallbacks) {
  CallerBook book(2);
  const auto t = WatchClock::now();
  const auto now = std::chrono::system_clock::now();
  book.add({"a", std::nullopt, 1, std::nullopt}, exchange(RequestKind::token_put, t, true, 200), now);
  book.add({"b", std::nullopt, 2, std::nullopt}, exchange(RequestKind::token_put, t, false), now);
  book.add({"a", std::nullopt, 1, std::nullopt}, exchange(RequestKind::imdsv1, t + 1s, true, 401), now);
  book.add({"c", std::nullopt, 3, std::nullopt}, exchange(RequestKind::imdsv1, t + 1s, true, 200), now);
  const auto& callers = book.callers();
  ASSERT_EQ(callers.size(), 3U);
  EXPECT_EQ(callers.at({"a", "botocore", "1.29.27"}).imdsv1, 1U);
  EXPECT_EQ(callers.at({"a", "botocore", "1.29.27"}).imdsv1_unauthorized, 1U);
  EXPECT_EQ(callers.at({"other callers", "", ""}).imdsv1, 1U);
  EXPECT_EQ(book.overflowed(), 1U);
}

TEST(CallerBook, OnlyAnswersSeenArrivingFromTheImdsAreEvidenceOfHttpTokens) {
  CallerBook book;
  const auto t = WatchClock::now();
  const auto now = std::chrono::system_clock::now();
  Exchange proxied = exchange(RequestKind::imdsv1, t, true, 200);
  proxied.seen_arriving = false;  // a proxy's answer
  book.add({"c1", std::nullopt, 1, std::nullopt}, proxied, now);
  EXPECT_FALSE(book.latest_tokenless().has_value());
  Exchange real = exchange(RequestKind::imdsv1, t, true, 401);
  real.seen_arriving = true;
  book.add({"c2", std::nullopt, 2, std::nullopt}, real, now + 1s);
  ASSERT_TRUE(book.latest_tokenless().has_value());
  EXPECT_EQ(book.latest_tokenless()->status, 401);
  EXPECT_EQ(book.latest_tokenless()->where, "c2");
  Exchange older = exchange(RequestKind::imdsv1, t, true, 200);
  older.seen_arriving = true;
  book.add({"c3", std::nullopt, 3, std::nullopt}, older, now);  // booked late, but requested earlier
  EXPECT_EQ(book.latest_tokenless()->status, 401);
  Exchange v2 = exchange(RequestKind::imdsv2, t, true, 200);
  v2.seen_arriving = true;
  book.add({"c4", std::nullopt, 4, std::nullopt}, v2, now + 2s);
  EXPECT_EQ(book.latest_tokenless()->where, "c2") << "a request with a token proves nothing";
}

}  // namespace
}  // namespace imds
