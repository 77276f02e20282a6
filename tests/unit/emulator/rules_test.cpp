// The emulator's response rules (IMDS.md) against the pure core: no sockets.
#include "rules.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

namespace imds::emu {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

class Rules : public ::testing::Test {
 protected:
  Rules() : state_(Options{}, 42) {}

  Response send(std::string method, std::string target, std::vector<Header> headers = {}) {
    Request r;
    r.method = std::move(method);
    r.target = std::move(target);
    r.headers = std::move(headers);
    r.peer = "169.254.0.2";
    r.port = 40000;
    return handle(r, state_, now_);
  }
  Response put_token(std::string ttl = "21600", std::vector<Header> extra = {}) {
    extra.push_back({std::string(kTokenTtlHeader), std::move(ttl)});
    return send("PUT", std::string(kTokenPath), std::move(extra));
  }
  std::string token() {
    auto r = put_token();
    EXPECT_EQ(r.status, 200);
    return r.body;
  }
  Response get_with(const std::string& tok, std::string path, std::vector<Header> extra = {}) {
    extra.push_back({std::string(kTokenHeader), tok});
    return send("GET", std::move(path), std::move(extra));
  }
  void set(Options o) { state_.set_options(std::move(o), 0ms, now_.steady); }
  Options required() {
    Options o;
    o.http_tokens = HttpTokens::required;
    return o;
  }
  void advance(std::chrono::milliseconds d) {
    now_.steady += d;
    now_.wall += d;
  }

  State state_;
  Now now_{SteadyTime{} + 1000s, WallTime{} + 1700000000s};
};

// ---- token PUT ----

TEST_F(Rules, TokenPutReturnsAPrintableTokenAndEchoesTheTtl) {
  const auto r = put_token("300");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header(kTokenTtlHeader), "300");
  EXPECT_EQ(r.header("Content-Type"), "text/plain");
  EXPECT_EQ(r.body.size(), 56U);
  for (char c : r.body) EXPECT_TRUE(c > ' ' && c < 127) << static_cast<int>(c);
}

TEST_F(Rules, TokensAreDifferentEachTime) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) seen.insert(token());
  EXPECT_EQ(seen.size(), 100U);
}

TEST_F(Rules, TokenPutResponseCarriesTheHopLimitAsItsTtl) {
  Options o;
  o.hop_limit = 3;
  set(o);
  EXPECT_EQ(put_token().hop_limit, 3);
}

TEST_F(Rules, TokenPutWithoutTtlHeaderIsRejectedWith400) {
  EXPECT_EQ(send("PUT", "/latest/api/token").status, 400);
}

TEST_F(Rules, TokenPutWithNonNumericTtlIsRejectedWith400) {
  EXPECT_EQ(put_token("abc").status, 400);
  EXPECT_EQ(put_token("12s").status, 400);
  EXPECT_EQ(put_token("-5").status, 400);
  EXPECT_EQ(put_token("").status, 400);
  EXPECT_EQ(put_token("99999999999999999999").status, 400);
}

TEST_F(Rules, TokenPutWithTtlZeroIsRejectedWith400) { EXPECT_EQ(put_token("0").status, 400); }

TEST_F(Rules, TokenPutWithTtlAboveLimitIsRejectedWith400) {
  EXPECT_EQ(put_token("21601").status, 400);
  EXPECT_EQ(put_token("21600").status, 200);
  EXPECT_EQ(put_token("1").status, 200);
}

TEST_F(Rules, RejectedTokenPutIssuesNoToken) {
  put_token("0");
  EXPECT_EQ(state_.tokens.size(), 0U);
}

TEST_F(Rules, TokenPutWithForwardedForIsForbiddenWithEmptyBody) {
  const auto r = put_token("60", {{"X-Forwarded-For", "10.0.0.1"}});
  EXPECT_EQ(r.status, 403);
  EXPECT_TRUE(r.body.empty());
  EXPECT_EQ(state_.tokens.size(), 0U);
}

