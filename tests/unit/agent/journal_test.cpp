// Journal field keys: the compile-time rule is journald's rule.
#include "journal.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "systemd.hpp"

namespace imds::agent {
namespace {

// These are evaluated by the compiler: a key literal that breaks the rule does not build
// (tests/unit/agent/meson.build also checks that such a file fails to compile).
static_assert(is_valid_journal_key("IMDS_HTTP_TOKENS"));
static_assert(is_valid_journal_key("MESSAGE_ID"));
static_assert(!is_valid_journal_key("imds_http_tokens"));
static_assert(!is_valid_journal_key("_PID"));
static_assert(!is_valid_journal_key("1ST"));
static_assert(!is_valid_journal_key("IMDS-HOP"));
static_assert(!is_valid_journal_key(""));
static_assert(JournalKey("IMDS_NETNS").view() == "IMDS_NETNS");

TEST(JournalKeys, FollowJournaldsRuleAtRunTimeToo) {
  EXPECT_TRUE(is_valid_journal_key("IMDS_HOP_LIMIT_MIN"));
  EXPECT_TRUE(is_valid_journal_key(std::string(64, 'A')));
  EXPECT_FALSE(is_valid_journal_key(std::string(65, 'A')));
  EXPECT_FALSE(is_valid_journal_key("IMDS_HÖP"));
  EXPECT_FALSE(is_valid_journal_key("IMDS HOP"));
}

TEST(JournalEntries, HumanFormShowsTheMessageThenEveryField) {
  JournalEntry e;
  e.message = "IMDS option HttpTokens changed from optional to required";
  e.fields = {{"IMDS_OPTION", "HttpTokens"}, {"IMDS_NEW_VALUE", "required"}};
  EXPECT_EQ(format_entry_for_humans(e),
            "IMDS option HttpTokens changed from optional to required "
            "(IMDS_OPTION=HttpTokens IMDS_NEW_VALUE=required)");
  EXPECT_EQ(priority_name(Priority::warning), "warning");
}

TEST(JournalStream, CountsOnlyWhenStderrIsTheStreamSystemdConnected) {
  struct stat st {};
  ASSERT_EQ(::fstat(STDERR_FILENO, &st), 0);
  const std::string mine = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  const std::string other = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino + 1);
  ::unsetenv("JOURNAL_STREAM");
  EXPECT_FALSE(stderr_is_journal_stream());
  ::setenv("JOURNAL_STREAM", mine.c_str(), 1);
  EXPECT_TRUE(stderr_is_journal_stream());
  // A child of a service whose stderr was redirected inherits the variable: not the journal.
  ::setenv("JOURNAL_STREAM", other.c_str(), 1);
  EXPECT_FALSE(stderr_is_journal_stream());
  ::setenv("JOURNAL_STREAM", "garbage", 1);
  EXPECT_FALSE(stderr_is_journal_stream());
  ::unsetenv("JOURNAL_STREAM");
}

}  // namespace
}  // namespace imds::agent
