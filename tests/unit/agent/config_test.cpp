// Configuration: defaults, files, drop-ins in order, flags on top, and errors that name
// the file and line.
#include "config.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>

namespace imds::agent {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class ConfigFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("imds-agent-config-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "conf.d");
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    auto p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  [[nodiscard]] ConfigSources sources() const {
    return {(dir_ / "main.conf").string(), false, (dir_ / "conf.d").string(), {}};
  }
  AgentConfig load_ok(const ConfigSources& s) {
    auto r = load_config(s);
    if (!r) ADD_FAILURE() << r.error().message;
    return r ? r.value() : AgentConfig{};
  }
  std::string load_error(const ConfigSources& s) {
    auto r = load_config(s);
    if (!r) return r.error().message;
    ADD_FAILURE() << "configuration was accepted";
    return {};
  }
  fs::path dir_;
};

TEST_F(ConfigFiles, NoFilesGiveTheDocumentedDefaults) {
  auto c = load_ok(sources());
  EXPECT_EQ(c.interval, 60s);
  EXPECT_DOUBLE_EQ(c.jitter, 0.1);
  EXPECT_EQ(c.v1_interval, std::optional<Millis>(6h));
  EXPECT_EQ(c.netns_dirs, (std::vector<std::string>{"/run/netns", "/run/docker/netns"}));
  EXPECT_TRUE(c.proc_scan);
  EXPECT_EQ(c.socket, "/run/imds-agent/imds-agent.sock");
  EXPECT_EQ(c.socket_group, "imds-agent");
  EXPECT_EQ(c.endpoint, "http://169.254.169.254");
  EXPECT_EQ(c.max_namespaces, 64U);
  EXPECT_TRUE(c.sources.empty());
}

TEST_F(ConfigFiles, DropInsOverrideTheMainFileInLexicalOrderAndFlagsOverrideAll) {
  write("main.conf", "# main\ninterval = 30s\njitter = 0.2\nlog-level = debug\n");
  write("conf.d/20-b.conf", "interval = 10min\n");
  write("conf.d/10-a.conf", "interval = 5min\njitter = 0\n");
  write("conf.d/notes.txt", "this is not read\n");
  auto s = sources();
  auto c = load_ok(s);
  EXPECT_EQ(c.interval, 10min);
  EXPECT_DOUBLE_EQ(c.jitter, 0.0);
  EXPECT_EQ(c.log_level, "debug");
  ASSERT_EQ(c.sources.size(), 3U);
  EXPECT_NE(c.sources[1].find("10-a.conf"), std::string::npos);
  EXPECT_NE(c.sources[2].find("20-b.conf"), std::string::npos);
  s.overrides = {{"interval", "2h"}};
  EXPECT_EQ(load_ok(s).interval, 2h);
}

TEST_F(ConfigFiles, AnUnknownKeyNamesTheFileAndLine) {
  write("main.conf", "interval = 30s\n\n# a comment\nintervall = 40s\n");
  EXPECT_EQ(load_error(sources()),
            (dir_ / "main.conf").string() + ":4: unknown key 'intervall' (see imds-agent.conf(5))");
}

TEST_F(ConfigFiles, ABadValueNamesTheDropInAndLine) {
  write("main.conf", "interval = 30s\n");
  write("conf.d/10-policy.conf",
        "expect = imds-support=v2.0\njitter = 0.1\ninterval = 5 minutes\n");
  auto err = load_error(sources());
  EXPECT_EQ(err.rfind((dir_ / "conf.d/10-policy.conf").string() +
                          ":3: interval: '5 minutes' is not a duration",
                      0),
            0U)
      << err;
}

TEST_F(ConfigFiles, ARepeatedKeyErrorPointsAtTheOccurrenceThatIsWrong) {
  write("main.conf", "netns-dir = /run/netns\n# x\nnetns-dir = relative/dir\n");
  auto err = load_error(sources());
  EXPECT_NE(err.find("main.conf:3: netns-dir: 'relative/dir' is not an absolute path"),
            std::string::npos)
      << err;
}

TEST_F(ConfigFiles, ALineWithoutEqualsSignIsAnErrorWithItsLine) {
  write("main.conf", "interval = 30s\nproc-scan\n");
  EXPECT_NE(load_error(sources()).find("main.conf:2: expected 'KEY = VALUE', got 'proc-scan'"),
            std::string::npos);
}

TEST_F(ConfigFiles, KeysInsideASectionAreUnknown) {
  write("main.conf", "[agent]\ninterval = 30s\n");
  EXPECT_NE(load_error(sources()).find("main.conf:2: unknown key 'agent.interval'"),
            std::string::npos);
}

TEST_F(ConfigFiles, BadExpectationsAreRejectedWithTheProbesMessage) {
  write("main.conf", "expect = hop-limit=99\n");
  EXPECT_NE(load_error(sources()).find("main.conf:1: expect: "), std::string::npos);
}

TEST_F(ConfigFiles, ExpectationsAddUpAcrossFilesAndAnEmptyValueClears) {
  write("main.conf", "expect = http-tokens=required\n");
  write("conf.d/10.conf", "expect = hop-limit=>=2\n");
  auto c = load_ok(sources());
  EXPECT_EQ(c.expectations.http_tokens, HttpTokens::required);
  EXPECT_EQ(c.expectations.hop_limit_min, 2);
  EXPECT_EQ(c.expect.size(), 2U);
  write("conf.d/20.conf", "expect =\nexpect = tags=enabled\n");
  c = load_ok(sources());
  EXPECT_FALSE(c.expectations.http_tokens.has_value());
  EXPECT_EQ(c.expectations.tags_enabled, true);
  EXPECT_EQ(c.expect, std::vector<std::string>{"tags=enabled"});
}

TEST_F(ConfigFiles, TheFirstNetnsDirReplacesTheDefaultsAndLaterOnesAdd) {
  write("main.conf", "netns-dir = /run/netns\nnetns-dir = /run/docker/netns\n");
  write("conf.d/10.conf", "netns-dir = /var/run/cni\n");
  EXPECT_EQ(load_ok(sources()).netns_dirs,
            (std::vector<std::string>{"/run/netns", "/run/docker/netns", "/var/run/cni"}));
  write("conf.d/20.conf", "netns-dir =\n");
  EXPECT_TRUE(load_ok(sources()).netns_dirs.empty());
}

TEST_F(ConfigFiles, AMissingDefaultFileIsFineButAMissingGivenOneIsAnError) {
  auto s = sources();
  EXPECT_TRUE(load_ok(s).sources.empty());
  s.file_required = true;
  EXPECT_NE(load_error(s).find("main.conf: does not exist"), std::string::npos);
}

TEST_F(ConfigFiles, ABadFlagValueNamesTheFlag) {
  auto s = sources();
  s.overrides = {{"max-namespaces", "0"}};
  EXPECT_EQ(load_error(s), "--max-namespaces: '0' is not a number in 1..4000");
}

TEST_F(ConfigFiles, AnEndpointWithAUserIsRejectedNamingTheFileAndLine) {
  write("main.conf", "interval = 30s\nendpoint = http://user@169.254.169.254\n");
  EXPECT_EQ(load_error(sources()),
            (dir_ / "main.conf").string() +
                ":2: endpoint: 'http://user@169.254.169.254' must not hold a user name or "
                "password");
}

TEST_F(ConfigFiles, AFifoAsTheMainFileIsAnErrorInsteadOfABlockingOpen) {
  const auto fifo = dir_ / "main.conf";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  auto loading = std::async(std::launch::async, [&] { return load_config(sources()); });
  if (loading.wait_for(10s) != std::future_status::ready) {
    ADD_FAILURE() << "load_config blocked on a FIFO";
    // Give the blocked open a writer, then end of file, so the test ends.
    ::close(::open(fifo.c_str(), O_WRONLY | O_CLOEXEC));
  }
  const auto loaded = loading.get();
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.error().message,
            fifo.string() + ": is a FIFO, not a regular file; give a configuration file");
}