TEST_F(Rules, TokenPutOnOtherTokenPathsIsForbidden) {
  for (const char* p : {"/latest/api/token/", "/2021-03-23/api/token", "/latest/api/token/x"}) {
    EXPECT_EQ(send("PUT", p, {{std::string(kTokenTtlHeader), "60"}}).status, 403) << p;
  }
}

TEST_F(Rules, GetOnTheTokenPathIsMethodNotAllowedWithAllow) {
  const auto r = send("GET", "/latest/api/token");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.header("Allow"), "OPTIONS, PUT");
}

TEST_F(Rules, OptionsOnTheTokenPathAnswersWithAllow) {
  const auto r = send("OPTIONS", "/latest/api/token");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("Allow"), "OPTIONS, PUT");
}

TEST_F(Rules, ExpectContinueIsRejectedWith417) {
  EXPECT_EQ(put_token("60", {{"Expect", "100-continue"}}).status, 417);
  EXPECT_EQ(state_.tokens.size(), 0U);
}

TEST_F(Rules, EmptyExpectHeaderIsAccepted) {
  EXPECT_EQ(put_token("60", {{"Expect", ""}}).status, 200);
}

TEST_F(Rules, DisabledEndpointForbidsEverything) {
  Options o;
  o.endpoint_enabled = false;
  set(o);
  EXPECT_EQ(put_token().status, 403);
  EXPECT_EQ(send("GET", "/latest/meta-data/instance-id").status, 403);
}

// [guess] documented in tests/emulator/README.md: the TTL is set on the connection, so
// whatever answers a token PUT is hop-limited, not only the 200.
TEST_F(Rules, EveryAnswerToATokenPutIsHopLimited) {
  Options o;
  o.hop_limit = 4;
  set(o);
  EXPECT_EQ(put_token("0").hop_limit, 4);
  EXPECT_EQ(put_token("60", {{"X-Forwarded-For", "10.0.0.1"}}).hop_limit, 4);
  EXPECT_EQ(put_token("60", {{"Expect", "100-continue"}}).hop_limit, 4);
  EXPECT_FALSE(send("PUT", "/latest/api/token/", {{std::string(kTokenTtlHeader), "60"}})
                   .hop_limit.has_value());
}

// [guess]: only the PUT and token-bearing requests are known to be rejected for XFF.
TEST_F(Rules, TokenlessGetWithForwardedForIsAnsweredAsImdsV1) {
  EXPECT_EQ(send("GET", "/latest/meta-data/instance-id", {{"X-Forwarded-For", "1.2.3.4"}}).status,
            200);
}

TEST_F(Rules, TokenPathIgnoresTheQueryString) {
  EXPECT_EQ(send("PUT", "/latest/api/token?x=1", {{std::string(kTokenTtlHeader), "60"}}).status,
            200);
}

// ---- IMDSv1 and tokens ----

TEST_F(Rules, TokenlessGetAnswersUnderOptional) {
  const auto r = send("GET", "/latest/meta-data/instance-id");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "i-0123456789abcdef0");
  EXPECT_EQ(r.header("Content-Type"), "text/plain");
  EXPECT_FALSE(r.hop_limit.has_value());
}

TEST_F(Rules, TokenlessGetIsUnauthorizedUnderRequiredWithXhtmlPage) {
  set(required());
  const auto r = send("GET", "/latest/meta-data/instance-id");
  EXPECT_EQ(r.status, 401);
  EXPECT_THAT(r.body, HasSubstr("<title>401 - Unauthorized</title>"));
}

TEST_F(Rules, UnauthorizedBodyCanBeEmpty) {
  auto o = required();
  o.unauthorized_body = UnauthorizedBody::empty;
  set(o);
  const auto r = send("GET", "/latest/meta-data/instance-id");
  EXPECT_EQ(r.status, 401);
  EXPECT_TRUE(r.body.empty());
}

