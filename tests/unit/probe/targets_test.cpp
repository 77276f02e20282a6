// Targets without privileges: container labels from /proc/PID/cgroup text, namespace file
// checks, and --container lookups against a stand-in /proc tree.
#include "targets.hpp"

#include "netns.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace imds {
namespace {

namespace fs = std::filesystem;

const std::string kId = "3f4e2a1b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b";
const std::string kOtherId = "3f4e99995c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b";

TEST(ParseCgroup, DockerScopeUnderCgroupV2NamesTheContainer) {
  const auto label = parse_cgroup("0::/system.slice/docker-" + kId + ".scope\n");
  ASSERT_TRUE(label);
  EXPECT_EQ(label->container_id, kId);
  EXPECT_EQ(label->runtime, "docker");
}

TEST(ParseCgroup, DockerPathUnderCgroupV1NamesTheContainer) {
  const auto label = parse_cgroup("12:pids:/docker/" + kId + "\n11:memory:/docker/" + kId + "\n");
  ASSERT_TRUE(label);
  EXPECT_EQ(label->container_id, kId);
  EXPECT_EQ(label->runtime, "docker");
}

TEST(ParseCgroup, KubernetesSystemdDriverGivesContainerAndPod) {
  const auto label = parse_cgroup(
      "0::/kubepods.slice/kubepods-burstable.slice/"
      "kubepods-burstable-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/cri-containerd-" +
      kId + ".scope\n");
  ASSERT_TRUE(label);
  EXPECT_EQ(label->container_id, kId);
  EXPECT_EQ(label->runtime, "kubepods");
  EXPECT_EQ(label->pod_uid, "1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d");
}

TEST(ParseCgroup, KubernetesCgroupfsDriverGivesContainerAndPod) {
  const auto label = parse_cgroup(
      "4:cpu:/kubepods/besteffort/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d/" + kId + "\n");
  ASSERT_TRUE(label);
  EXPECT_EQ(label->container_id, kId);
  EXPECT_EQ(label->runtime, "kubepods");
  EXPECT_EQ(label->pod_uid, "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d");
}

TEST(ParseCgroup, PodmanAndCrioScopesAreRecognised) {
  auto podman = parse_cgroup("0::/machine.slice/libpod-" + kId + ".scope/container\n");
  ASSERT_TRUE(podman);
  EXPECT_EQ(podman->runtime, "podman");
  auto crio = parse_cgroup("0::/system.slice/crio-" + kId + ".scope\n");
  ASSERT_TRUE(crio);
  EXPECT_EQ(crio->runtime, "cri-o");
}

TEST(ParseCgroup, OrdinaryProcessesHaveNoContainer) {
  EXPECT_FALSE(parse_cgroup("0::/user.slice/user-0.slice/session-3.scope\n"));
  EXPECT_FALSE(parse_cgroup("0::/system.slice/docker.service\n"));
  EXPECT_FALSE(parse_cgroup(""));
}

TEST(ParseCgroup, IdsThatAreNotHexOrTooLongAreRejected) {
  EXPECT_FALSE(parse_cgroup("0::/system.slice/docker-../../etc/passwd.scope\n"));
  EXPECT_FALSE(parse_cgroup("0::/system.slice/docker-" + kId + "0.scope\n"));  // 65 digits
  EXPECT_FALSE(parse_cgroup("0::/system.slice/docker-3F4E2A1B5C6D.scope\n"));  // uppercase
  EXPECT_FALSE(parse_cgroup(std::string(100000, 'a')));
}

TEST(OpenNamespace, AFifoPlantedAsANamespaceIsRefusedWithoutBlocking) {
  const std::string fifo = ::testing::TempDir() + "imds-fifo-" + std::to_string(::getpid());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const NetnsSocketFactory factory;
  const auto opened = factory.open_namespace(fifo);  // no writer: a blocking open never returns
  ::unlink(fifo.c_str());
  ASSERT_FALSE(opened);
  EXPECT_NE(opened.error().message.find("is not a network namespace"), std::string::npos)
      << opened.error().message;
}

TEST(OpenNamespace, ANamespaceThatIsNotTheOneDiscoveredIsNotEntered) {
  const auto inode = netns_inode("/proc/self/ns/net");
  ASSERT_TRUE(inode) << inode.error().message;
  const NetnsSocketFactory factory;
  // The same path, re-created in between (here: another inode expected).
  const auto opened = factory.open_namespace("/proc/self/ns/net", inode.value() + 1);
  ASSERT_FALSE(opened);
  EXPECT_NE(opened.error().message.find("namespace changed"), std::string::npos)
      << opened.error().message;
}

TEST(NetnsInode, OwnNetworkNamespaceIsAccepted) {
  const auto ino = netns_inode("/proc/self/ns/net");
  ASSERT_TRUE(ino) << ino.error().message;
  struct stat st {};
  ASSERT_EQ(::stat("/proc/self/ns/net", &st), 0);
  EXPECT_EQ(ino.value(), static_cast<std::uint64_t>(st.st_ino));
}

TEST(NetnsInode, OtherFilesAndNamespaceTypesAreRefusedWithAReason) {
  const auto file = netns_inode("/proc/self/status");
  ASSERT_FALSE(file);
  EXPECT_NE(file.error().message.find("not a namespace file"), std::string::npos)
      << file.error().message;
  const auto uts = netns_inode("/proc/self/ns/uts");
  ASSERT_FALSE(uts);
  EXPECT_NE(uts.error().message.find("not a network namespace"), std::string::npos)
      << uts.error().message;
  const auto missing = netns_inode("/nonexistent/netns");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("/nonexistent/netns"), std::string::npos);
}

