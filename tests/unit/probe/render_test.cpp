// Renderers: JSON carries everything (and never a token), text is safe on a terminal.
#include "render.hpp"

#include <gtest/gtest.h>

#include "builders.hpp"

namespace imds {
namespace {

using namespace imds::test;

constexpr const char* kSecretToken = "AQAEAOnlyTestTokenValueThatMustNeverAppearInOutput==";

// A diagnosis in which a token PUT body was (wrongly) kept, as a defence check.
Diagnosis with_leaked_token() {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 2;
  TargetObservations host = observe_host(w);
  for (auto& o : host.observations) {
    if (o.step == Step::token_put && o.result.outcome == Outcome::http)
      o.result.body = kSecretToken;
  }
  return finish(diagnosis({std::move(host)}, w));
}

TEST(Json, CarriesSchemaVersionAndEveryObservation) {
  World w;
  const Diagnosis d = world_diagnosis(w, {{"c1", 1}});
  const nlohmann::json j = to_json(d);
  EXPECT_EQ(j.at("schema_version"), kSchemaVersion);
  ASSERT_EQ(j.at("targets").size(), d.targets.size());
  for (std::size_t i = 0; i < d.targets.size(); ++i) {
    EXPECT_EQ(j["targets"][i]["observations"].size(), d.targets[i].observations.size());
  }
  EXPECT_EQ(j["inference"]["targets"].size(), 2u);
  EXPECT_EQ(j["findings"].size(), d.findings.size());
  EXPECT_EQ(j["exit_code"], exit_code(d));
}

TEST(Json, EnumsAreStableLowercaseStringsAndLatencyIsMicroseconds) {
  const Diagnosis d = world_diagnosis(World{}, {{"c1", 1}});
  const nlohmann::json j = to_json(d);
  const nlohmann::json& put = j["targets"][0]["observations"][0];
  EXPECT_EQ(put["step"], "token_put");
  EXPECT_EQ(put["family"], "ipv4");
  EXPECT_EQ(put["outcome"], "http");
  EXPECT_EQ(put["status"], 200);
  EXPECT_EQ(put["latency_us"], 900);
  EXPECT_EQ(put["ttl"], 1);
  EXPECT_EQ(put["handshake_ttl"], 255);
  const nlohmann::json& inference = j["inference"];
  EXPECT_EQ(inference["endpoint"], "enabled");
  EXPECT_EQ(inference["http_tokens"], "optional");
  EXPECT_EQ(inference["hop_limit"]["method"], "packet-ttl");
  EXPECT_EQ(inference["targets"][1]["imdsv2"], "no");
}

TEST(Json, AbsentValuesAreNull) {
  World w;
  w.packet_ttl = false;
  const nlohmann::json j = to_json(world_diagnosis(w));
  const nlohmann::json& put = j["targets"][0]["observations"][0];
  EXPECT_TRUE(put["ttl"].is_null());
  EXPECT_TRUE(put["handshake_ttl"].is_null());
  EXPECT_TRUE(j["searched_hop_limit"].is_null());
  EXPECT_TRUE(j["expectations"]["http_tokens"].is_null());
  // A request without an HTTP answer has no status.
  const nlohmann::json& refused_put = j["targets"][0]["observations"][7];
  EXPECT_EQ(refused_put["step"], "token_put");
  EXPECT_EQ(refused_put["family"], "ipv6");
  EXPECT_EQ(refused_put["outcome"], "refused");
  EXPECT_TRUE(refused_put["status"].is_null());
}

TEST(Json, NeverContainsATokenPutBody) {
  const Diagnosis d = with_leaked_token();
  const std::string dumped = to_json(d).dump();
  EXPECT_EQ(dumped.find(kSecretToken), std::string::npos);
  EXPECT_EQ(render_text(d, false).find(kSecretToken), std::string::npos);
  EXPECT_EQ(render_text(d, true).find(kSecretToken), std::string::npos);
}

TEST(Json, InvalidUtf8InBodiesAndNamesIsReplacedNotThrown) {
  World w;
  TargetObservations host = observe_host(w);
  host.target.name = "host\xff\xfe";
  for (auto& o : host.observations) {
    if (o.step == Step::listing) o.result.body = "ami-id\n\xc3\x28\n";
  }
  const Diagnosis d = finish(diagnosis({std::move(host)}, w));
  const nlohmann::json j = to_json(d);
  std::string dumped;
  EXPECT_NO_THROW(dumped = j.dump());
  EXPECT_NE(dumped.find("\xef\xbf\xbd"), std::string::npos);  // U+FFFD
  nlohmann::json reparsed;
  EXPECT_NO_THROW(reparsed = nlohmann::json::parse(dumped));
  EXPECT_EQ(reparsed, j);
}

TEST(Json, ExpectationsAreIncluded) {
  Diagnosis d = diagnosis({observe_host(World{})});
  d.expectations.http_tokens = HttpTokens::required;
  d.expectations.hop_limit_min = 2;
  d.expectations.tags_enabled = false;
  const nlohmann::json e = to_json(finish(std::move(d)))["expectations"];
  EXPECT_EQ(e["http_tokens"], "required");
  EXPECT_EQ(e["hop_limit_min"], 2);
  EXPECT_TRUE(e["hop_limit_max"].is_null());
  EXPECT_EQ(e["tags"], "disabled");
  EXPECT_TRUE(e["ipv6"].is_null());
}

TEST(Text, VerdictComesFirstAndNamesEveryOption) {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 2;
  w.tags = true;
  const std::string text = render_text(world_diagnosis(w, {{"c1", 1}}), false);
  EXPECT_EQ(text.rfind("verdict: healthy; HttpTokens=required, hop limit=2 (packet TTL), "
                       "endpoint=enabled, IPv6=disabled, tags=enabled\n",
                       0),
            0u)
      << text;
}

TEST(Text, OneLinePerTargetWithDistanceAndResults) {
  World w;
  w.tokens = HttpTokens::required;
  const std::string text = render_text(world_diagnosis(w, {{"c1", 1}}), false);
  EXPECT_NE(
      text.find("  host  0 hops   IMDSv2 yes      IMDSv1 no       IMDSv2 works (hop limit 1) | IPv6: "
                "endpoint off\n"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("  c1    1 hop    IMDSv2 no       IMDSv1 no       no IMDSv2 token: PUT "
                      "response dropped after 1 hop (hop limit 1)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("[predicted]"), std::string::npos) << text;
}

TEST(Text, NotHealthyCountsTheProblems) {
  World w;
  w.tokens = HttpTokens::required;
  const std::string text = render_text(world_diagnosis(w, {{"c1", 1}}), false);
  EXPECT_EQ(text.rfind("verdict: NOT HEALTHY (1 error)", 0), 0u) << text;
  EXPECT_NE(text.find("[error] container-no-token: c1: no IMDSv2 token"), std::string::npos)
      << text;
  EXPECT_NE(text.find("      fix:\n        aws ec2 modify-instance-metadata-options"),
            std::string::npos)
      << text;
}

TEST(Text, NoEscapeSequencesWithoutColourAndSomeWithIt) {
  const Diagnosis d = world_diagnosis(World{}, {{"c1", 1}});
  EXPECT_EQ(render_text(d, false).find('\x1b'), std::string::npos);
  EXPECT_NE(render_text(d, true).find("\x1b["), std::string::npos);
}

TEST(Text, ControlCharactersFromNamesAndServersAreReplaced) {
  World w;
  TargetObservations pod = observe_container(w, "evil\x1b]0;owned\x07\nname", 1);
  for (auto& o : pod.observations) {
    if (o.result.outcome == Outcome::http) o.result.server = "proxy\x1b[2J";
  }
  pod.error = "";
  const Diagnosis d = finish(diagnosis({observe_host(w), std::move(pod)}, w));
  const std::string text = render_text(d, false);
  EXPECT_EQ(text.find('\x1b'), std::string::npos) << text;
  EXPECT_EQ(text.find('\x07'), std::string::npos) << text;
  EXPECT_EQ(text.find("name\n"), std::string::npos) << text;  // no line break smuggled in
  const std::string coloured = render_text(d, true);
  EXPECT_EQ(coloured.find("\x1b]"), std::string::npos);
  EXPECT_EQ(coloured.find("\x1b[2J"), std::string::npos);
}

TEST(ExitCode, UnreachableBeatsFindings) {
  const Diagnosis d = finish(diagnosis({cut_off(host_target(), Outcome::unreachable)}));
  EXPECT_EQ(exit_code(d), kExitUnreachable);
}

TEST(ExitCode, NoticesAndInformationKeepItZero) {
  Diagnosis d;
  d.findings.push_back({"hop-limit-excess", Severity::notice, {}, "s", "d", "f"});
  d.findings.push_back({"v1-not-probed", Severity::info, {}, "s", "d", "f"});
  EXPECT_EQ(exit_code(d), kExitHealthy);
  d.findings.push_back({"throttled", Severity::warning, {}, "s", "d", ""});
  EXPECT_EQ(exit_code(d), kExitFindings);
}

}  // namespace
}  // namespace imds