TEST_F(Rules, ValidTokenGetsDataUnderRequired) {
  set(required());
  const auto r = get_with(token(), "/latest/meta-data/instance-id");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "i-0123456789abcdef0");
}

TEST_F(Rules, InvalidTokenIsUnauthorizedEvenUnderOptional) {
  EXPECT_EQ(get_with("not-a-token", "/latest/meta-data/instance-id").status, 401);
  EXPECT_EQ(get_with("", "/latest/meta-data/instance-id").status, 401);
}

TEST_F(Rules, ExpiredTokenIsUnauthorized) {
  const auto r = put_token("2");
  advance(1999ms);
  EXPECT_EQ(get_with(r.body, "/latest/meta-data/instance-id").status, 200);
  advance(1ms);
  EXPECT_EQ(get_with(r.body, "/latest/meta-data/instance-id").status, 401);
}

TEST_F(Rules, TokenBearingGetReportsRemainingLifetimeWithoutExtendingIt) {
  const auto tok = put_token("100").body;
  advance(30s);
  EXPECT_EQ(get_with(tok, "/latest/meta-data/ami-id").header(kTokenTtlHeader), "70");
  advance(30s);
  EXPECT_EQ(get_with(tok, "/latest/meta-data/ami-id").header(kTokenTtlHeader), "40");
}

TEST_F(Rules, HeadWithTokenReportsRemainingLifetimeAndNoBody) {
  const auto tok = token();
  const auto res =
      send("HEAD", "/latest/meta-data/instance-id", {{std::string(kTokenHeader), tok}});
  EXPECT_EQ(res.status, 200);
  EXPECT_TRUE(res.head_only);
  EXPECT_EQ(res.header(kTokenTtlHeader), "21600");
}

TEST_F(Rules, TokenBearingGetWithForwardedForIsForbidden) {
  EXPECT_EQ(
      get_with(token(), "/latest/meta-data/instance-id", {{"X-Forwarded-For", "1.2.3.4"}}).status,
      403);
}

TEST_F(Rules, GetResponsesAreNeverHopLimited) {
  EXPECT_FALSE(get_with(token(), "/latest/meta-data/").hop_limit.has_value());
}

// ---- every response ----

TEST_F(Rules, EveryResponseSaysServerEc2wsAndConnectionClose) {
  std::vector<Response> all = {put_token(),
                               put_token("0"),
                               send("GET", "/latest/api/token"),
                               send("GET", "/nope"),
                               get_with("bad", "/latest/meta-data/"),
                               send("GET", "/latest/meta-data/")};
  set(required());
  all.push_back(send("GET", "/latest/meta-data/"));
  for (const auto& r : all) {
    EXPECT_EQ(r.header("Server"), "EC2ws") << r.status;
    EXPECT_EQ(r.header("Connection"), "close") << r.status;
  }
}

// ---- the metadata tree ----

TEST_F(Rules, ListingShowsCategoriesOnePerLineWithoutTagsWhenTagsAreDisabled) {
  const auto r = send("GET", "/latest/meta-data/");
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.body, HasSubstr("instance-id\n"));
  EXPECT_THAT(r.body, HasSubstr("placement/\n"));
  EXPECT_THAT(r.body, Not(HasSubstr("tags/")));
  EXPECT_NE(r.body.back(), '\n');
}

TEST_F(Rules, ListingShowsTagsWhenTagsAreEnabled) {
  Options o;
  o.tags_enabled = true;
  o.tags = {{"Name", "web-1"}, {"team", "infra"}};
  set(o);
  EXPECT_THAT(send("GET", "/latest/meta-data/").body, HasSubstr("tags/"));
  EXPECT_EQ(send("GET", "/latest/meta-data/tags/instance").body, "Name\nteam");
  EXPECT_EQ(send("GET", "/latest/meta-data/tags/instance/Name").body, "web-1");
  EXPECT_EQ(send("GET", "/latest/meta-data/tags/instance/nope").status, 404);
}

