// collect() against the real emulator on loopback: the host target's observations.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "collect.hpp"
#include "emulator_process.hpp"

namespace imds {
namespace {

using std::chrono::milliseconds;

CollectConfig loopback(const test::Emulator& emulator) {
  CollectConfig config;
  config.endpoint_v4 = emulator.v4_url();
  config.endpoint_v6 = emulator.v6_url();
  config.connect_timeout = milliseconds{500};
  config.request_timeout = milliseconds{1500};
  config.deadline = milliseconds{5000};
  return config;
}

const Observation& find(const TargetObservations& target, Step step, Family family,
                        const std::string& path = "") {
  for (const Observation& observation : target.observations) {
    if (observation.step == step && observation.family == family &&
        (path.empty() || observation.path == path)) {
      return observation;
    }
  }
  throw std::runtime_error("no such observation");
}

bool root() { return ::geteuid() == 0; }

// A run of 40 or more token alphabet characters: what a leaked 56-character token looks like.
bool holds_token_like_text(std::string_view text) {
  std::size_t run = 0;
  for (const char c : text) {
    const bool token_char = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
    run = token_char ? run + 1 : 0;
    if (run >= 40) return true;
  }
  return false;
}

void expect_no_token_anywhere(const CollectResult& result) {
  for (const TargetObservations& target : result.targets) {
    EXPECT_FALSE(holds_token_like_text(target.error));
    for (const Observation& observation : target.observations) {
      const HttpResult& r = observation.result;
      for (const std::string_view text :
           {std::string_view(r.body), std::string_view(r.error),
            std::string_view(observation.path),
            r.server ? std::string_view(*r.server) : std::string_view()}) {
        EXPECT_FALSE(holds_token_like_text(text)) << observation.path << ": " << text;
      }
    }
  }
}

std::size_t open_descriptors() {
  return static_cast<std::size_t>(std::distance(
      std::filesystem::directory_iterator("/proc/self/fd"), std::filesystem::directory_iterator{}));
}

nlohmann::json request_log(const test::Emulator& emulator) {
  std::string body;
  emulator.control("GET", "/requests", "", &body);
  return nlohmann::json::parse(body);
}

TEST(CollectOnLoopback, HostGetsATokenAndEveryAnswerWhenTokensAreOptional) {
  test::Emulator emulator;
  const auto started = std::chrono::steady_clock::now();
  const CollectResult result = collect(loopback(emulator), {test::host_target()});
  const auto took =
      std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started);
  std::printf("collect() on loopback, host only, v4+v6: %lld ms\n",
              static_cast<long long>(took.count()));
  RecordProperty("collect_ms", std::to_string(took.count()));

  ASSERT_EQ(result.targets.size(), 1U);
  const TargetObservations& at_host = result.targets[0];
  EXPECT_TRUE(at_host.error.empty());
  EXPECT_EQ(at_host.distance, 0);

  const HttpResult& put = find(at_host, Step::token_put, Family::v4).result;
  ASSERT_EQ(put.outcome, Outcome::http) << put.error;
  EXPECT_EQ(put.status, 200);
  EXPECT_EQ(put.token_ttl_seconds, 60);
  EXPECT_EQ(put.server, "EC2ws");
  EXPECT_TRUE(put.connected);
  EXPECT_TRUE(put.body.empty()) << "the token must never be kept";

  const HttpResult& v2 = find(at_host, Step::v2_get, Family::v4).result;
  EXPECT_EQ(v2.status, 200);
  EXPECT_EQ(v2.body, "i-0123456789abcdef0");
  EXPECT_TRUE(v2.token_ttl_seconds && *v2.token_ttl_seconds <= 60);
  const HttpResult& v1 = find(at_host, Step::v1_get, Family::v4).result;
  EXPECT_EQ(v1.status, 200);
  EXPECT_EQ(v1.body, "i-0123456789abcdef0");
  const HttpResult& listing = find(at_host, Step::listing, Family::v4).result;
  EXPECT_EQ(listing.status, 200);
  EXPECT_NE(listing.body.find("instance-id"), std::string::npos);
  EXPECT_EQ(find(at_host, Step::identity, Family::v4, "/latest/meta-data/ami-id").result.body,
            "ami-0abcdef1234567890");
  EXPECT_EQ(
      find(at_host, Step::identity, Family::v4, "/latest/meta-data/placement/region").result.body,
      "us-east-1");

  // The emulator's IPv6 endpoint is disabled by default: its listener is closed.
  EXPECT_EQ(find(at_host, Step::token_put, Family::v6).result.outcome, Outcome::refused);
  EXPECT_EQ(find(at_host, Step::v2_get, Family::v6).result.outcome, Outcome::skipped);

