// Targets without privileges: container labels from /proc/PID/cgroup text, namespace file
// checks, and --container lookups against a stand-in /proc tree.
#include "targets.hpp"

#include "netns.hpp"
#include "words.hpp"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

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

TEST_F(FakeProc, DockersNameComesFromItsStateAndBadStateGivesNone) {
  const fs::path docker = root_ / "docker";
  const auto config = [&](const std::string& id, const std::string& text) {
    fs::create_directories(docker / "containers" / id);
    std::ofstream(docker / "containers" / id / "config.v2.json") << text;
  };
  config(kId, R"({"ID":")" + kId + R"(","Name":"/shop-api","State":{"Running":true}})");
  EXPECT_EQ(docker_container_name(docker.string(), kId), "shop-api");
  EXPECT_FALSE(docker_container_name(docker.string(), kId.substr(0, 12))) << "full ids only";
  EXPECT_FALSE(docker_container_name(docker.string(), "../../../../etc/passwd"));
  EXPECT_FALSE(docker_container_name((root_ / "nowhere").string(), kId));
  config(kOtherId, R"({"Name":"/bad name[31m"})");
  EXPECT_FALSE(docker_container_name(docker.string(), kOtherId)) << "not a Docker name";
  config(kOtherId, "{not json");
  EXPECT_FALSE(docker_container_name(docker.string(), kOtherId));
  config(kOtherId, R"({"Name":"/)" + std::string(2 << 20, 'a') + R"("})");
  EXPECT_FALSE(docker_container_name(docker.string(), kOtherId)) << "over 1 MiB";
  // A rename rewrites the file: the new name is read (the cache follows the file).
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  config(kId, R"({"Name":"/shop-api-v2"})");
  EXPECT_EQ(docker_container_name(docker.string(), kId), "shop-api-v2");
  // A FIFO planted there does not block.
  fs::remove(docker / "containers" / kOtherId / "config.v2.json");
  ASSERT_EQ(::mkfifo((docker / "containers" / kOtherId / "config.v2.json").c_str(), 0600), 0);
  EXPECT_FALSE(docker_container_name(docker.string(), kOtherId));
  // --container and --pid targets carry the name.
  add_process(20, "0::/system.slice/docker-" + kId + ".scope\n");
  const auto t = target_for_container(kId.substr(0, 8), root_.string(), docker.string());
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_EQ(t.value().container_name, "shop-api-v2");
  EXPECT_EQ(t.value().name, kId.substr(0, 12)) << "the id stays the label";
}

TEST_F(FakeProc, DiscoveryNeverReturnsTheHostNamespace) {
  add_process(20, "0::/system.slice/docker-" + kId + ".scope\n");
  DiscoveryConfig config;
  config.netns_dirs = {(root_ / "no-such-dir").string()};
  config.proc_root = root_.string();
  // Every fake process shares this test's namespace, which is the host's here.
  EXPECT_TRUE(discover_containers(config).targets.empty());
}

// Real network namespaces, each held by a child process of this test (root only): a netns
// directory of links to their /proc/PID/ns/net, as `ip netns` or Docker would name them.
class RealNamespaces : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "creating network namespaces needs root";
    std::string tmpl = "/tmp/imds-discovery-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    // An empty /proc and /run: the machine's own containers and runtimes stay out of counts.
    nothing_ = dir_.string() + "-nothing";
    fs::create_directories(nothing_);
  }
  // Discovery of dir_ alone, with the /proc scan off.
  [[nodiscard]] DiscoveryConfig hermetic() const {
    DiscoveryConfig config;
    config.netns_dirs = {dir_.string()};
    config.proc_scan = false;
    config.proc_root = nothing_.string();
    config.run_root = nothing_.string();
    return config;
  }
  void TearDown() override {
    for (const pid_t pid : children_) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    if (!dir_.empty()) fs::remove_all(dir_);
    if (!nothing_.empty()) fs::remove_all(nothing_);
  }

  // A child in a new network namespace, linked as dir_/name.
  void add_namespace(const std::string& name) {
    std::array<int, 2> ready{-1, -1};
    ASSERT_EQ(::pipe(ready.data()), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      const char ok = ::unshare(CLONE_NEWNET) == 0 ? 'y' : 'n';
      (void)!::write(ready[1], &ok, 1);
      ::pause();
      ::_exit(0);
    }
    children_.push_back(pid);
    ::close(ready[1]);
    char ok = 0;
    ASSERT_EQ(::read(ready[0], &ok, 1), 1);
    ::close(ready[0]);
    ASSERT_EQ(ok, 'y') << "unshare(CLONE_NEWNET) failed in the child";
    fs::create_symlink("/proc/" + std::to_string(pid) + "/ns/net", dir_ / name);
  }

  [[nodiscard]] Discovery discover(std::size_t max_targets, std::size_t start) const {
    DiscoveryConfig config = hermetic();
    config.max_targets = max_targets;
    config.start = start;
    return discover_containers(config);
  }

  fs::path dir_;
  fs::path nothing_;
  std::vector<pid_t> children_;
};

