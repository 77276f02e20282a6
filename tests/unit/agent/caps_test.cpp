// Per-thread capability limits (agent/caps.cpp): what one thread drops, the others keep;
// what a thread keeps, the threads it creates inherit; the sets read back match the kernel's.
#include "caps.hpp"

#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>

namespace imds::agent {
namespace {

constexpr CapabilityMask bit(int cap) { return CapabilityMask{1} << static_cast<unsigned>(cap); }

// /proc/thread-self/status of the calling thread: CapInh, CapPrm, CapEff, CapAmb.
std::map<std::string, CapabilityMask> kernel_view() {
  std::ifstream in("/proc/thread-self/status");
  std::map<std::string, CapabilityMask> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Cap", 0) != 0) continue;
    std::istringstream fields(line);
    std::string key;
    std::string hex;
    fields >> key >> hex;
    out[key.substr(0, key.size() - 1)] = std::stoull(hex, nullptr, 16);
  }
  return out;
}

CapabilityMask held() {
  auto caps = thread_capabilities();
  EXPECT_TRUE(caps.ok());
  return caps ? caps->permitted : 0;
}

TEST(ThreadCapabilities, ReadBackAsTheKernelReportsThem) {
  auto caps = thread_capabilities();
  ASSERT_TRUE(caps.ok()) << caps.error().message;
  auto kernel = kernel_view();
  EXPECT_EQ(caps->effective, kernel["CapEff"]);
  EXPECT_EQ(caps->permitted, kernel["CapPrm"]);
  EXPECT_EQ(caps->inheritable, kernel["CapInh"]);
}

TEST(ThreadCapabilities, DroppingAllOnOneThreadLeavesTheOthersTheirs) {
  const CapabilityMask before = held();
  if ((before & probe_capabilities()) == 0) GTEST_SKIP() << "the test runs without capabilities";
  std::map<std::string, CapabilityMask> dropped;
  std::string error;
  std::thread([&] {
    if (auto s = limit_thread_capabilities(0); !s) error = s.error().message;
    dropped = kernel_view();
  }).join();
  EXPECT_EQ(error, "");
  EXPECT_EQ(dropped["CapEff"], 0U);
  EXPECT_EQ(dropped["CapPrm"], 0U);
  EXPECT_EQ(dropped["CapInh"], 0U);
  EXPECT_EQ(dropped["CapAmb"], 0U);
  EXPECT_EQ(held(), before) << "the drop reached another thread";
}

TEST(ThreadCapabilities, AThreadKeepsOnlyTheProbeSetAndPassesItToItsThreads) {
  const CapabilityMask before = held();
  if ((before & probe_capabilities()) != probe_capabilities()) {
    GTEST_SKIP() << "the test runs without the probe's capabilities";
  }
  CapabilityMask kept = 0;
  CapabilityMask child = 0;
  std::thread([&] {
    ASSERT_TRUE(limit_thread_capabilities(probe_capabilities()).ok());
    kept = kernel_view()["CapEff"];
    std::thread([&] { child = kernel_view()["CapEff"]; }).join();
  }).join();
  EXPECT_EQ(kept, probe_capabilities());
  EXPECT_EQ(child, probe_capabilities());
  EXPECT_EQ(held(), before);
}

// Under systemd, AmbientCapabilities= starts the daemon with the probe's set inheritable
// and ambient: a thread that keeps the set must still pass none of it to what it runs.
TEST(ThreadCapabilities, KeepingTheProbeSetPassesNothingOnThroughExec) {
  if ((held() & probe_capabilities()) != probe_capabilities()) {
    GTEST_SKIP() << "the test runs without the probe's capabilities";
  }
  std::map<std::string, CapabilityMask> raised;
  std::map<std::string, CapabilityMask> after;
  std::thread([&] {
    // As systemd leaves it: the probe's set inheritable, one of it ambient.
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    std::array<__user_cap_data_struct, 2> data{};
    ASSERT_EQ(::syscall(SYS_capget, &header, data.data()), 0);
    data[0].inheritable = static_cast<__u32>(probe_capabilities() & 0xffffffffU);
    ASSERT_EQ(::syscall(SYS_capset, &header, data.data()), 0);
    ASSERT_EQ(::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_RAW, 0, 0), 0);
    raised = kernel_view();
    ASSERT_TRUE(limit_thread_capabilities(probe_capabilities()).ok());
    after = kernel_view();
  }).join();
  EXPECT_EQ(raised["CapAmb"], bit(CAP_NET_RAW));
  EXPECT_EQ(after["CapEff"], probe_capabilities());
  EXPECT_EQ(after["CapInh"], 0U);
  EXPECT_EQ(after["CapAmb"], 0U);
}

TEST(ThreadCapabilities, LimitingNeverRaisesWhatTheThreadLacks) {
  CapabilityMask after_none = 1;
  CapabilityMask after_all = 1;
  std::thread([&] {
    ASSERT_TRUE(limit_thread_capabilities(0).ok());
    after_none = kernel_view()["CapPrm"];
    // Asking to keep everything of nothing is no error and gives nothing back.
    ASSERT_TRUE(limit_thread_capabilities(~CapabilityMask{0}).ok());
    after_all = kernel_view()["CapPrm"];
  }).join();
  EXPECT_EQ(after_none, 0U);
  EXPECT_EQ(after_all, 0U);
}

TEST(CapabilityNames, NameTheProbeSetInNumberOrder) {
  EXPECT_EQ(capability_names(0), "none");
  EXPECT_EQ(capability_names(probe_capabilities()), "CAP_NET_RAW CAP_SYS_PTRACE CAP_SYS_ADMIN");
  EXPECT_EQ(capability_names(bit(CAP_CHOWN) | bit(40)), "CAP_CHOWN cap_40");
}

}  // namespace
}  // namespace imds::agent