TEST_F(ConfigFiles, ADirectoryAsTheMainFileIsAnError) {
  fs::create_directory(dir_ / "main.conf");
  auto s = sources();
  EXPECT_NE(load_error(s).find("main.conf: is a directory, not a regular file"), std::string::npos);
  s.file_required = true;
  EXPECT_NE(load_error(s).find("main.conf: is a directory, not a regular file"), std::string::npos);
}

TEST_F(ConfigFiles, DropInsThatAreNotRegularFilesAreSkipped) {
  ASSERT_EQ(::mkfifo((dir_ / "conf.d/10-fifo.conf").c_str(), 0600), 0) << std::strerror(errno);
  fs::create_directory(dir_ / "conf.d/20-dir.conf");
  write("conf.d/30-real.conf", "interval = 5min\n");
  fs::create_symlink(dir_ / "conf.d/30-real.conf", dir_ / "conf.d/40-link.conf");
  fs::create_symlink(dir_ / "nonexistent", dir_ / "conf.d/50-dangling.conf");
  auto loading = std::async(std::launch::async, [&] { return load_config(sources()); });
  ASSERT_EQ(loading.wait_for(10s), std::future_status::ready) << "blocked on a drop-in";
  const auto loaded = loading.get();
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_EQ(loaded.value().interval, 5min);
  ASSERT_EQ(loaded.value().sources.size(), 2U);
  EXPECT_NE(loaded.value().sources[0].find("30-real.conf"), std::string::npos);
  EXPECT_NE(loaded.value().sources[1].find("40-link.conf"), std::string::npos);
}