TEST_F(RealNamespaces, MoreNamespacesThanKeptAreCountedNotedAndReachedByMovingTheStart) {
  for (const char* name : {"a", "b", "c", "d", "e"}) add_namespace(name);
  const Discovery all = discover(16, 0);
  ASSERT_EQ(all.found, 5U);
  EXPECT_EQ(all.not_kept(), 0U);
  EXPECT_TRUE(all.notes.empty());

  std::set<std::string> seen;
  std::vector<std::vector<std::string>> windows;
  for (std::size_t start = 0; start < 6; start += 2) {
    const Discovery d = discover(2, start);
    EXPECT_EQ(d.found, 5U);
    ASSERT_EQ(d.targets.size(), 2U);
    EXPECT_EQ(d.not_kept(), 3U);
    ASSERT_FALSE(d.notes.empty());
    EXPECT_NE(d.notes.back().find("found 5 network namespaces, kept 2"), std::string::npos)
        << d.notes.back();
    std::vector<std::string> names;
    for (const auto& t : d.targets) {
      names.push_back(t.name);
      seen.insert(t.name);
    }
    windows.push_back(names);
  }
  // In name order from the start, wrapping around: a,b then c,d then e,a.
  EXPECT_EQ(windows[0], (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(windows[1], (std::vector<std::string>{"c", "d"}));
  EXPECT_EQ(windows[2], (std::vector<std::string>{"e", "a"}));
  EXPECT_EQ(seen.size(), 5U) << "every namespace is in some window";
}

TEST_F(RealNamespaces, TheSameNamespaceUnderTwoNamesIsOneTarget) {
  add_namespace("x");
  fs::create_symlink(fs::read_symlink(dir_ / "x"), dir_ / "y");
  const Discovery d = discover(16, 0);
  EXPECT_EQ(d.found, 1U);
  ASSERT_EQ(d.targets.size(), 1U);
  EXPECT_EQ(d.targets[0].name, "x");
}

TEST_F(RealNamespaces, EveryEntryThatIsNotAUsableNamespaceIsCountedByItsProblem) {
  add_namespace("a");
  add_namespace("b");
  std::ofstream(dir_ / "ghost").close();  // empty, beside mounted ones: stale (no Docker here)
  fs::create_symlink("/nonexistent/ns/net", dir_ / "gone");  // a dangling link
  ASSERT_EQ(::mkfifo((dir_ / "fifo").c_str(), 0600), 0);     // must not block the open
  std::ofstream(dir_ / "text") << "not a namespace\n";
  fs::create_directories(dir_ / "sub");
  fs::create_symlink("/proc/self/ns/uts", dir_ / "uts");    // a namespace of another type
  fs::create_symlink("/proc/self/ns/net", dir_ / "self");   // the host's own: usable, excluded
  const Discovery d = discover(16, 0);
  ASSERT_EQ(d.targets.size(), 2U);
  ASSERT_EQ(d.look.dirs.size(), 1U);
  const NetnsDirLook& look = d.look.dirs[0];
  EXPECT_EQ(look.state, NetnsDirLook::State::read);
  EXPECT_EQ(look.entries, 9U);
  EXPECT_EQ(look.usable, 3U);
  const auto count = [&](EntryProblem p) { return look.unusable.at(static_cast<std::size_t>(p)); };
  EXPECT_EQ(count(EntryProblem::stale), 1U);
  EXPECT_EQ(count(EntryProblem::not_mounted_here), 0U);
  EXPECT_EQ(count(EntryProblem::dangling_link), 1U);
  EXPECT_EQ(count(EntryProblem::not_a_namespace_file), 3U);  // fifo, text, sub
  EXPECT_EQ(count(EntryProblem::other_namespace_type), 1U);
  EXPECT_EQ(look.unusable_total(), 6U);
  EXPECT_EQ(look.examples.size(), kMaxLookExamples);
  EXPECT_FALSE(d.look.proc_scanned);
}

// An empty file is a mount this mount namespace lacks, or a removed container's file that
// the runtime has not unlinked yet: which one, from the evidence there is.
TEST_F(RealNamespaces, AnEmptyFileIsStaleOnlyWithEvidence) {
  const auto problems = [&](const std::string& docker_root) {
    DiscoveryConfig config = hermetic();
    config.docker_root = docker_root;
    const NetnsDirLook look = discover_containers(config).look.dirs.at(0);
    return std::pair{look.unusable.at(static_cast<std::size_t>(EntryProblem::not_mounted_here)),
                     look.unusable.at(static_cast<std::size_t>(EntryProblem::stale))};
  };
  const std::string no_docker = (dir_ / "no-docker").string();
  std::ofstream(dir_ / "4f2b8c1d9e0a").close();
  // Nothing mounted beside it, no Docker state: it may hide a container.
  EXPECT_EQ(problems(no_docker), std::pair(std::size_t{1}, std::size_t{0}));
  // A mounted namespace beside it: this mount namespace sees the runtime's mounts.
  add_namespace("a");
  EXPECT_EQ(problems(no_docker), std::pair(std::size_t{0}, std::size_t{1}));
  // Docker's state names this directory: a running container's SandboxKey is hidden, whatever
  // else is mounted; a file no running container claims is stale, even alone.
  const fs::path docker = dir_ / "docker";
  const auto container = [&](const std::string& id, const std::string& key, bool running) {
    fs::create_directories(docker / "containers" / id);
    std::ofstream(docker / "containers" / id / "config.v2.json")
        << R"({"Name":"/web","State":{"Running":)" << (running ? "true" : "false")
        << R"(},"NetworkSettings":{"SandboxKey":")" << key << R"("}})";
  };
  const std::string id(64, 'c');
  container(id, dir_.string() + "/4f2b8c1d9e0a", true);
  container(std::string(64, 'd'), dir_.string() + "/0000aaaa0000", true);
  EXPECT_EQ(problems(docker.string()), std::pair(std::size_t{1}, std::size_t{0}));
  container(id, dir_.string() + "/4f2b8c1d9e0a", false);  // stopped: its file is stale
  fs::remove(dir_ / "a");
  EXPECT_EQ(problems(docker.string()), std::pair(std::size_t{0}, std::size_t{1}));
  const auto sandboxes = docker_sandboxes(docker.string());
  ASSERT_TRUE(sandboxes);
  EXPECT_EQ(sandboxes->files, (std::set<std::string>{"0000aaaa0000"}));
  EXPECT_FALSE(docker_sandboxes(no_docker));
}

TEST_F(RealNamespaces, AnAbsentDirectoryIsSaidAndAnEmptyOneIsNone) {
  DiscoveryConfig config = hermetic();
  config.netns_dirs = {(dir_ / "missing").string(), dir_.string()};
  const Discovery d = discover_containers(config);
  ASSERT_EQ(d.look.dirs.size(), 2U);
  EXPECT_EQ(d.look.dirs[0].state, NetnsDirLook::State::absent);
  EXPECT_EQ(d.look.dirs[1].state, NetnsDirLook::State::read);
  EXPECT_EQ(d.look.dirs[1].entries, 0U);
  EXPECT_EQ(describe_discovery(d.look),
            (dir_ / "missing").string() + ": absent; " + dir_.string() + ": none; /proc: skipped");
}

// With the /proc scan off, container processes in namespaces that no directory lists are
// counted (their containers were not probed); those in listed namespaces only label them.
TEST_F(RealNamespaces, ContainerProcessesInUnlistedNamespacesAreCountedWithTheScanOff) {
  add_namespace("listed");
  add_namespace("hidden");
  const fs::path proc = dir_ / "proc";
  const auto fake_process = [&](int pid, const fs::path& netns, const std::string& cgroup) {
    fs::create_directories(proc / std::to_string(pid) / "ns");
    fs::create_symlink(netns, proc / std::to_string(pid) / "ns" / "net");
    std::ofstream(proc / std::to_string(pid) / "cgroup") << cgroup;
  };
  const std::string docker = "0::/system.slice/docker-" + kId + ".scope\n";
  fake_process(10, fs::read_symlink(dir_ / "listed"), docker);
  fake_process(20, fs::read_symlink(dir_ / "hidden"), "0::/system.slice/docker-" + kOtherId + ".scope\n");
  fake_process(21, fs::read_symlink(dir_ / "hidden"), "0::/system.slice/docker-" + kOtherId + ".scope\n");
  fake_process(30, fs::read_symlink(dir_ / "hidden"), "0::/user.slice\n");  // not a container
  fs::remove(dir_ / "hidden");
  DiscoveryConfig config;
  config.netns_dirs = {dir_.string()};
  config.proc_scan = false;
  config.proc_root = proc.string();
  const Discovery d = discover_containers(config);
  ASSERT_EQ(d.targets.size(), 1U);
  EXPECT_EQ(d.targets[0].container_id, kId) << "the listed one is labelled";
  EXPECT_EQ(d.look.unlisted_container_processes, 2U);
  EXPECT_EQ(d.look.unlisted_container_namespaces, 1U);
  // With the scan on, the hidden one is found instead, and nothing is unlisted.
  config.proc_scan = true;
  const Discovery scanned = discover_containers(config);
  EXPECT_EQ(scanned.targets.size(), 2U);
  EXPECT_EQ(scanned.look.proc_namespaces, 1U);
  EXPECT_EQ(scanned.look.unlisted_container_namespaces, 0U);
}

// Kubernetes pods by "namespace/pod", from the OCI bundle annotations containerd's CRI
// plugin and CRI-O keep under /run (real-shaped paths and keys; the cgroup paths are the
// systemd driver's of each).
TEST_F(RealNamespaces, KubernetesPodsAreNamedFromTheRuntimesBundleAnnotations) {
  add_namespace("cni-1a2b3c4d");
  add_namespace("cni-5e6f7a8b");
  const fs::path proc = nothing_ / "proc";
  const fs::path run = nothing_ / "root";
  const auto fake_process = [&](int pid, const fs::path& netns, const std::string& cgroup) {
    fs::create_directories(proc / std::to_string(pid) / "ns");
    fs::create_symlink(netns, proc / std::to_string(pid) / "ns" / "net");
    std::ofstream(proc / std::to_string(pid) / "cgroup") << cgroup;
  };
  const auto bundle = [&](const fs::path& dir, const std::string& annotations) {
    fs::create_directories(dir);
    std::ofstream(dir / "config.json")
        << R"({"ociVersion":"1.0.2-dev","process":{"args":["/pause"]},"annotations":{)"
        << annotations << "}}";
  };
  fake_process(10, fs::read_symlink(dir_ / "cni-1a2b3c4d"),
               "0::/kubepods.slice/kubepods-burstable.slice/"
               "kubepods-burstable-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/cri-containerd-" +
                   kId + ".scope\n");
  bundle(run / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / kId,
         R"("io.kubernetes.cri.container-type":"sandbox",)"
         R"("io.kubernetes.cri.sandbox-name":"coredns-5d78c9869d-x7bqp",)"
         R"("io.kubernetes.cri.sandbox-namespace":"kube-system")");
  fake_process(20, fs::read_symlink(dir_ / "cni-5e6f7a8b"),
               "0::/kubepods.slice/kubepods-besteffort.slice/"
               "kubepods-besteffort-pod5e6f7a8b_1a2b_3c4d_5e6f_7a8b9c0d1e2f.slice/crio-" +
                   kOtherId + ".scope\n");
  bundle(run / "run/containers/storage/overlay-containers" / kOtherId / "userdata",
         R"("io.kubernetes.pod.name":"web-0","io.kubernetes.pod.namespace":"shop")");
  DiscoveryConfig config = hermetic();
  config.proc_root = proc.string();
  config.run_root = run.string();
  std::map<std::string, std::optional<std::string>> names;
  for (const auto& t : discover_containers(config).targets) names[t.name] = t.container_name;
  EXPECT_EQ(names, (std::map<std::string, std::optional<std::string>>{
                       {kId.substr(0, 12), "kube-system/coredns-5d78c9869d-x7bqp"},
                       {kOtherId.substr(0, 12), "shop/web-0"}}));
  // Not Kubernetes names (upper case, an escape, a slash): no name at all.
  bundle(run / "run/containers/storage/overlay-containers" / kOtherId / "userdata",
         R"("io.kubernetes.pod.name":"Web\u001b[31m","io.kubernetes.pod.namespace":"a/b")");
  EXPECT_FALSE(kubernetes_pod_name(run.string(), kOtherId));
  EXPECT_FALSE(kubernetes_pod_name(run.string(), "../../etc")) << "full ids only";
  EXPECT_FALSE(kubernetes_pod_name((nothing_ / "none").string(), kId));
}

TEST_F(RealNamespaces, ARuntimeIsSeenByItsApiSocket) {
  fs::create_directories(dir_ / "run");
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = (dir_ / "run" / "docker.sock").string();
  ASSERT_LT(path.size(), sizeof addr.sun_path);
  std::copy(path.begin(), path.end(), addr.sun_path);
  ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  std::ofstream(dir_ / "run" / "crio").close();  // not a socket: not a runtime
  DiscoveryConfig config;
  config.netns_dirs = {};
  config.proc_scan = false;
  config.run_root = dir_.string();
  const Discovery d = discover_containers(config);
  ::close(fd);
  EXPECT_EQ(d.look.runtimes, (std::vector<std::string>{"docker"}));
}

}  // namespace
}  // namespace imds