  // The token was used (valid) and never asked for anything secret.
  int token_gets = 0;
  for (const auto& entry : request_log(emulator)) {
    const std::string path = entry.at("path");
    EXPECT_FALSE(is_forbidden_path(path)) << path;
    if (entry.at("method") == "GET" && entry.at("has_token") == true) {
      EXPECT_EQ(entry.at("token_valid"), true) << path;
      ++token_gets;
    }
  }
  EXPECT_EQ(token_gets, 5);  // instance-id, listing, three identity paths
  expect_no_token_anywhere(result);
}

TEST(CollectOnLoopback, ARunLeavesNoFileDescriptorOpen) {
  test::Emulator emulator({"--ipv6", "enabled"});
  const CollectConfig config = loopback(emulator);
  (void)collect(config, {test::host_target()});  // first use initialises libcurl
  const std::size_t before = open_descriptors();
  for (int run = 0; run < 3; ++run) (void)collect(config, {test::host_target()});
  EXPECT_EQ(open_descriptors(), before);
}

TEST(CollectOnLoopback, RequiredTokensAnswerTheTokenlessGetWith401) {
  test::Emulator emulator({"--http-tokens", "required", "--ipv6", "enabled"});
  const CollectResult result = collect(loopback(emulator), {test::host_target()});
  const TargetObservations& at_host = result.targets[0];
  expect_no_token_anywhere(result);
  for (const Family family : {Family::v4, Family::v6}) {
    EXPECT_EQ(find(at_host, Step::token_put, family).result.status, 200);
    EXPECT_EQ(find(at_host, Step::v2_get, family).result.status, 200);
    const HttpResult& v1 = find(at_host, Step::v1_get, family).result;
    EXPECT_EQ(v1.outcome, Outcome::http);
    EXPECT_EQ(v1.status, 401);
  }
}

TEST(CollectOnLoopback, NoV1SendsNoTokenlessRequestAtAll) {
  test::Emulator emulator;
  CollectConfig config = loopback(emulator);
  config.probe_v1 = false;
  config.probe_v6 = false;
  const CollectResult result = collect(config, {test::host_target()});
  const HttpResult& v1 = find(result.targets[0], Step::v1_get, Family::v4).result;
  EXPECT_EQ(v1.outcome, Outcome::skipped);
  EXPECT_EQ(v1.skip, SkipReason::v1_disabled);
  for (const auto& entry : request_log(emulator)) {
    if (entry.at("method") == "GET") {
      EXPECT_EQ(entry.at("has_token"), true) << entry.dump();
    }
  }
}

TEST(CollectOnLoopback, DisabledEndpointAnswers403AndTokenRequestsAreNotSent) {
  test::Emulator emulator({"--http-endpoint", "disabled"});
  CollectConfig config = loopback(emulator);
  config.probe_v6 = false;
  const CollectResult result = collect(config, {test::host_target()});
  const TargetObservations& at_host = result.targets[0];
  EXPECT_EQ(find(at_host, Step::token_put, Family::v4).result.status, 403);
  const HttpResult& v2 = find(at_host, Step::v2_get, Family::v4).result;
  EXPECT_EQ(v2.outcome, Outcome::skipped);
  EXPECT_EQ(v2.skip, SkipReason::no_token);
}

TEST(CollectOnLoopback, ResetAndHangingPutsAreTimeoutAndResetValues) {
  test::Emulator emulator;
  CollectConfig config = loopback(emulator);
  config.probe_v6 = false;
  config.request_timeout = milliseconds{400};
  ASSERT_EQ(emulator.control("POST", "/faults", R"({"reset":true,"paths":["/latest/api/token"]})"),
            200);
  EXPECT_EQ(find(collect(config, {test::host_target()}).targets[0], Step::token_put, Family::v4).result.outcome,
            Outcome::reset);
  ASSERT_EQ(emulator.control("POST", "/faults", R"({"hang":true,"paths":["/latest/api/token"]})"),
            200);
  const CollectResult hung = collect(config, {test::host_target()});
  const HttpResult& put = find(hung.targets[0], Step::token_put, Family::v4).result;
  EXPECT_EQ(put.outcome, Outcome::timeout);
  EXPECT_TRUE(put.connected);
  EXPECT_EQ(find(hung.targets[0], Step::v1_get, Family::v4).result.status, 200)
      << "the tokenless GET runs beside the PUT, not after it";
}

TEST(CollectOnLoopback, BodiesAreCappedAndMarkedTruncated) {
  test::Emulator emulator;
  CollectConfig config = loopback(emulator);
  config.probe_v6 = false;
  config.max_body_bytes = 1000;
  ASSERT_EQ(
      emulator.control("POST", "/faults",
                       R"({"oversized_bytes":200000,"paths":["/latest/meta-data/instance-id"]})"),
      200);
  const CollectResult result = collect(config, {test::host_target()});
  const HttpResult& v2 = find(result.targets[0], Step::v2_get, Family::v4).result;
  EXPECT_EQ(v2.outcome, Outcome::http) << v2.error;
  EXPECT_TRUE(v2.body_truncated);
  EXPECT_EQ(v2.body.size(), 1000U);
}

TEST(CollectOnLoopback, TheDeadlineBoundsTheWholeRun) {
  test::Emulator emulator;
  ASSERT_EQ(emulator.control("POST", "/faults", R"({"hang":true})"), 200);
  CollectConfig config = loopback(emulator);
  config.request_timeout = milliseconds{10000};
  config.deadline = milliseconds{300};
  const auto started = std::chrono::steady_clock::now();
  const CollectResult result = collect(config, {test::host_target()});
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_LT(took, milliseconds{1500});
  const HttpResult& put = find(result.targets[0], Step::token_put, Family::v4).result;
  EXPECT_EQ(put.outcome, Outcome::timeout);
  EXPECT_NE(put.error.find("deadline"), std::string::npos) << put.error;
}

TEST(CollectOnLoopback, ANamespaceThatCannotBeEnteredIsAnErrorValueForThatTargetOnly) {
  test::Emulator emulator;
  CollectConfig config = loopback(emulator);
  config.probe_v6 = false;
  NetnsTarget missing;
  missing.name = "gone";
  missing.path = "/run/netns/imds-collect-test-does-not-exist";
  NetnsTarget not_a_namespace;
  not_a_namespace.name = "file";
  not_a_namespace.path = "/proc/self/status";
  const CollectResult result = collect(config, {missing, test::host_target(), not_a_namespace});
  ASSERT_EQ(result.targets.size(), 3U);
  EXPECT_EQ(result.targets[0].target.name, "gone") << "results keep the order of the targets";
  EXPECT_EQ(find(result.targets[1], Step::token_put, Family::v4).result.status, 200);
  for (const std::size_t i : {0U, 2U}) {
    const TargetObservations& target = result.targets[i];
    EXPECT_NE(target.error.find(target.target.path), std::string::npos) << target.error;
    for (const Observation& observation : target.observations) {
      EXPECT_EQ(observation.result.outcome, Outcome::skipped);
    }
  }
}

TEST(CollectOnLoopback, ANamespaceReplacedSinceDiscoveryIsNotProbedUnderItsOldName) {
  test::Emulator emulator;
  CollectConfig config = loopback(emulator);
  config.probe_v6 = false;
  NetnsTarget replaced;
  replaced.name = "was-c1";
  replaced.path = "/proc/self/ns/net";  // opens fine, but it is not what discovery saw
  replaced.inode = 1;
  const CollectResult result = collect(config, {test::host_target(), replaced});
  const TargetObservations& t = result.targets[1];
  EXPECT_NE(t.error.find("namespace changed"), std::string::npos) << t.error;
  for (const Observation& observation : t.observations) {
    EXPECT_EQ(observation.result.outcome, Outcome::skipped);
    EXPECT_EQ(observation.result.skip, SkipReason::namespace_not_entered);
  }
  // Only the host's requests reached the IMDS: as many as a run of the host alone makes.
  const std::size_t with_replaced = request_log(emulator).size();
  collect(config, {test::host_target()});
  EXPECT_EQ(request_log(emulator).size(), 2 * with_replaced) << request_log(emulator).dump();
}

TEST(CollectOnLoopback, PacketSocketsReadTheHopLimitAsTheTtlOfThePutResponse) {
  if (!root()) GTEST_SKIP() << "AF_PACKET needs CAP_NET_RAW";
  test::Emulator emulator({"--hop-limit", "3", "--ipv6", "enabled"});
  const CollectResult result = collect(loopback(emulator), {test::host_target()});
  EXPECT_TRUE(result.packet_ttl_available);
  for (const Family family : {Family::v4, Family::v6}) {
    const HttpResult& put = find(result.targets[0], Step::token_put, family).result;
    EXPECT_EQ(put.ttl, 3) << "the PUT response carries the hop limit";
    EXPECT_EQ(put.handshake_ttl, 64) << "the SYN-ACK is not hop-limited";
    const HttpResult& v2 = find(result.targets[0], Step::v2_get, family).result;
    EXPECT_EQ(v2.ttl, 64) << "GET responses are not hop-limited";
  }
}

TEST(CollectOnLoopback, WithoutPacketTtlNoTtlIsReportedAndEverythingElseWorks) {
  test::Emulator emulator;
  CollectConfig config = loopback(emulator);
  config.packet_ttl = false;
  const CollectResult result = collect(config, {test::host_target()});
  EXPECT_FALSE(result.packet_ttl_available);
  const HttpResult& put = find(result.targets[0], Step::token_put, Family::v4).result;
  EXPECT_EQ(put.status, 200);
  EXPECT_FALSE(put.ttl);
  EXPECT_FALSE(put.handshake_ttl);
}

TEST(CollectOnLoopback, MinTtlSearchFindsTheHopLimitWithoutPrivileges) {
  test::Emulator emulator({"--hop-limit", "5"});
  CollectConfig config = loopback(emulator);
  config.probe_v6 = false;
  config.packet_ttl = false;
  config.exact_hop_limit_search = true;
  config.search_timeout = milliseconds{400};
  config.deadline = milliseconds{8000};
  const CollectResult result = collect(config, {test::host_target()});
  EXPECT_EQ(result.searched_hop_limit, 5);
  for (const auto& entry : request_log(emulator)) {
    EXPECT_FALSE(is_forbidden_path(entry.at("path").get<std::string>()));
  }
}

}  // namespace
}  // namespace imds