TEST(ConfigValues, EndpointsAreRejectedAsTheCollectorWouldRejectThem) {
  for (const char* bad :
       {"https://169.254.169.254", "http://169.254.169.254/latest", "http://user@169.254.169.254",
        "http://169.254.169.254?x", "http://169.254.169.254#x", "http://169.254.169.254:99999",
        "http://169.254.169.254:0", "http://localhost", "http://[fd00:ec2::254]"}) {
    AgentConfig c;
    EXPECT_FALSE(apply_setting(c, "endpoint", bad).ok()) << bad;
    EXPECT_EQ(c.endpoint, "http://169.254.169.254") << bad;
  }
  for (const char* bad : {"http://[fd00::", "http://169.254.169.254", "http://imds.example",
                          "http://[fd00:ec2::254]:99999", "http://[fd00:ec2::254]/x"}) {
    AgentConfig c;
    EXPECT_FALSE(apply_setting(c, "endpoint-v6", bad).ok()) << bad;
  }
  AgentConfig c;
  EXPECT_TRUE(apply_setting(c, "endpoint", "http://127.0.0.1:8080/").ok());
  EXPECT_EQ(c.endpoint, "http://127.0.0.1:8080/");
  EXPECT_TRUE(apply_setting(c, "endpoint-v6", "http://[::1]:8080").ok());
  EXPECT_EQ(c.endpoint_v6, "http://[::1]:8080");
}

TEST(ConfigValues, DurationsUseTheProbesGrammar) {
  AgentConfig c;
  EXPECT_TRUE(apply_setting(c, "interval", "1.5s").ok());
  EXPECT_EQ(c.interval, 1500ms);
  EXPECT_TRUE(apply_setting(c, "interval", "2m").ok());
  EXPECT_EQ(c.interval, 2min);
  EXPECT_TRUE(apply_setting(c, "v1-interval", "1d").ok());
  EXPECT_EQ(c.v1_interval, std::optional<Millis>(24h));
  EXPECT_TRUE(apply_setting(c, "request-timeout", "500ms").ok());
  EXPECT_EQ(c.request_timeout, 500ms);
  EXPECT_TRUE(apply_setting(c, "min-probe-gap", "0").ok());
  EXPECT_EQ(c.min_probe_gap, 0ms);
}

TEST(ConfigValues, AnOverflowingDurationIsOutOfRangeNotAWrappedValue) {
  AgentConfig c;
  const auto applied = apply_setting(c, "interval", "213503982335d");
  ASSERT_FALSE(applied.ok()) << "accepted as " << c.interval.count() << " ms";
  EXPECT_NE(applied.error().message.find("out of range"), std::string::npos)
      << applied.error().message;
  EXPECT_EQ(c.interval, 60s);
}

