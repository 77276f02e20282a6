// Durations: the one grammar of imds-probe's flags and the agent's configuration, every form
// it takes, and what it refuses, overflow included (a wrapped value would be silently wrong).
#include "duration.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace imds {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

milliseconds parsed(std::string_view text) {
  const auto duration = parse_duration(text);
  if (!duration) {
    ADD_FAILURE() << duration.error().message;
    return milliseconds(-1);
  }
  return *duration;
}

// The error for `text`; a test failure when it was accepted.
std::string rejection(std::string_view text) {
  const auto duration = parse_duration(text);
  if (duration) {
    ADD_FAILURE() << "'" << text << "' was accepted as " << duration->count() << " ms";
    return {};
  }
  return duration.error().message;
}

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(Duration, EveryUnitMeansWhatItSays) {
  EXPECT_EQ(parsed("500ms"), 500ms);
  EXPECT_EQ(parsed("2s"), 2s);
  EXPECT_EQ(parsed("2sec"), 2s);
  EXPECT_EQ(parsed("2m"), 2min);
  EXPECT_EQ(parsed("2min"), 2min);
  EXPECT_EQ(parsed("1h"), 1h);
  EXPECT_EQ(parsed("1d"), 24h);
}

TEST(Duration, ABareNumberIsSeconds) {
  EXPECT_EQ(parsed("60"), 60s);
  EXPECT_EQ(parsed("0"), 0ms);
  EXPECT_EQ(parsed("1.5"), 1500ms);
}

TEST(Duration, FractionsOfAnyUnitAreRoundedToTheNearestMillisecond) {
  EXPECT_EQ(parsed("1.5s"), 1500ms);
  EXPECT_EQ(parsed("0.25min"), 15s);
  EXPECT_EQ(parsed("1.5h"), 90min);
  EXPECT_EQ(parsed("0.5d"), 12h);
  EXPECT_EQ(parsed("2.5ms"), 3ms);  // halves round up
  EXPECT_EQ(parsed("2.4ms"), 2ms);
  EXPECT_EQ(parsed("1.0005s"), 1001ms);
  EXPECT_EQ(parsed("1.0004999s"), 1000ms);
  EXPECT_EQ(parsed("0.123456789012345678s"), 123ms);
}

TEST(Duration, BlanksMaySeparateTheNumberFromItsUnit) {
  EXPECT_EQ(parsed("5 min"), 5min);
  EXPECT_EQ(parsed("1.5\ts"), 1500ms);
}

TEST(Duration, ValuesTooLargeForMillisecondsAreOutOfRangeInsteadOfWrapping) {
  // 213503982335 days is 2^64 ms and a little: a 64-bit multiplication wraps to about 9.6 h.
  EXPECT_TRUE(contains(rejection("213503982335d"), "out of range")) << rejection("213503982335d");
  EXPECT_TRUE(contains(rejection("106751991168d"), "out of range"));
  EXPECT_EQ(parsed("106751991167d"), milliseconds(106751991167LL * 86'400'000));
  EXPECT_EQ(parsed("9223372036854775807ms"), milliseconds::max());
  EXPECT_TRUE(contains(rejection("9223372036854775808ms"), "out of range"));
  EXPECT_TRUE(contains(rejection("9223372036854775807.5ms"), "out of range"));
  EXPECT_TRUE(contains(rejection("99999999999999999999999h"), "out of range"));
}

TEST(Duration, NegativeSpecialAndMisspelledValuesAreNotDurations) {
  for (const char* text : {"",          "-5s",      "+5s",   "s",   "ms",   ".5s",   "5.",
                           "5.s",       "1e3ms",    "inf",   "nan", "infs", "0x10s", "5,5s",
                           "5 parsecs", "5minutes", "1h30m", " 5s", "5s ",  "5 s s", "forever"}) {
    EXPECT_TRUE(contains(rejection(text), "is not a duration")) << "'" << text << "'";
  }
}

TEST(Duration, OverlongInputIsRefusedAndNotEchoedInFull) {
  const std::string overlong = std::string(100, '1') + "s";
  const std::string error = rejection(overlong);
  EXPECT_TRUE(contains(error, "is not a duration")) << error;
  EXPECT_LT(error.size(), 150U) << error;
  const std::string escape = rejection("5\x1b[31m");
  EXPECT_FALSE(contains(escape, "\x1b")) << escape;
}

TEST(Duration, TheErrorQuotesTheTextAndGivesExamples) {
  EXPECT_EQ(rejection("5 minutes"),
            "'5 minutes' is not a duration (e.g. 500ms, 1.5s, 60s, 5min, 6h, 1d)");
}

TEST(Duration, FormattingUsesTheLargestWholeUnitAndReadsBack) {
  EXPECT_EQ(format_duration(0ms), "0s");
  EXPECT_EQ(format_duration(1500ms), "1500ms");
  EXPECT_EQ(format_duration(90s), "90s");
  EXPECT_EQ(format_duration(60s), "1min");
  EXPECT_EQ(format_duration(6h), "6h");
  EXPECT_EQ(format_duration(24h), "1d");
  for (const milliseconds d : {0ms, 1ms, 1500ms, milliseconds(90s), milliseconds(6h),
                               milliseconds(24h * 365), milliseconds::max()}) {
    EXPECT_EQ(parsed(format_duration(d)), d) << format_duration(d);
  }
}

TEST(Duration, TheOutOfRangeMessageNamesBothBounds) {
  EXPECT_EQ(duration_out_of_range("90s", 10ms, 60s),
            "'90s' is out of range (between 10ms and 1min)");
  EXPECT_EQ(duration_out_of_range("400d", 0ms, 24h * 365),
            "'400d' is out of range (between 0s and 365d)");
}

}  // namespace
}  // namespace imds