TEST_F(Rules, TagsInstanceIsEmptyWhenTagsAreDisabled) {
  Options o;
  o.tags = {{"Name", "web-1"}};
  set(o);
  const auto r = send("GET", "/latest/meta-data/tags/instance");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.body.empty());
  EXPECT_EQ(send("GET", "/latest/meta-data/tags/instance/Name").status, 404);
}

TEST_F(Rules, HarmlessPathsReportTheConfiguredIdentity) {
  Options o;
  o.instance_id = "i-0aaaaaaaaaaaaaaaa";
  o.ami_id = "ami-0bbbbbbbbbbbbbbbb";
  o.region = "eu-west-1";
  o.availability_zone = "eu-west-1b";
  set(o);
  EXPECT_EQ(send("GET", "/latest/meta-data/instance-id").body, o.instance_id);
  EXPECT_EQ(send("GET", "/latest/meta-data/ami-id").body, o.ami_id);
  EXPECT_EQ(send("GET", "/latest/meta-data/placement/region").body, "eu-west-1");
  EXPECT_EQ(send("GET", "/latest/meta-data/placement/availability-zone").body, "eu-west-1b");
  EXPECT_EQ(send("GET", "/latest/meta-data/local-ipv4").body, "10.0.0.12");
  EXPECT_THAT(send("GET", "/latest/meta-data/hostname").body, HasSubstr("eu-west-1"));
  EXPECT_THAT(send("GET", "/latest/dynamic/instance-identity/document").body,
              HasSubstr("\"instanceId\": \"i-0aaaaaaaaaaaaaaaa\""));
}

TEST_F(Rules, DirectoriesAnswerWithAndWithoutTrailingSlash) {
  EXPECT_EQ(send("GET", "/latest/meta-data/placement").body, "availability-zone\nregion");
  EXPECT_EQ(send("GET", "/latest/meta-data/placement/").body, "availability-zone\nregion");
  EXPECT_EQ(send("GET", "/latest/").body, "dynamic\nmeta-data");
  EXPECT_EQ(send("GET", "/").body, "latest");
}

TEST_F(Rules, UnknownPathsAreNotFound) {
  for (const char* p : {"/latest/meta-data/nope", "/foo", "/latest/meta-data//instance-id",
                        "/latest/meta-datax", "/2009-04-04/meta-data/instance-id"}) {
    EXPECT_EQ(send("GET", p).status, 404) << p;
  }
}

TEST_F(Rules, CredentialPathsAreNotServedButLogged) {
  const auto tok = token();
  for (const char* p :
       {"/latest/meta-data/iam/security-credentials/",
        "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
        "/latest/user-data"}) {
    EXPECT_EQ(get_with(tok, p).status, 404) << p;
    EXPECT_EQ(state_.log.entries().back().path, p);
  }
  EXPECT_THAT(send("GET", "/latest/meta-data/").body, Not(HasSubstr("iam")));
}

TEST_F(Rules, OtherMethodsOnMetadataAreNotAllowed) {
  EXPECT_EQ(send("POST", "/latest/meta-data/instance-id").status, 405);
  EXPECT_EQ(send("PUT", "/latest/meta-data/instance-id").status, 405);
}

// ---- the request log ----

TEST_F(Rules, RequestLogRecordsTheRequestButNeverTheToken) {
  const auto tok = token();
  get_with(tok, "/latest/meta-data/instance-id", {{"X-Forwarded-For", "1.2.3.4"}});
  get_with("wrong", "/latest/meta-data/ami-id");
  const auto& log = state_.log.entries();
  ASSERT_EQ(log.size(), 3U);
  EXPECT_EQ(log[0].method, "PUT");
  EXPECT_EQ(log[0].ttl_header, "21600");
  EXPECT_EQ(log[0].hop_limit, 1);
  EXPECT_EQ(log[0].status, 200);
  EXPECT_EQ(log[0].peer, "169.254.0.2");
  EXPECT_TRUE(log[1].has_token);
  EXPECT_TRUE(log[1].token_valid);
  EXPECT_TRUE(log[1].has_xff);
  EXPECT_EQ(log[1].status, 403);
  EXPECT_TRUE(log[2].has_token);
  EXPECT_FALSE(log[2].token_valid);
  EXPECT_EQ(log[2].status, 401);
  EXPECT_LT(log[0].seq, log[1].seq);
  for (const auto& e : log) {
    EXPECT_EQ(e.path.find(tok), std::string::npos);
    EXPECT_NE(e.ttl_header, tok);
  }
}