TEST(ConfigValues, ADurationOutsideItsKeysRangeNamesTheRange) {
  AgentConfig c;
  const auto applied = apply_setting(c, "interval", "25h");
  ASSERT_FALSE(applied.ok());
  EXPECT_EQ(applied.error().message, "'25h' is out of range (between 1s and 1d)");
}

TEST(ConfigValues, V1IntervalAcceptsNever) {
  AgentConfig c;
  EXPECT_TRUE(apply_setting(c, "v1-interval", "never").ok());
  EXPECT_FALSE(c.v1_interval.has_value());
  EXPECT_TRUE(apply_setting(c, "v1-interval", "1h").ok());
  EXPECT_EQ(c.v1_interval, std::optional<Millis>(std::chrono::hours(1)));
}

TEST(ConfigValues, OutOfRangeValuesAreRejected) {
  AgentConfig c;
  EXPECT_FALSE(apply_setting(c, "interval", "100ms").ok());
  EXPECT_FALSE(apply_setting(c, "jitter", "0.9").ok());
  EXPECT_FALSE(apply_setting(c, "proc-scan", "maybe").ok());
  EXPECT_FALSE(apply_setting(c, "endpoint", "https://169.254.169.254").ok());
  EXPECT_FALSE(apply_setting(c, "endpoint", "http://169.254.169.254/latest").ok());
  EXPECT_FALSE(apply_setting(c, "socket", "relative.sock").ok());
  EXPECT_FALSE(apply_setting(c, "log-level", "chatty").ok());
  EXPECT_EQ(c.interval, std::chrono::seconds(60));  // unchanged by rejected values
}

TEST(CommandLine, EveryKeyIsAlsoAFlagAndUnknownFlagsAreErrors) {
  const std::array argv = {"imds-agent", "--config", "/x.conf",           "--interval",
                           "5s",         "--expect", "imds-support=v2.0", "--check-config"};
  auto r = parse_command_line(static_cast<int>(argv.size()), argv.data());
  ASSERT_TRUE(r) << r.error().message;
  const auto& cl = r.value();
  EXPECT_EQ(cl.sources.file, "/x.conf");
  EXPECT_TRUE(cl.sources.file_required);
  EXPECT_TRUE(cl.check_config);
  EXPECT_EQ(cl.sources.overrides.size(), 2U);
  for (const auto& k : config_keys()) {
    std::string flag = std::string("--") + k.key;
    const std::array<const char*, 3> one = {"imds-agent", flag.c_str(), "x"};
    EXPECT_TRUE(parse_command_line(static_cast<int>(one.size()), one.data()).ok()) << flag;
  }
  const std::array bad = {"imds-agent", "--intervall", "5s"};
  EXPECT_FALSE(parse_command_line(static_cast<int>(bad.size()), bad.data()).ok());
}

TEST(CommandLine, TheDefaultConfigFileAndTheManPageDocumentEveryKey) {
  // The man page and the default config must list every key: imds-agent.conf documents
  // each as a commented "#key = default" line ("#key =" when the default is empty).
  std::ifstream in(IMDS_AGENT_DEFAULT_CONF);
  ASSERT_TRUE(in);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const auto& k : config_keys()) {
    const std::string line = std::string("\n#") + k.key + " =";
    const std::size_t at = text.find(line);
    ASSERT_NE(at, std::string::npos) << k.key;
    EXPECT_TRUE(text.compare(at + line.size(), 1, " ") == 0 ||
                text.compare(at + line.size(), 1, "\n") == 0)
        << k.key;
  }
  std::ifstream man(IMDS_AGENT_CONF_MAN);
  ASSERT_TRUE(man);
  std::string mtext((std::istreambuf_iterator<char>(man)), std::istreambuf_iterator<char>());
  for (const auto& k : config_keys()) {
    EXPECT_NE(mtext.find(std::string("*") + k.key + " =*"), std::string::npos) << k.key;
  }
}

}  // namespace
}  // namespace imds::agent
