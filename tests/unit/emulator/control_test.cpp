// The emulator's control API (HACKING.md) as the pure function it is: JSON in, JSON out.
#include "control.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace imds::emu {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class Control : public ::testing::Test {
 protected:
  Control() : state_(Options{}, 7) {}

  json call(std::string_view method, std::string_view target, std::string_view body = "",
            int expect_status = 200) {
    const auto r = handle_control(method, target, body, state_, now_);
    EXPECT_EQ(r.status, expect_status) << method << " " << target << " -> " << r.body;
    return json::parse(r.body);
  }
  Response imds_get(std::string path, std::vector<Header> headers = {}) {
    Request r;
    r.method = "GET";
    r.target = std::move(path);
    r.headers = std::move(headers);
    r.peer = "::1";
    r.family = Family::v6;
    return handle(r, state_, now_);
  }

  State state_;
  Now now_{SteadyTime{} + 50s, WallTime{} + 1764380000s};
};

TEST_F(Control, HealthSaysOk) { EXPECT_EQ(call("GET", "/health"), json({{"ok", true}})); }

TEST_F(Control, GetOptionsShowsTheDefaultsApplied) {
  const auto j = call("GET", "/options");
  EXPECT_EQ(j["http_tokens"], "optional");
  EXPECT_EQ(j["hop_limit"], 1);
  EXPECT_EQ(j["http_endpoint"], "enabled");
  EXPECT_EQ(j["ipv6"], "disabled");
  EXPECT_EQ(j["tags"], "disabled");
  EXPECT_EQ(j["unauthorized_body"], "xhtml");
  EXPECT_EQ(j["instance_id"], "i-0123456789abcdef0");
  EXPECT_EQ(j["ami_id"], "ami-0abcdef1234567890");
  EXPECT_EQ(j["region"], "us-east-1");
  EXPECT_EQ(j["availability_zone"], "us-east-1a");
  EXPECT_EQ(j["tags_map"], json::object());
  EXPECT_EQ(j["state"], "applied");
}

TEST_F(Control, PostOptionsChangesOnlyTheGivenKeys) {
  const auto j = call("POST", "/options", R"({"http_tokens":"required","hop_limit":2})");
  EXPECT_EQ(j["http_tokens"], "required");
  EXPECT_EQ(j["hop_limit"], 2);
  EXPECT_EQ(j["region"], "us-east-1");
  EXPECT_EQ(imds_get("/latest/meta-data/instance-id").status, 401);
}

TEST_F(Control, PostOptionsWithPendingKeepsTheOldOptionsInForce) {
  const auto j = call("POST", "/options", R"({"http_tokens":"required","pending_ms":2000})");
  EXPECT_EQ(j["state"], "pending");
  EXPECT_EQ(j["http_tokens"], "required");
  EXPECT_EQ(j["in_force"]["http_tokens"], "optional");
  EXPECT_EQ(j["pending_ms_left"], 2000);
  EXPECT_EQ(imds_get("/latest/meta-data/instance-id").status, 200);
  now_.steady += 2s;
  EXPECT_EQ(call("GET", "/options")["state"], "applied");
  EXPECT_EQ(imds_get("/latest/meta-data/instance-id").status, 401);
}

TEST_F(Control, RegionWithoutZoneGetsTheRegionsFirstZone) {
  const auto j = call("POST", "/options", R"({"region":"eu-central-1"})");
  EXPECT_EQ(j["availability_zone"], "eu-central-1a");
  EXPECT_EQ(imds_get("/latest/meta-data/placement/availability-zone").body, "eu-central-1a");
}

TEST_F(Control, TagsMapReplacesTheTags) {
  call("POST", "/options", R"({"tags":"enabled","tags_map":{"Name":"a","env":"test"}})");
  EXPECT_EQ(imds_get("/latest/meta-data/tags/instance").body, "Name\nenv");
}

TEST_F(Control, BadOptionValuesAreRejectedWithAReason) {
  for (const char* body :
       {R"({"hop_limit":0})", R"({"hop_limit":65})", R"({"hop_limit":"2"})", R"({"hop_limit":1.5})",
        R"({"http_tokens":"maybe"})", R"({"ipv6":true})", R"({"nonsense":1})",
        R"({"pending_ms":-1})", R"({"instance_id":""})", R"({"tags_map":{"a/b":"x"}})",
        R"({"unauthorized_body":"html"})", "[1]", "not json"}) {
    const auto j = call("POST", "/options", body, 400);
    EXPECT_TRUE(j["error"].is_string()) << body;
  }
  EXPECT_EQ(call("GET", "/options")["hop_limit"], 1);
}