TEST_F(Rules, RequestLogKeepsOnlyTheNewestEntries) {
  for (std::size_t i = 0; i < RequestLog::kCapacity + 5; ++i) send("GET", "/");
  EXPECT_EQ(state_.log.entries().size(), RequestLog::kCapacity);
  EXPECT_EQ(state_.log.entries().front().seq, 6U);
}

// ---- options changes ----

TEST_F(Rules, PendingOptionsKeepTheOldBehaviourUntilTheDelayPasses) {
  state_.set_options(required(), 500ms, now_.steady);
  EXPECT_TRUE(state_.pending(now_.steady));
  EXPECT_EQ(state_.requested().http_tokens, HttpTokens::required);
  EXPECT_EQ(send("GET", "/latest/meta-data/instance-id").status, 200);
  advance(500ms);
  EXPECT_FALSE(state_.pending(now_.steady));
  EXPECT_EQ(send("GET", "/latest/meta-data/instance-id").status, 401);
}

TEST_F(Rules, HopLimitChangeAppliesToTheNextTokenPut) {
  Options o;
  o.hop_limit = 2;
  set(o);
  EXPECT_EQ(put_token().hop_limit, 2);
}

// ---- faults ----

TEST_F(Rules, StatusFaultAnswersEveryMatchingRequestWith503) {
  state_.faults.status = 503;
  const auto r = send("GET", "/latest/meta-data/instance-id");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.header("Server"), "EC2ws");
  EXPECT_EQ(state_.log.entries().back().faults, std::vector<std::string>{"status"});
}

TEST_F(Rules, StatusFaultOnATokenPutIssuesNoTokenAndIsStillHopLimited) {
  state_.faults.status = 429;
  const auto r = put_token();
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.hop_limit, 1);
  EXPECT_EQ(state_.tokens.size(), 0U);
}

TEST_F(Rules, FaultShareAffectsRoughlyThatFractionOfRequests) {
  state_.faults.status = 429;
  state_.faults.share = 0.3;
  int throttled = 0;
  for (int i = 0; i < 2000; ++i) throttled += send("GET", "/").status == 429 ? 1 : 0;
  EXPECT_GT(throttled, 450);
  EXPECT_LT(throttled, 750);
}

TEST_F(Rules, FaultShareZeroAffectsNothing) {
  state_.faults.status = 429;
  state_.faults.share = 0.0;
  for (int i = 0; i < 100; ++i) EXPECT_EQ(send("GET", "/").status, 200);
}

TEST_F(Rules, FaultsApplyOnlyToTheListedPaths) {
  state_.faults.status = 503;
  state_.faults.paths = {"/latest/api/token", "/latest/meta-data/placement/"};
  EXPECT_EQ(put_token().status, 503);
  EXPECT_EQ(send("GET", "/latest/meta-data/placement/region").status, 503);
  EXPECT_EQ(send("GET", "/latest/meta-data/instance-id").status, 200);
}

TEST_F(Rules, HangResetAndMalformedFaultsBecomeConnectionActions) {
  state_.faults.hang = true;
  EXPECT_EQ(send("GET", "/").action, Action::hang);
  state_.faults = {};
  state_.faults.reset = true;
  EXPECT_EQ(send("GET", "/").action, Action::reset);
  state_.faults = {};
  state_.faults.malformed = true;
  const auto r = send("GET", "/");
  EXPECT_EQ(r.action, Action::malformed);
  EXPECT_FALSE(r.body.empty());
  EXPECT_EQ(state_.log.entries().back().status, 0);
}