// A stand-in /proc: pid directories with a cgroup file and ns/net pointing at our own
// namespace (the only one readable without privileges).
class FakeProc : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/imds-targets-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { fs::remove_all(root_); }

  void add_process(int pid, const std::string& cgroup) {
    const fs::path dir = root_ / std::to_string(pid);
    fs::create_directories(dir / "ns");
    std::ofstream(dir / "cgroup") << cgroup;
    fs::create_symlink("/proc/self/ns/net", dir / "ns" / "net");
  }

  fs::path root_;
};

TEST_F(FakeProc, ContainerIdPrefixFindsTheContainersNamespace) {
  add_process(10, "0::/user.slice\n");
  add_process(20, "0::/system.slice/docker-" + kId + ".scope\n");
  const auto t = target_for_container("3F4E2A1B", root_.string());
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_EQ(t.value().container_id, kId);
  EXPECT_EQ(t.value().runtime, "docker");
  EXPECT_EQ(t.value().name, kId.substr(0, 12));
  EXPECT_EQ(t.value().source, TargetSource::container);
  EXPECT_EQ(t.value().path, (root_ / "20" / "ns" / "net").string());
}

TEST_F(FakeProc, AnAmbiguousPrefixIsAnErrorNamingBothContainers) {
  add_process(20, "0::/system.slice/docker-" + kId + ".scope\n");
  add_process(30, "0::/system.slice/docker-" + kOtherId + ".scope\n");
  const auto t = target_for_container("3f4e", root_.string());
  ASSERT_FALSE(t);
  EXPECT_NE(t.error().message.find("ambiguous"), std::string::npos) << t.error().message;
}

TEST_F(FakeProc, AMissingContainerOrANameSaysWhatToPassInstead) {
  add_process(20, "0::/system.slice/docker-" + kId + ".scope\n");
  const auto missing = target_for_container("abcdef12", root_.string());
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("no running container"), std::string::npos)
      << missing.error().message;
  const auto name = target_for_container("my-web-app", root_.string());
  ASSERT_FALSE(name);
  EXPECT_NE(name.error().message.find("container names are not visible"), std::string::npos)
      << name.error().message;
}

TEST_F(FakeProc, PidTargetsCarryTheContainerLabel) {
  add_process(20, "0::/system.slice/docker-" + kId + ".scope\n");
  const auto t = target_for_pid(20, root_.string());
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_EQ(t.value().container_id, kId);
  const auto gone = target_for_pid(99, root_.string());
  ASSERT_FALSE(gone);
  EXPECT_NE(gone.error().message.find("no process with pid 99"), std::string::npos);
}

TEST_F(FakeProc, DiscoveryNeverReturnsTheHostNamespace) {
  add_process(20, "0::/system.slice/docker-" + kId + ".scope\n");
  DiscoveryConfig config;
  config.netns_dirs = {(root_ / "no-such-dir").string()};
  config.proc_root = root_.string();
  // Every fake process shares this test's namespace, which is the host's here.
  EXPECT_TRUE(discover_containers(config).targets.empty());
}

}  // namespace
}  // namespace imds