TEST_F(Control, PostFaultsReplacesTheFaultsAndEmptyClearsThem) {
  auto j = call("POST", "/faults", R"({"status":503,"share":0.5,"paths":["/latest/api/token"]})");
  EXPECT_EQ(j["status"], 503);
  EXPECT_EQ(j["share"], 0.5);
  EXPECT_EQ(state_.faults.status, 503);
  j = call("POST", "/faults", R"({"after_dropped_put":"reset"})");
  EXPECT_EQ(j["status"], nullptr);
  EXPECT_EQ(state_.faults.after_dropped_put, AfterDroppedPut::reset);
  call("POST", "/faults", "{}");
  EXPECT_EQ(state_.faults, Faults{});
  EXPECT_EQ(call("GET", "/faults")["after_dropped_put"], nullptr);
}

TEST_F(Control, EveryFaultKeyIsAccepted) {
  call("POST", "/faults",
       R"({"delay_ms":10,"hang":true,"reset":true,"status":429,"share":1.0,
           "no_server_header":true,"oversized_bytes":1000000,"malformed":true,
           "after_dropped_put":"hang","paths":["/latest/"],"trickle_ms":50,
           "oversized_header_bytes":20000,"no_ttl_header":true,"token_lifetime_ms":0})");
  const Faults& f = state_.faults;
  EXPECT_EQ(f.trickle, 50ms);
  EXPECT_EQ(f.oversized_header_bytes, 20000U);
  EXPECT_TRUE(f.no_ttl_header);
  EXPECT_EQ(f.token_lifetime, 0ms);
  EXPECT_EQ(call("GET", "/faults")["token_lifetime_ms"], 0);
  EXPECT_EQ(f.delay, 10ms);
  EXPECT_TRUE(f.hang && f.reset && f.no_server_header && f.malformed);
  EXPECT_EQ(f.status, 429);
  EXPECT_EQ(f.oversized_bytes, 1000000U);
  EXPECT_EQ(f.after_dropped_put, AfterDroppedPut::hang);
}

TEST_F(Control, BadFaultValuesAreRejectedWithAReason) {
  for (const char* body :
       {R"({"status":500})", R"({"share":1.5})", R"({"share":"all"})", R"({"delay_ms":-1})",
        R"({"hang":"yes"})", R"({"oversized_bytes":99999999999})", R"({"after_dropped_put":"rst"})",
        R"({"paths":["relative"]})", R"({"boom":true})", R"({"trickle_ms":10001})",
        R"({"oversized_header_bytes":2000000})", R"({"no_ttl_header":1})",
        R"({"token_lifetime_ms":-5})", R"({"token_lifetime_ms":"soon"})"}) {
    const auto j = call("POST", "/faults", body, 400);
    EXPECT_TRUE(j["error"].is_string()) << body;
  }
}

TEST_F(Control, RequestsListsTheLogAndDeleteClearsIt) {
  imds_get("/latest/meta-data/instance-id", {{"X-aws-ec2-metadata-token", "bogus"}});
  imds_get("/latest/meta-data/ami-id");
  auto j = call("GET", "/requests");
  ASSERT_EQ(j.size(), 2U);
  const auto& e = j[0];
  for (const char* key : {"seq", "time", "peer", "family", "method", "path", "has_token",
                          "token_valid", "has_xff", "ttl_header", "status"}) {
    EXPECT_TRUE(e.contains(key)) << key;
  }
  EXPECT_EQ(e["method"], "GET");
  EXPECT_EQ(e["path"], "/latest/meta-data/instance-id");
  EXPECT_EQ(e["family"], "ipv6");
  EXPECT_EQ(e["peer"], "::1");
  EXPECT_EQ(e["has_token"], true);
  EXPECT_EQ(e["token_valid"], false);
  EXPECT_EQ(e["status"], 401);
  EXPECT_DOUBLE_EQ(e["time"].get<double>(), 1764380000.0);
  EXPECT_EQ(call("GET", "/requests?since=" + std::to_string(e["seq"].get<int>())).size(), 1U);
  EXPECT_EQ(call("DELETE", "/requests")["cleared"], 2);
  EXPECT_EQ(call("GET", "/requests").size(), 0U);
}

TEST_F(Control, RequestLogSurvivesInvalidUtf8InPaths) {
  imds_get("/latest/\xff\xfe");
  const auto j = call("GET", "/requests");
  ASSERT_EQ(j.size(), 1U);
  EXPECT_TRUE(j[0]["path"].is_string());
}

TEST_F(Control, UnknownPathsAndMethodsAreErrors) {
  call("GET", "/nope", "", 404);
  call("PUT", "/options", "{}", 405);
  call("POST", "/requests", "", 405);
}

}  // namespace
}  // namespace imds::emu
