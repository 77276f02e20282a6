// Journal field keys: the compile-time rule is journald's rule.
#include "journal.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

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

// A journal that accepts nothing until opened (journald stuck), then records.
class GateSink : public JournalSink {
 public:
  bool send(const JournalEntry& e) override {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return open_; });
    messages.push_back(e.message);
    return accept_;
  }
  void open(bool accept = true) {
    std::lock_guard lock(mutex_);
    open_ = true;
    accept_ = accept;
    cv_.notify_all();
  }
  std::size_t count() {
    std::lock_guard lock(mutex_);
    return messages.size();
  }
  std::vector<std::string> messages;  // read after flush()

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
  bool accept_ = true;
};

JournalEntry entry(int i) {
  JournalEntry e;
  e.message = "event " + std::to_string(i);
  return e;
}

TEST(JournalSender, AStuckJournalNeverBlocksTheCallerAndDropsAreCounted) {
  GateSink sink;
  JournalSender sender(sink, 4);
  const auto t0 = std::chrono::steady_clock::now();
  int accepted = 0;
  for (int i = 0; i < 20; ++i) accepted += sender.submit(entry(i)) ? 1 : 0;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(100));
  // The thread holds one entry inside send(); the queue holds 4 more.
  EXPECT_GE(accepted, 4);
  EXPECT_LE(accepted, 5);
  EXPECT_EQ(sender.dropped(), static_cast<std::uint64_t>(20 - accepted));
  EXPECT_FALSE(sender.flush(std::chrono::milliseconds(50)));
  sink.open();
  ASSERT_TRUE(sender.flush(std::chrono::seconds(5)));
  EXPECT_EQ(sink.messages.size(), static_cast<std::size_t>(accepted));
  EXPECT_EQ(sink.messages.front(), "event 0");  // in order, the first ones kept
  EXPECT_TRUE(sender.submit(entry(99)));        // room again
  ASSERT_TRUE(sender.flush(std::chrono::seconds(5)));
  EXPECT_EQ(sink.messages.back(), "event 99");
}

TEST(JournalSender, EntriesTheJournalRefusesGoToTheFallback) {
  GateSink sink;
  sink.open(/*accept=*/false);
  std::atomic<int> fallback{0};
  JournalSender sender(sink, 8, [&](const JournalEntry&) { ++fallback; });
  for (int i = 0; i < 3; ++i) sender.submit(entry(i));
  ASSERT_TRUE(sender.flush(std::chrono::seconds(5)));
  EXPECT_EQ(fallback, 3);
  EXPECT_EQ(sender.dropped(), 0U);
}

TEST(JournalSender, FinishIsBoundedWhenTheJournalNeverAnswers) {
  auto sink = std::make_unique<GateSink>();
  {
    JournalSender sender(*sink, 4);
    sender.submit(entry(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // inside send() now
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_FALSE(sender.finish(std::chrono::milliseconds(200)));  // left behind, not joined
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1000));
  }
  sink->open();  // the detached thread finishes its send and ends
  for (int i = 0; i < 100 && sink->count() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(sink->count(), 1U);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // and leaves the sink alone
}

}  // namespace
}  // namespace imds::agent
