// The request-rate bound: the bucket with an injected clock, and collect() against the
// emulator on loopback, counting what reached it.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <vector>

#include "collect.hpp"
#include "emulator_process.hpp"
#include "request_rate.hpp"

namespace imds {
namespace {

using namespace std::chrono_literals;
using Time = std::chrono::steady_clock::time_point;

struct FakeClock {
  Time now{};
  RequestBucket::Clock fn() {
    return [this] { return now; };
  }
};

TEST(RequestBucket, StartsFullAndHandsOutAtMostTheBurstAtOnce) {
  FakeClock clock;
  RequestBucket bucket({10.0, 20}, clock.fn());
  EXPECT_TRUE(bucket.try_take(14));
  EXPECT_FALSE(bucket.try_take(7)) << "6 left";
  EXPECT_TRUE(bucket.try_take(6));
  EXPECT_FALSE(bucket.try_take(1));
}

TEST(RequestBucket, RefillsAtTheRateAndNeverBeyondTheBurst) {
  FakeClock clock;
  RequestBucket bucket({10.0, 20}, clock.fn());
  ASSERT_TRUE(bucket.try_take(20));
  clock.now += 500ms;
  EXPECT_DOUBLE_EQ(bucket.available(), 5.0);
  EXPECT_FALSE(bucket.try_take(6));
  EXPECT_TRUE(bucket.try_take(5));
  clock.now += 1h;
  EXPECT_DOUBLE_EQ(bucket.available(), 20.0);
}

TEST(RequestBucket, SaysHowLongUntilPermitsAreThereAndNeverForMoreThanTheBurst) {
  FakeClock clock;
  RequestBucket bucket({4.0, 14}, clock.fn());
  EXPECT_EQ(bucket.time_until(14), 0us);
  ASSERT_TRUE(bucket.try_take(14));
  EXPECT_EQ(bucket.time_until(2), 500ms);
  EXPECT_EQ(bucket.time_until(15), std::chrono::microseconds::max());
  clock.now += 500ms;
  EXPECT_TRUE(bucket.try_take(2));
}

TEST(RequestBucket, PermitsGivenBackAreCappedAtTheBurst) {
  FakeClock clock;
  RequestBucket bucket({1.0, 14}, clock.fn());
  ASSERT_TRUE(bucket.try_take(10));
  bucket.give_back(100);
  EXPECT_DOUBLE_EQ(bucket.available(), 14.0);
}

TEST(RequestBucket, ALowerBurstCapsWhatIsHeldAndCountersSurviveARateChange) {
  FakeClock clock;
  RequestBucket bucket({10.0, 100}, clock.fn());
  bucket.count_sent(false);
  bucket.count_sent(true);
  bucket.count_deferred(3);
  bucket.set_rate({2.0, 14});
  EXPECT_DOUBLE_EQ(bucket.available(), 14.0);
  const RequestRateStats stats = bucket.stats();
  EXPECT_EQ(stats.sent, 2U);
  EXPECT_EQ(stats.delayed, 1U);
  EXPECT_EQ(stats.deferred, 3U);
  EXPECT_EQ(stats.rate, (RequestRate{2.0, 14}));
}

TEST(RequestBucket, AClockGoingBackwardsAddsNothing) {
  FakeClock clock;
  clock.now += 10s;
  RequestBucket bucket({10.0, 20}, clock.fn());
  ASSERT_TRUE(bucket.try_take(20));
  clock.now -= 5s;
  EXPECT_DOUBLE_EQ(bucket.available(), 0.0);
}

TEST(RequestBucket, RefusesARateOrBurstOfZero) {
  EXPECT_THROW(RequestBucket({0.0, 20}), std::invalid_argument);
  EXPECT_THROW(RequestBucket({1.0, 0}), std::invalid_argument);
}

CollectConfig loopback(const test::Emulator& emulator) {
  CollectConfig config;
  config.endpoint_v4 = emulator.v4_url();
  config.probe_v6 = false;
  config.probe_v1 = false;
  config.connect_timeout = 500ms;
  config.request_timeout = 1000ms;
  config.deadline = 10s;
  return config;
}

std::vector<double> request_times(const test::Emulator& emulator) {
  std::string body;
  emulator.control("GET", "/requests", "", &body);
  std::vector<double> times;
  for (const auto& entry : nlohmann::json::parse(body)) times.push_back(entry.at("time"));
  std::sort(times.begin(), times.end());
  return times;
}

// In every stretch of time between two requests, no more arrived than the burst plus what
// the rate adds over it (plus one for the emulator's millisecond clock).
void expect_within(const std::vector<double>& times, RequestRate rate) {
  for (std::size_t i = 0; i < times.size(); ++i) {
    for (std::size_t j = i; j < times.size(); ++j) {
      const double allowed =
          static_cast<double>(rate.burst) + rate.per_second * (times[j] - times[i] + 0.002);
      ASSERT_LE(static_cast<double>(j - i + 1), allowed + 1e-9)
          << (j - i + 1) << " requests in " << (times[j] - times[i]) << " s";
    }
  }
}

// Five namespaces probed like a host (6 requests each: PUT, GET, listing, identity x3) with a
// bucket of 10/s and a burst of 14: the first two go at once, the rest wait their turn.
TEST(CollectWithRequestBound, RequestsReachTheImdsNoFasterThanTheBound) {
  test::Emulator emulator;
  CollectConfig config = loopback(emulator);
  const RequestRate rate{10.0, 14};
  config.request_bucket = std::make_shared<RequestBucket>(rate);
  const std::vector<NetnsTarget> targets(5, test::host_target());
  const auto started = std::chrono::steady_clock::now();
  const CollectResult result = collect(config, targets);
  const auto took = std::chrono::steady_clock::now() - started;

  for (const auto& t : result.targets) {
    for (const auto& o : t.observations) {
      if (o.result.skip == SkipReason::v1_disabled) continue;
      EXPECT_EQ(o.result.outcome, Outcome::http) << o.path << ": " << o.result.error;
    }
  }
  const std::vector<double> times = request_times(emulator);
  ASSERT_EQ(times.size(), 30U);
  expect_within(times, rate);
  // 30 requests, 14 at once: 16 more permits at 10/s. Whole namespaces wait (6 permits), so
  // the last starts once 4 x 6 - 14 = 10 more have come.
  EXPECT_GE(took, 900ms);
  const RequestRateStats stats = config.request_bucket->stats();
  EXPECT_EQ(stats.sent, 30U);
  EXPECT_EQ(stats.delayed, 18U) << "the last three namespaces waited";
  EXPECT_EQ(stats.deferred, 0U);
}

TEST(CollectWithRequestBound, NamespacesThatCannotGetPermitsBeforeTheDeadlineAreNotStarted) {
  test::Emulator emulator;
  CollectConfig config = loopback(emulator);
  config.deadline = 2000ms;
  const RequestRate rate{2.0, 14};
  config.request_bucket = std::make_shared<RequestBucket>(rate);
  const std::vector<NetnsTarget> targets(6, test::host_target());
  const CollectResult result = collect(config, targets);

  // 14 at once: two namespaces; a third needs 4 more permits (2 s), too late for the deadline.
  std::size_t started = 0;
  for (const auto& t : result.targets) {
    const bool any = std::any_of(t.observations.begin(), t.observations.end(),
                                 [](const Observation& o) { return o.result.skip == SkipReason::none; });
    if (any) {
      ++started;
      for (const auto& o : t.observations) {
        if (o.result.skip != SkipReason::v1_disabled) {
          EXPECT_EQ(o.result.status, 200) << o.path;
        }
      }
    } else {
      for (const auto& o : t.observations) {
        if (o.result.skip == SkipReason::v1_disabled) continue;
        EXPECT_EQ(o.result.skip, SkipReason::not_started) << "never reported as unreachable";
      }
    }
  }
  EXPECT_EQ(started, 2U);
  EXPECT_EQ(request_times(emulator).size(), 12U);
  EXPECT_EQ(config.request_bucket->stats().deferred, 4U);
}

TEST(CollectWithRequestBound, ABurstSmallerThanOneNamespaceIsAConfigurationError) {
  CollectConfig config;
  config.request_bucket = std::make_shared<RequestBucket>(RequestRate{10.0, 13});
  EXPECT_THROW(collect(config, {test::host_target()}), std::invalid_argument);
}

TEST(PlannedRequests, CountEveryRequestOfANamespace) {
  CollectConfig config;
  EXPECT_EQ(planned_requests(config, true), kMaxRequestsPerTarget);
  EXPECT_EQ(planned_requests(config, false), 8U);
  config.probe_v1 = false;
  config.probe_v6 = false;
  EXPECT_EQ(planned_requests(config, false), 3U);
}

}  // namespace
}  // namespace imds
