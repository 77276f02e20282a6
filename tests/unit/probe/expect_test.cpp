// --expect parsing: every accepted form, and errors that name the bad part.
#include "expect.hpp"

#include <gtest/gtest.h>

namespace imds {
namespace {

TEST(Expect, RequiredTokensAreParsed) {
  Expectations e;
  EXPECT_TRUE(parse_expectation("http-tokens=required", e).ok());
  EXPECT_EQ(e.http_tokens, HttpTokens::required);
  EXPECT_TRUE(parse_expectation("http-tokens=optional", e).ok());
  EXPECT_EQ(e.http_tokens, HttpTokens::optional);
}

TEST(Expect, PlainHopLimitPinsBothBounds) {
  Expectations e;
  EXPECT_TRUE(parse_expectation("hop-limit=3", e).ok());
  EXPECT_EQ(e.hop_limit_min, 3);
  EXPECT_EQ(e.hop_limit_max, 3);
}

TEST(Expect, AtLeastHopLimitSetsOnlyTheMinimumInBothSpellings) {
  for (const char* text : {"hop-limit=>=2", "hop-limit>=2"}) {
    Expectations e;
    e.hop_limit_max = 5;  // an earlier exact expectation is replaced, not intersected
    EXPECT_TRUE(parse_expectation(text, e).ok()) << text;
    EXPECT_EQ(e.hop_limit_min, 2) << text;
    EXPECT_EQ(e.hop_limit_max, std::nullopt) << text;
  }
}

TEST(Expect, ImdsSupportV2MeansRequiredTokensAndHopLimitExactlyTwo) {
  Expectations e;
  EXPECT_TRUE(parse_expectation("imds-support=v2.0", e).ok());
  EXPECT_EQ(e.http_tokens, HttpTokens::required);
  EXPECT_EQ(e.hop_limit_min, 2);
  EXPECT_EQ(e.hop_limit_max, 2);
}

TEST(Expect, SwitchesAcceptEnabledAndDisabled) {
  Expectations e;
  EXPECT_TRUE(parse_expectation("endpoint=enabled", e).ok());
  EXPECT_TRUE(parse_expectation("ipv6=disabled", e).ok());
  EXPECT_TRUE(parse_expectation("tags=enabled", e).ok());
  EXPECT_EQ(e.endpoint_enabled, true);
  EXPECT_EQ(e.ipv6_enabled, false);
  EXPECT_EQ(e.tags_enabled, true);
}

TEST(Expect, HopLimitOutsideOneToSixtyFourIsRejectedWithTheAcceptedRange) {
  for (const char* text :
       {"hop-limit=0", "hop-limit=65", "hop-limit=2x", "hop-limit=", "hop-limit=-1",
        "hop-limit=>=0", "hop-limit= 2", "hop-limit=>=", "hop-limit=99999999999999999999"}) {
    Expectations e;
    const Status status = parse_expectation(text, e);
    ASSERT_FALSE(status.ok()) << text;
    const std::string& error = status.error().message;
    EXPECT_NE(error.find("hop-limit"), std::string::npos) << error;
    EXPECT_NE(error.find("1 to 64"), std::string::npos) << error;
    EXPECT_EQ(e.hop_limit_min, std::nullopt) << text;
  }
}

TEST(Expect, UnknownKeyIsNamedAndTheFormsAreListed) {
  Expectations e;
  const Status status = parse_expectation("hop-limt=2", e);
  ASSERT_FALSE(status.ok());
  const std::string& error = status.error().message;
  EXPECT_NE(error.find("'hop-limt'"), std::string::npos) << error;
  EXPECT_NE(error.find("imds-support=v2.0"), std::string::npos) << error;
}

TEST(Expect, BadValuesNameTheKeyAndWhatItAccepts) {
  Expectations e;
  auto status = parse_expectation("http-tokens=yes", e);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message.find("'yes'"), std::string::npos) << status.error().message;
  EXPECT_NE(status.error().message.find("optional or required"), std::string::npos)
      << status.error().message;
  status = parse_expectation("imds-support=v1.0", e);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message.find("v2.0"), std::string::npos) << status.error().message;
  status = parse_expectation("tags=on", e);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message.find("enabled or disabled"), std::string::npos)
      << status.error().message;
}

TEST(Expect, TextWithoutEqualsSignIsRejected) {
  Expectations e;
  const Status status = parse_expectation("required", e);
  ASSERT_FALSE(status.ok());
  const std::string& error = status.error().message;
  EXPECT_NE(error.find("KEY=VALUE"), std::string::npos) << error;
}

TEST(Expect, ControlCharactersInBadInputAreNotEchoed) {
  Expectations e;
  const Status status = parse_expectation("tags=\x1b[31mred", e);
  ASSERT_FALSE(status.ok());
  const std::string& error = status.error().message;
  EXPECT_EQ(error.find('\x1b'), std::string::npos) << error;
}

TEST(Expect, AFailedExpectationLeavesEarlierOnesUntouched) {
  Expectations e;
  ASSERT_TRUE(parse_expectation("imds-support=v2.0", e).ok());
  ASSERT_FALSE(parse_expectation("hop-limit=70", e).ok());
  EXPECT_EQ(e.hop_limit_min, 2);
  EXPECT_EQ(e.hop_limit_max, 2);
  EXPECT_EQ(e.http_tokens, HttpTokens::required);
}

}  // namespace
}  // namespace imds
