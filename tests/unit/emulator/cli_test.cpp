// imds-emulator's command line: defaults, every flag, and clear errors (exit 2).
#include "cli.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace imds::emu {
namespace {

using ::testing::HasSubstr;

CliResult parse(std::vector<std::string> args) {
  args.insert(args.begin(), "imds-emulator");
  std::vector<const char*> argv;
  argv.reserve(args.size());
  for (const auto& a : args) argv.push_back(a.c_str());
  return parse_command_line(static_cast<int>(argv.size()), argv.data());
}

TEST(EmulatorCli, DefaultsMatchTheDocumentedOnes) {
  const auto r = parse({"--listen", "127.0.0.1"});
  ASSERT_TRUE(r.config) << r.err;
  const auto& c = *r.config;
  EXPECT_EQ(c.port, 80);
  EXPECT_EQ(c.options, Options{});
  EXPECT_FALSE(c.control);
  EXPECT_FALSE(c.ready_fd);
  EXPECT_EQ(c.max_connections, 512);
  EXPECT_EQ(c.read_timeout, std::chrono::seconds(10));
}

TEST(EmulatorCli, EveryFlagIsApplied) {
  const auto r = parse({"--listen",
                        "169.254.169.254",
                        "--listen",
                        "fd00:ec2::254",
                        "--port",
                        "8080",
                        "--control",
                        "/tmp/x.sock",
                        "--http-tokens",
                        "required",
                        "--hop-limit",
                        "2",
                        "--http-endpoint",
                        "disabled",
                        "--ipv6",
                        "enabled",
                        "--tags",
                        "enabled",
                        "--tag",
                        "Name=web=1",
                        "--tag",
                        "env=",
                        "--unauthorized-body",
                        "empty",
                        "--instance-id",
                        "i-1",
                        "--ami-id",
                        "ami-2",
                        "--region",
                        "eu-west-1",
                        "--ready-fd",
                        "3",
                        "--max-connections",
                        "10",
                        "--read-timeout-ms",
                        "250",
                        "--verbose"});
  ASSERT_TRUE(r.config) << r.err;
  const auto& c = *r.config;
  EXPECT_EQ(c.listen, (std::vector<std::string>{"169.254.169.254", "fd00:ec2::254"}));
  EXPECT_EQ(c.port, 8080);
  EXPECT_EQ(c.control, "/tmp/x.sock");
  const auto& o = c.options;
  EXPECT_EQ(o.http_tokens, HttpTokens::required);
  EXPECT_EQ(o.hop_limit, 2);
  EXPECT_FALSE(o.endpoint_enabled);
  EXPECT_TRUE(o.ipv6_enabled);
  EXPECT_TRUE(o.tags_enabled);
  EXPECT_EQ(o.tags, (std::map<std::string, std::string>{{"Name", "web=1"}, {"env", ""}}));
  EXPECT_EQ(o.unauthorized_body, UnauthorizedBody::empty);
  EXPECT_EQ(o.instance_id, "i-1");
  EXPECT_EQ(o.ami_id, "ami-2");
  EXPECT_EQ(o.region, "eu-west-1");
  EXPECT_EQ(o.availability_zone, "eu-west-1a");
  EXPECT_EQ(c.ready_fd, 3);
  EXPECT_EQ(c.max_connections, 10);
  EXPECT_EQ(c.read_timeout, std::chrono::milliseconds(250));
  EXPECT_TRUE(c.verbose);
}

TEST(EmulatorCli, BadValuesExitWithStatus2AndNameTheFlag) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{}, "--listen"},
      {{"--listen", "localhost"}, "--listen"},
      {{"--listen", "::1", "--port", "0"}, "--port"},
      {{"--listen", "::1", "--port", "http"}, "--port"},
      {{"--listen", "::1", "--hop-limit", "65"}, "--hop-limit"},
      {{"--listen", "::1", "--hop-limit", "1x"}, "--hop-limit"},
      {{"--listen", "::1", "--http-tokens", "v2"}, "--http-tokens"},
      {{"--listen", "::1", "--ipv6", "on"}, "--ipv6"},
      {{"--listen", "::1", "--tag", "novalue"}, "--tag"},
      {{"--listen", "::1", "--tag", "a/b=c"}, "--tag"},
      {{"--listen", "::1", "--unauthorized-body", "html"}, "--unauthorized-body"},
      {{"--listen", "::1", "--instance-id", "i 1"}, "--instance-id"},
      {{"--listen", "::1", "--ready-fd", "-1"}, "--ready-fd"},
      {{"--listen", "::1", "--max-connections", "0"}, "--max-connections"},
      {{"--listen", "::1", "--read-timeout-ms", "5"}, "--read-timeout-ms"},
      {{"--listen", "::1", "--control", std::string(200, 'x')}, "--control"},
      {{"--listen", "::1", "--frobnicate"}, "frobnicate"},
      {{"--listen", "::1", "stray"}, "stray"},
  };
  for (const auto& [args, flag] : cases) {
    const auto r = parse(args);
    EXPECT_FALSE(r.config) << flag;
    EXPECT_EQ(r.exit_code, 2) << flag;
    EXPECT_THAT(r.err, HasSubstr(flag));
    EXPECT_THAT(r.err, HasSubstr("--help"));
  }
}

TEST(EmulatorCli, HelpListsEveryFlagAndExitsZero) {
  const auto r = parse({"--help"});
  EXPECT_FALSE(r.config);
  EXPECT_EQ(r.exit_code, 0);
  for (const char* flag : {"--listen", "--port", "--control", "--http-tokens", "--hop-limit",
                           "--http-endpoint", "--ipv6", "--tags", "--tag", "--unauthorized-body",
                           "--instance-id", "--ami-id", "--region", "--availability-zone",
                           "--ready-fd", "--max-connections", "--read-timeout-ms", "--verbose"}) {
    EXPECT_THAT(r.out, HasSubstr(flag));
  }
}

}  // namespace
}  // namespace imds::emu