TEST_F(Rules, DelayFaultDelaysANormalAnswer) {
  state_.faults.delay = 1500ms;
  const auto r = send("GET", "/latest/meta-data/instance-id");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.delay, 1500ms);
}

TEST_F(Rules, NoServerHeaderFaultImitatesAnInterceptor) {
  state_.faults.no_server_header = true;
  const auto r = send("GET", "/latest/meta-data/instance-id");
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.header("Server").has_value());
}

TEST_F(Rules, OversizedFaultPadsTheBodyToTheGivenSize) {
  state_.faults.oversized_bytes = 100000;
  const auto r = send("GET", "/latest/meta-data/instance-id");
  EXPECT_EQ(r.body.size(), 100000U);
  EXPECT_TRUE(r.body.starts_with("i-0123456789abcdef0"));
}

TEST_F(Rules, AfterDroppedPutAppliesToHopLimitedPutResponsesOnly) {
  state_.faults.after_dropped_put = AfterDroppedPut::reset;
  EXPECT_EQ(put_token().after_dropped_put, AfterDroppedPut::reset);
  EXPECT_EQ(send("GET", "/").after_dropped_put, AfterDroppedPut::none);
}

TEST_F(Rules, OversizedHeaderFaultAddsOnePaddingHeaderOfTheGivenSize) {
  state_.faults.oversized_header_bytes = 20000;
  const auto r = send("GET", "/latest/meta-data/instance-id");
  EXPECT_EQ(r.body, "i-0123456789abcdef0");
  EXPECT_EQ(r.header("X-Padding").value_or("").size(), 20000U);
  EXPECT_EQ(state_.log.entries().back().faults, std::vector<std::string>{"oversized_header"});
}

TEST_F(Rules, NoTtlHeaderFaultDropsTheTtlFromPutAndGetAnswers) {
  const std::string tok = token();
  state_.faults.no_ttl_header = true;
  const auto put = put_token("300");
  EXPECT_EQ(put.status, 200);
  EXPECT_FALSE(put.header(kTokenTtlHeader).has_value());
  const auto get = get_with(tok, "/latest/meta-data/instance-id");
  EXPECT_EQ(get.status, 200);
  EXPECT_FALSE(get.header(kTokenTtlHeader).has_value());
}

TEST_F(Rules, TokenLifetimeFaultExpiresTheTokenBeforeTheGetButEchoesTheAskedTtl) {
  state_.faults.token_lifetime = 200ms;
  state_.faults.paths = {std::string(kTokenPath)};
  const auto put = put_token("300");
  EXPECT_EQ(put.header(kTokenTtlHeader), "300");
  EXPECT_EQ(get_with(put.body, "/latest/meta-data/instance-id").status, 200);
  advance(250ms);
  EXPECT_EQ(get_with(put.body, "/latest/meta-data/instance-id").status, 401);
  state_.faults = {};
  const std::string fresh = token();
  advance(250ms);
  EXPECT_EQ(get_with(fresh, "/latest/meta-data/instance-id").status, 200);
}

TEST_F(Rules, TrickleFaultIsHandedToTheServerWithANormalAnswer) {
  state_.faults.trickle = 20ms;
  const auto r = send("GET", "/latest/meta-data/instance-id");
  EXPECT_EQ(r.action, Action::respond);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.trickle, 20ms);
  EXPECT_EQ(state_.log.entries().back().faults, std::vector<std::string>{"trickle"});
}

// ---- token store ----

TEST(TokenStore, StaysBoundedWhenFlooded) {
  TokenStore store;
  const SteadyTime t0{};
  for (std::size_t i = 0; i < TokenStore::kCapacity + 10; ++i) store.issue(1h, t0);
  EXPECT_LE(store.size(), TokenStore::kCapacity);
}

}  // namespace
}  // namespace imds::emu
