// Mapping curl's results to Outcomes, header validation and the forbidden-path guard.
#include <curl/curl.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <stdexcept>

#include "collect.hpp"
#include "http.hpp"

namespace imds {
namespace {

TEST(OutcomeMapping, CompletedTransferIsAnHttpAnswerWhateverItsStatus) {
  EXPECT_EQ(outcome_from_curl(CURLE_OK, 0, ""), Outcome::http);
}

TEST(OutcomeMapping, CurlTimeoutIsATimeout) {
  EXPECT_EQ(outcome_from_curl(CURLE_OPERATION_TIMEDOUT, 0, "Operation timed out"),
            Outcome::timeout);
}

TEST(OutcomeMapping, ConnectErrorsAreToldApartByErrno) {
  EXPECT_EQ(outcome_from_curl(CURLE_COULDNT_CONNECT, ECONNREFUSED, ""), Outcome::refused);
  EXPECT_EQ(outcome_from_curl(CURLE_COULDNT_CONNECT, ENETUNREACH, ""), Outcome::unreachable);
  EXPECT_EQ(outcome_from_curl(CURLE_COULDNT_CONNECT, EHOSTUNREACH, ""), Outcome::unreachable);
  EXPECT_EQ(outcome_from_curl(CURLE_COULDNT_CONNECT, EINVAL, ""), Outcome::blocked)
      << "a blackhole route makes connect() fail with EINVAL";
  EXPECT_EQ(outcome_from_curl(CURLE_COULDNT_CONNECT, ETIMEDOUT, ""), Outcome::timeout);
  EXPECT_EQ(outcome_from_curl(CURLE_COULDNT_CONNECT, EMFILE, "socket failure"), Outcome::error);
}

TEST(OutcomeMapping, ResetWhileReceivingIsAReset) {
  EXPECT_EQ(outcome_from_curl(CURLE_RECV_ERROR, ECONNRESET, ""), Outcome::reset);
  EXPECT_EQ(outcome_from_curl(CURLE_RECV_ERROR, 0, "Recv failure: Connection reset by peer"),
            Outcome::reset);
  EXPECT_EQ(outcome_from_curl(CURLE_RECV_ERROR, EIO, "Recv failure: I/O error"), Outcome::error);
}

TEST(OutcomeMapping, OtherCurlFailuresAreErrors) {
  EXPECT_EQ(outcome_from_curl(CURLE_WEIRD_SERVER_REPLY, 0, ""), Outcome::error);
  EXPECT_EQ(outcome_from_curl(CURLE_GOT_NOTHING, 0, ""), Outcome::error);
}

TEST(TokenTtlHeader, AcceptsDecimalSecondsUpToSixHours) {
  EXPECT_EQ(parse_token_ttl("60"), 60);
  EXPECT_EQ(parse_token_ttl(" 21600 "), 21600);
  EXPECT_EQ(parse_token_ttl("0"), 0);
}

TEST(TokenTtlHeader, RejectsAnythingElse) {
  for (const char* bad : {"", "21601", "-1", "60s", "0x10", "99999999999999999999", "6 0"}) {
    EXPECT_FALSE(parse_token_ttl(bad)) << bad;
  }
}

TEST(TokenShape, OnlyVisibleAsciiUpTo4096BytesCanGoIntoAHeader) {
  EXPECT_TRUE(plausible_token("AQAEAHdGx1ehYkDn0X-5rFAtRz_cZ0PdsLpIy8t1ytF9ri3ZVBUh9g=="));
  EXPECT_FALSE(plausible_token(""));
  EXPECT_FALSE(plausible_token("abc\r\nX-Injected: 1"));
  EXPECT_FALSE(plausible_token("<html> body"));
  EXPECT_FALSE(plausible_token(std::string(4097, 'a')));
}

TEST(ForbiddenPaths, CredentialsIdentityCredentialsAndUserDataAreRefused) {
  for (const char* path : {
           "/latest/meta-data/iam/security-credentials/",
           "/latest/meta-data/iam/security-credentials/role",
           "/latest/meta-data/IAM/Security-Credentials/role",
           "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
           "/latest/user-data",
           "/latest/meta-data/iam/./security-credentials/",
           "/latest/meta-data/iam%2Fsecurity-credentials/",
       }) {
    EXPECT_TRUE(is_forbidden_path(path)) << path;
  }
}

TEST(ForbiddenPaths, HarmlessPathsAreAllowed) {
  for (const char* path :
       {"/latest/meta-data/instance-id", "/latest/meta-data/", "/latest/meta-data/placement/region",
        "/latest/api/token", "/latest/meta-data/tags/instance"}) {
    EXPECT_FALSE(is_forbidden_path(path)) << path;
  }
}

TEST(ForbiddenPaths, CollectRefusesAForbiddenProbePathBeforeSendingAnything) {
  CollectConfig config;
  config.endpoint_v4 = "http://127.0.0.1:9";
  config.probe_v6 = false;
  config.probe_path = "/latest/meta-data/iam/security-credentials/admin";
  EXPECT_THROW(collect(config, {}), std::invalid_argument);
}

TEST(CollectConfiguration, RefusesMoreThan4096Targets) {
  CollectConfig config;
  config.endpoint_v4 = "http://127.0.0.1:9";
  std::vector<NetnsTarget> targets(kMaxTargets + 1);
  try {
    collect(config, targets);
    FAIL() << "accepted " << targets.size() << " targets";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("too many target namespaces"), std::string::npos);
  }
}

TEST(CollectConfiguration, RefusesEndpointsThatAreNotPlainHttpBaseUrls) {
  for (const char* bad : {"https://169.254.169.254", "http://169.254.169.254/latest", "ftp://x",
                          "not a url", "http://user@169.254.169.254"}) {
    CollectConfig config;
    config.endpoint_v4 = bad;
    EXPECT_THROW(collect(config, {}), std::invalid_argument) << bad;
  }
}

}  // namespace
}  // namespace imds
