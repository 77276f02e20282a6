// The agent's scheduling arithmetic: the discovery slice that rotates over more namespaces
// than one discovery keeps, and what the request-rate bound lets one cycle afford.
#include "schedule.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <set>
#include <vector>

namespace imds::agent {
namespace {

using std::chrono::milliseconds;

NetnsTarget ns(std::uint64_t inode) {
  NetnsTarget t;
  t.name = "ns" + std::to_string(inode);
  t.path = "/run/netns/" + t.name;
  t.inode = inode;
  return t;
}

// What discovery keeps of `all` from `start` (discover_containers' window, wrapping).
std::vector<NetnsTarget> keep(const std::vector<NetnsTarget>& all, std::size_t start,
                              std::size_t max) {
  std::vector<NetnsTarget> kept;
  for (std::size_t i = 0; i < std::min(max, all.size()); ++i) {
    kept.push_back(all[(start + i) % all.size()]);
  }
  return kept;
}

// A cycle that probed `targets` (each sent its requests) or left them not started.
Diagnosis probed(const std::vector<NetnsTarget>& targets, bool sent = true) {
  Diagnosis d;
  TargetObservations host;
  host.target.is_host = true;
  d.targets.push_back(host);
  for (const auto& t : targets) {
    TargetObservations o;
    o.target = t;
    Observation x;
    x.result.outcome = sent ? Outcome::http : Outcome::skipped;
    x.result.skip = sent ? SkipReason::none : SkipReason::not_started;
    o.observations.push_back(x);
    d.targets.push_back(o);
  }
  return d;
}

TEST(Schedule, TokenlessGetsComeEveryV1IntervalAndSaySoWhenForced) {
  AgentConfig c;
  c.v1_interval = std::chrono::hours(6);
  Schedule s(c);
  const auto t = std::chrono::steady_clock::now();
  EXPECT_TRUE(s.take_v1(t));
  EXPECT_FALSE(s.last_v1_forced());
  EXPECT_FALSE(s.take_v1(t + std::chrono::hours(1)));
  s.want_v1_soon();
  EXPECT_TRUE(s.take_v1(t + std::chrono::hours(2)));
  EXPECT_TRUE(s.last_v1_forced()) << "asked for because something changed";
  EXPECT_TRUE(s.take_v1(t + std::chrono::hours(9)));
  EXPECT_FALSE(s.last_v1_forced());
}

TEST(DiscoveryRotation, EverythingThatFitsNeverRotates) {
  DiscoveryRotation rotation;
  std::vector<NetnsTarget> all{ns(1), ns(2), ns(3)};
  rotation.discovered(3, all);
  rotation.probed(probed(all));
  EXPECT_EQ(rotation.start(), 0U);
}

TEST(DiscoveryRotation, TheSliceMovesOnOnlyOnceEachOfItsNamespacesWasProbed) {
  std::vector<NetnsTarget> all;
  for (std::uint64_t i = 1; i <= 10; ++i) all.push_back(ns(i));
  DiscoveryRotation rotation;
  auto slice = keep(all, rotation.start(), 4);
  rotation.discovered(all.size(), slice);
  // A cycle probes two of the four (max-namespaces 2): the slice stays.
  rotation.probed(probed({slice[0], slice[1]}));
  EXPECT_EQ(rotation.start(), 0U);
  rotation.discovered(all.size(), keep(all, rotation.start(), 4));
  // Requests never started (the deadline or the rate bound) do not count as probed.
  rotation.probed(probed({slice[2], slice[3]}, false));
  EXPECT_EQ(rotation.start(), 0U);
  rotation.discovered(all.size(), keep(all, rotation.start(), 4));
  rotation.probed(probed({slice[2], slice[3]}));
  EXPECT_EQ(rotation.start(), 4U);
}

TEST(DiscoveryRotation, ANamespaceThatGoesNoLongerHoldsItsSliceBack) {
  std::vector<NetnsTarget> all{ns(1), ns(2), ns(3), ns(4), ns(5)};
  DiscoveryRotation rotation;
  rotation.discovered(all.size(), keep(all, 0, 2));
  rotation.probed(probed({all[0]}));
  EXPECT_EQ(rotation.start(), 0U);
  // ns2 is deleted before its turn: the next discovery keeps ns1 and ns3.
  all.erase(all.begin() + 1);
  rotation.discovered(all.size(), keep(all, 0, 2));
  EXPECT_EQ(rotation.start(), 2U) << "what remained of the slice was probed or gone";
}

TEST(DiscoveryRotation, OverManyCyclesEveryNamespaceIsProbedAndTheStartWraps) {
  std::vector<NetnsTarget> all;
  for (std::uint64_t i = 1; i <= 23; ++i) all.push_back(ns(i));
  DiscoveryRotation rotation;
  std::set<std::uint64_t> probed_inodes;
  std::size_t cursor = 0;
  bool wrapped = false;
  for (int cycle = 0; cycle < 100 && !(wrapped && probed_inodes.size() == all.size()); ++cycle) {
    const std::size_t before = rotation.start();
    const auto slice = keep(all, before, 5);
    rotation.discovered(all.size(), slice);
    // Each cycle probes 2 of the slice, rotating (select_window and cursor_after).
    const auto window = select_window(slice, 2, cursor);
    Diagnosis d = probed(window);
    cursor = cursor_after(slice.size(), cursor, window, d);
    rotation.probed(d);
    for (const auto& t : window) probed_inodes.insert(t.inode);
    if (rotation.start() < before) wrapped = true;
  }
  EXPECT_EQ(probed_inodes.size(), all.size());
  EXPECT_TRUE(wrapped) << "the slice start comes back round to the first namespaces";
}

TEST(RequestBudget, ACycleAffordsWhatItHoldsPlusWhatItMayWaitFor) {
  // 20 permits held, 20/s, may wait 30 s: 620 permits; the host takes 6, each container 6.
  EXPECT_EQ(affordable_namespaces(20, 20, milliseconds{30'000}, 6, 6), 102U);
  // Not even the host's requests: nothing for containers.
  EXPECT_EQ(affordable_namespaces(0, 1, milliseconds{0}, 6, 6), 0U);
  EXPECT_EQ(permit_wait(20, 20, 10), milliseconds{0});
  EXPECT_EQ(permit_wait(0, 20, 10), milliseconds{500});
  EXPECT_EQ(permit_wait(1, 4, 3), milliseconds{500});
}

}  // namespace
}  // namespace imds::agent
