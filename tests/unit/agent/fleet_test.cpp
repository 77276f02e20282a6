// The fleet outputs: the SSM custom inventory document against inventory's limits, and the
// atomic file write that node_exporter's textfile collector and SSM Agent read from.
#include "fleet.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "fixtures.hpp"

namespace imds::agent {
namespace {

using namespace testing;
namespace fs = std::filesystem;

Snapshot snapshot_with(const std::vector<FakeContainer>& containers) {
  auto d = diagnosis(HttpTokens::required, exact(1), containers);
  return observe(Snapshot{}, d, nullptr, Expectations{}, std::chrono::system_clock::now());
}

HostPosture host_of(const Diagnosis& d) {
  return {d.inference.targets.at(0), "i-0123456789abcdef0"};
}

TEST(SsmInventory, OneEntryPerNamespaceHostFirstEveryValueAString) {
  auto d = diagnosis(HttpTokens::required, exact(1),
                     {{"web", 11, Tristate::no}, {"db", 12, Tristate::yes, 0}});
  d.targets[1].target.container_name = "web";
  const Snapshot s =
      observe(Snapshot{}, d, nullptr, Expectations{}, std::chrono::system_clock::now());
  const auto doc = ssm_inventory(s, host_of(d), "0.1.0", std::chrono::system_clock::now());
  ASSERT_TRUE(check_ssm_inventory(doc)) << check_ssm_inventory(doc).error().message;
  EXPECT_EQ(doc["TypeName"], "Custom:ImdsPosture");
  EXPECT_EQ(doc["SchemaVersion"], "1.0");
  EXPECT_TRUE(std::regex_match(doc["CaptureTime"].get<std::string>(),
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")))
      << doc["CaptureTime"];
  const auto& c = doc["Content"];
  ASSERT_EQ(c.size(), 3U);
  EXPECT_EQ(c[0]["Namespace"], "host");
  EXPECT_EQ(c[0]["Imdsv2"], "yes");
  EXPECT_EQ(c[0]["NamespacesNotListed"], "0");
  std::map<std::string, nlohmann::json> by_ns;
  for (const auto& e : c) by_ns[e["Namespace"].get<std::string>()] = e;
  const auto& web = by_ns.at("/run/netns/web");
  EXPECT_EQ(web["ContainerName"], "web");
  EXPECT_EQ(web["Imdsv2"], "no");
  EXPECT_EQ(web["Hops"], "1");
  EXPECT_EQ(web["Verdict"], "no token (PUT response dropped)");
  EXPECT_EQ(by_ns.at("/run/netns/db")["Imdsv2"], "yes");
  for (const auto& e : c) {
    EXPECT_EQ(e["HttpTokens"], "required");
    EXPECT_EQ(e["HopLimit"], "1");
    EXPECT_EQ(e["AgentVersion"], "0.1.0");
    for (const auto& [k, v] : e.items()) EXPECT_TRUE(v.is_string()) << k;
  }
}

TEST(SsmInventory, ManyLongEntriesStayWithinTheLimitsAndTheRestIsCounted) {
  std::vector<FakeContainer> many;
  many.reserve(2500);
  for (int i = 0; i < 2500; ++i) {
    many.push_back({"c" + std::to_string(i), 100U + static_cast<unsigned>(i)});
  }
  auto d = diagnosis(HttpTokens::optional, exact(2), many);
  for (auto& v : d.inference.targets) v.v4.summary = std::string(9000, 'x') + "\xff";
  const Snapshot s =
      observe(Snapshot{}, d, nullptr, Expectations{}, std::chrono::system_clock::now());
  const auto doc = ssm_inventory(s, host_of(d), "0.1.0", std::chrono::system_clock::now());
  ASSERT_TRUE(check_ssm_inventory(doc)) << check_ssm_inventory(doc).error().message;
  EXPECT_LE(doc.dump().size(), InventoryLimits::our_bytes);
  const std::size_t listed = doc["Content"].size() - 1;
  EXPECT_GT(listed, 0U);
  EXPECT_EQ(std::stoul(doc["Content"][0]["NamespacesNotListed"].get<std::string>()), 2500 - listed);
}

TEST(SsmInventory, TheCheckRejectsWhatInventoryRejects) {
  const Snapshot s = snapshot_with({{"a", 1}});
  const auto good = ssm_inventory(s, {}, "0.1.0", std::chrono::system_clock::now());
  ASSERT_TRUE(check_ssm_inventory(good));
  const auto broken = [&](auto&& edit) {
    auto doc = good;
    edit(doc);
    return !check_ssm_inventory(doc).ok();
  };
  EXPECT_TRUE(broken([](auto& d) { d["TypeName"] = "ImdsPosture"; }));
  EXPECT_TRUE(broken([](auto& d) { d["TypeName"] = "Custom:" + std::string(100, 'x'); }));
  EXPECT_TRUE(broken([](auto& d) { d["SchemaVersion"] = "1"; }));
  EXPECT_TRUE(broken([](auto& d) { d["CaptureTime"] = "2026-12-03T21:30:00.123Z"; }));
  EXPECT_TRUE(broken([](auto& d) { d.erase("CaptureTime"); }));
  EXPECT_TRUE(broken([](auto& d) { d["Content"] = nlohmann::json::object(); }));
  EXPECT_TRUE(broken([](auto& d) { d["Content"][0]["Hops"] = 0; }));
  EXPECT_TRUE(broken([](auto& d) { d["Content"][0][std::string(65, 'k')] = "v"; }));
  EXPECT_TRUE(broken([](auto& d) { d["Content"][0]["Verdict"] = std::string(4097, 'v'); }));
  EXPECT_TRUE(broken([](auto& d) {
    for (int i = 0; i < 50; ++i) d["Content"][0]["K" + std::to_string(i)] = "v";
  }));
  EXPECT_TRUE(broken([](auto& d) {
    d["Content"] = nlohmann::json::array();
    for (int i = 0; i < 10001; ++i) d["Content"].push_back(nlohmann::json::object());
  }));
}

TEST(SsmInventory, AutoIsSsmAgentsCustomInventoryDirectory) {
  EXPECT_EQ(ssm_inventory_auto_dir("i-0123456789abcdef0"),
            "/var/lib/amazon/ssm/i-0123456789abcdef0/inventory/custom");
}

class AtomicWrite : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("imds-fleet-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  static std::string read(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  fs::path dir_;
};

TEST_F(AtomicWrite, ReplacesTheFileReadableByAllWhateverTheUmask) {
  const mode_t old = ::umask(077);
  ASSERT_TRUE(write_file_atomically(dir_, "m.prom", "a 1\n"));
  ASSERT_TRUE(write_file_atomically(dir_, "m.prom", "a 2\n"));
  ::umask(old);
  EXPECT_EQ(read(dir_ / "m.prom"), "a 2\n");
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "m.prom").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644U);
  EXPECT_FALSE(fs::exists(dir_ / ".m.prom.tmp")) << "no temporary file is left";
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(AtomicWrite, NeverFollowsALinkAtTheTemporaryName) {
  const fs::path victim = dir_ / "victim";
  std::ofstream(victim) << "keep";
  fs::create_symlink(victim, dir_ / ".m.prom.tmp");
  const Status st = write_file_atomically(dir_, "m.prom", "a 1\n");
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(read(victim), "keep");
  EXPECT_FALSE(fs::exists(dir_ / "m.prom"));
}

TEST_F(AtomicWrite, AMissingDirectoryIsAClearError) {
  const Status st = write_file_atomically((dir_ / "nope").string(), "m.prom", "x");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("nope"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("No such file"), std::string::npos) << st.error().message;
}

TEST_F(AtomicWrite, AReadOnlyDirectorySaysPermissionDenied) {
  if (::geteuid() == 0) {
    // root passes permission checks; a directory on which it may not write is one whose
    // file system is read-only, which a unit test cannot make. The lab test covers this.
    GTEST_SKIP() << "root ignores directory permissions";
  }
  fs::permissions(dir_, fs::perms::owner_read | fs::perms::owner_exec);
  const Status st = write_file_atomically(dir_, "m.prom", "x");
  fs::permissions(dir_, fs::perms::owner_all);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("Permission denied"), std::string::npos);
}

}  // namespace
}  // namespace imds::agent
