// --expect parsing: every accepted form, and errors that name the bad part.
#include "expect.hpp"

#include <gtest/gtest.h>

namespace imds {
namespace {

TEST(Expect, RequiredTokensAreParsed) {
  Expectations e;
  EXPECT_EQ(parse_expectation("http-tokens=required", e), std::nullopt);
  EXPECT_EQ(e.http_tokens, HttpTokens::required);
  EXPECT_EQ(parse_expectation("http-tokens=optional", e), std::nullopt);
  EXPECT_EQ(e.http_tokens, HttpTokens::optional);
}

TEST(Expect, PlainHopLimitPinsBothBounds) {
  Expectations e;
  EXPECT_EQ(parse_expectation("hop-limit=3", e), std::nullopt);
  EXPECT_EQ(e.hop_limit_min, 3);
  EXPECT_EQ(e.hop_limit_max, 3);
}

TEST(Expect, AtLeastHopLimitSetsOnlyTheMinimumInBothSpellings) {
  for (const char* text : {"hop-limit=>=2", "hop-limit>=2"}) {
    Expectations e;
    e.hop_limit_max = 5;  // an earlier exact expectation is replaced, not intersected
    EXPECT_EQ(parse_expectation(text, e), std::nullopt) << text;
    EXPECT_EQ(e.hop_limit_min, 2) << text;
    EXPECT_EQ(e.hop_limit_max, std::nullopt) << text;
  }
}

TEST(Expect, ImdsSupportV2MeansRequiredTokensAndHopLimitExactlyTwo) {
  Expectations e;
  EXPECT_EQ(parse_expectation("imds-support=v2.0", e), std::nullopt);
  EXPECT_EQ(e.http_tokens, HttpTokens::required);
  EXPECT_EQ(e.hop_limit_min, 2);
  EXPECT_EQ(e.hop_limit_max, 2);
}

TEST(Expect, SwitchesAcceptEnabledAndDisabled) {
  Expectations e;
  EXPECT_EQ(parse_expectation("endpoint=enabled", e), std::nullopt);
  EXPECT_EQ(parse_expectation("ipv6=disabled", e), std::nullopt);
  EXPECT_EQ(parse_expectation("tags=enabled", e), std::nullopt);
  EXPECT_EQ(e.endpoint_enabled, true);
  EXPECT_EQ(e.ipv6_enabled, false);
  EXPECT_EQ(e.tags_enabled, true);
}

TEST(Expect, HopLimitOutsideOneToSixtyFourIsRejectedWithTheAcceptedRange) {
  for (const char* text :
       {"hop-limit=0", "hop-limit=65", "hop-limit=2x", "hop-limit=", "hop-limit=-1",
        "hop-limit=>=0", "hop-limit= 2", "hop-limit=>=", "hop-limit=99999999999999999999"}) {
    Expectations e;
    const auto error = parse_expectation(text, e);
    ASSERT_TRUE(error.has_value()) << text;
    EXPECT_NE(error->find("hop-limit"), std::string::npos) << *error;
    EXPECT_NE(error->find("1 to 64"), std::string::npos) << *error;
    EXPECT_EQ(e.hop_limit_min, std::nullopt) << text;
  }
}

TEST(Expect, UnknownKeyIsNamedAndTheFormsAreListed) {
  Expectations e;
  const auto error = parse_expectation("hop-limt=2", e);
  ASSERT_TRUE(error.has_value());
  EXPECT_NE(error->find("'hop-limt'"), std::string::npos) << *error;
  EXPECT_NE(error->find("imds-support=v2.0"), std::string::npos) << *error;
}

TEST(Expect, BadValuesNameTheKeyAndWhatItAccepts) {
  Expectations e;
  auto error = parse_expectation("http-tokens=yes", e);
  ASSERT_TRUE(error.has_value());
  EXPECT_NE(error->find("'yes'"), std::string::npos) << *error;
  EXPECT_NE(error->find("optional or required"), std::string::npos) << *error;
  error = parse_expectation("imds-support=v1.0", e);
  ASSERT_TRUE(error.has_value());
  EXPECT_NE(error->find("v2.0"), std::string::npos) << *error;
  error = parse_expectation("tags=on", e);
  ASSERT_TRUE(error.has_value());
  EXPECT_NE(error->find("enabled or disabled"), std::string::npos) << *error;
}

TEST(Expect, TextWithoutEqualsSignIsRejected) {
  Expectations e;
  const auto error = parse_expectation("required", e);
  ASSERT_TRUE(error.has_value());
  EXPECT_NE(error->find("KEY=VALUE"), std::string::npos) << *error;
}

TEST(Expect, ControlCharactersInBadInputAreNotEchoed) {
  Expectations e;
  const auto error = parse_expectation("tags=\x1b[31mred", e);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->find('\x1b'), std::string::npos) << *error;
}

TEST(Expect, AFailedExpectationLeavesEarlierOnesUntouched) {
  Expectations e;
  ASSERT_EQ(parse_expectation("imds-support=v2.0", e), std::nullopt);
  ASSERT_TRUE(parse_expectation("hop-limit=70", e).has_value());
  EXPECT_EQ(e.hop_limit_min, 2);
  EXPECT_EQ(e.hop_limit_max, 2);
  EXPECT_EQ(e.http_tokens, HttpTokens::required);
}

}  // namespace
}  // namespace imds
