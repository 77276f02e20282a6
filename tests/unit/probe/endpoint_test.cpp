// Endpoint URLs: what the collector, imds-probe --endpoint and the agent's `endpoint =` accept,
// and the specific reason given for each form they refuse.
#include "endpoint.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <string_view>

namespace imds {
namespace {

// The error for `text`; a test failure when it was accepted.
std::string rejection(std::string_view text, Family family = Family::v4) {
  const auto endpoint = parse_endpoint(text, family);
  if (endpoint) {
    ADD_FAILURE() << "'" << text << "' was accepted as " << endpoint->base;
    return {};
  }
  return endpoint.error().message;
}

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(Endpoint, TheDefaultEndpointsGiveTheirAddressAndPort80) {
  const auto v4 = parse_endpoint("http://169.254.169.254", Family::v4);
  ASSERT_TRUE(v4) << v4.error().message;
  EXPECT_EQ(v4->base, "http://169.254.169.254:80");
  EXPECT_EQ(v4->host, "169.254.169.254");
  EXPECT_EQ(v4->address.family, Family::v4);
  EXPECT_EQ(v4->address.port, 80);
  EXPECT_EQ(ntohl(v4->address.v4.s_addr), 0xa9fea9feU);

  const auto v6 = parse_endpoint("http://[fd00:ec2::254]", Family::v6);
  ASSERT_TRUE(v6) << v6.error().message;
  EXPECT_EQ(v6->base, "http://[fd00:ec2::254]:80");
  EXPECT_EQ(v6->host, "fd00:ec2::254");
  EXPECT_EQ(v6->address.family, Family::v6);
  in6_addr expected{};
  ASSERT_EQ(::inet_pton(AF_INET6, "fd00:ec2::254", &expected), 1);
  EXPECT_EQ(std::memcmp(&v6->address.v6, &expected, sizeof expected), 0);
}

TEST(Endpoint, LoopbackEndpointsWithAPortAndATrailingSlashAreAccepted) {
  const auto v4 = parse_endpoint("http://127.0.0.1:8080/", Family::v4);
  ASSERT_TRUE(v4) << v4.error().message;
  EXPECT_EQ(v4->base, "http://127.0.0.1:8080");
  EXPECT_EQ(v4->address.port, 8080);
  const auto v6 = parse_endpoint("http://[::1]:65535", Family::v6);
  ASSERT_TRUE(v6) << v6.error().message;
  EXPECT_EQ(v6->base, "http://[::1]:65535");
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->address.port, 65535);
}

TEST(Endpoint, SchemesOtherThanHttpAreRefused) {
  for (const char* text : {"https://169.254.169.254", "ftp://169.254.169.254", "gopher://x",
                           "nosuchscheme://169.254.169.254"}) {
    EXPECT_TRUE(contains(rejection(text), "must be an http:// URL")) << text;
  }
}

TEST(Endpoint, AUserOrPasswordIsRefused) {
  for (const char* text : {"http://user@169.254.169.254", "http://user:secret@169.254.169.254",
                           "http://:secret@169.254.169.254", "http://@169.254.169.254"}) {
    EXPECT_TRUE(contains(rejection(text), "must not hold a user name or password")) << text;
  }
}

TEST(Endpoint, AQueryOrFragmentIsRefused) {
  for (const char* text :
       {"http://169.254.169.254?x=1", "http://169.254.169.254/?", "http://169.254.169.254#top"}) {
    EXPECT_TRUE(contains(rejection(text), "must not have a query or fragment")) << text;
  }
}

TEST(Endpoint, AnyPathButSlashIsRefused) {
  for (const char* text : {"http://169.254.169.254/latest", "http://169.254.169.254/latest/",
                           "http://169.254.169.254//", "http://127.0.0.1:8080/x"}) {
    EXPECT_TRUE(contains(rejection(text), "must not have a path")) << text;
  }
}

TEST(Endpoint, APortOutsideOneTo65535IsRefused) {
  for (const char* text : {"http://169.254.169.254:99999", "http://169.254.169.254:65536",
                           "http://169.254.169.254:0", "http://169.254.169.254:-1"}) {
    EXPECT_TRUE(contains(rejection(text), "port outside 1..65535")) << text;
  }
  EXPECT_TRUE(contains(rejection("http://[::1]:99999", Family::v6), "port outside 1..65535"));
}

TEST(Endpoint, AMalformedIpv6AddressIsRefused) {
  for (const char* text : {"http://[fd00::", "http://[fd00::1", "http://[fd00::g]", "http://[]",
                           "http://[169.254.169.254]"}) {
    EXPECT_TRUE(contains(rejection(text, Family::v6), "malformed IPv6 address")) << text;
  }
}

TEST(Endpoint, AMalformedIpv4AddressIsRefused) {
  EXPECT_TRUE(contains(rejection("http://999.254.169.254"), "malformed IPv4 address"));
}

TEST(Endpoint, HostNamesAreRefusedBecauseTheyWouldBeResolvedInTheHostNamespace) {
  for (const char* text :
       {"http://localhost", "http://instance-data:80", "http://metadata.example.internal/"}) {
    for (const Family family : {Family::v4, Family::v6}) {
      const std::string error = rejection(text, family);
      EXPECT_TRUE(contains(error, "names a host, not an IP address")) << text << ": " << error;
      EXPECT_TRUE(contains(error, "container targets")) << error;
    }
  }
}

TEST(Endpoint, TheIpv4EndpointNeedsAnIpv4AddressAndTheIpv6OneAnIpv6Address) {
  EXPECT_TRUE(contains(rejection("http://[fd00:ec2::254]", Family::v4),
                       "the IPv4 endpoint needs an IPv4 address"));
  EXPECT_TRUE(contains(rejection("http://169.254.169.254", Family::v6),
                       "the IPv6 endpoint needs an IPv6 address in brackets"));
}

TEST(Endpoint, AnIpv6ZoneIdIsRefused) {
  EXPECT_TRUE(contains(rejection("http://[fe80::1%25eth0]", Family::v6), "zone id"));
}

TEST(Endpoint, TextThatIsNoUrlIsRefusedAndTheExampleFitsTheFamily) {
  for (const char* text : {"", "not a url", "169.254.169.254", "http://", "http:169.254.169.254"}) {
    EXPECT_TRUE(contains(rejection(text), "http://169.254.169.254")) << text;
  }
  EXPECT_TRUE(contains(rejection("fd00:ec2::254", Family::v6), "http://[fd00:ec2::254]"));
}

TEST(Endpoint, OverlongInputIsRefusedAndControlCharactersAreNotEchoed) {
  const std::string overlong = "http://169.254.169.254/" + std::string(300, 'a');
  const std::string error = rejection(overlong);
  EXPECT_TRUE(contains(error, "too long")) << error;
  EXPECT_LT(error.size(), 200U) << error;
  const std::string escape = rejection("http://169.254.169.254/\x1b[31m");
  EXPECT_FALSE(contains(escape, "\x1b")) << escape;
}

TEST(Endpoint, ErrorsStartWithTheQuotedUrlForTheCallerToPrefix) {
  EXPECT_EQ(rejection("http://user@169.254.169.254"),
            "'http://user@169.254.169.254' must not hold a user name or password");
}

}  // namespace
}  // namespace imds
