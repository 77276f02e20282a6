// Structured journal entries: compile-time checked field keys, constant message templates,
// and the one mockable path (JournalSink) in front of sd_journal_sendv.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <source_location>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace imds::agent {

// journald's rule for field names: 1-64 characters of A-Z, 0-9 and '_', not starting with
// a digit or '_' (a leading '_' is reserved for trusted fields the journal adds itself).
constexpr bool is_valid_journal_key(std::string_view k) {
  if (k.empty() || k.size() > 64 || k.front() == '_') return false;
  if (k.front() >= '0' && k.front() <= '9') return false;
  for (char c : k) {
    if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

// A journal field name checked at compile time: a bad literal does not build.
class JournalKey {
 public:
  consteval JournalKey(const char* key) : key_(key) {  // NOLINT(google-explicit-constructor)
    if (!is_valid_journal_key(key)) {
      throw "journal keys are 1-64 of A-Z, 0-9, '_', not starting with '_' or a digit";
    }
  }
  [[nodiscard]] constexpr std::string_view view() const { return key_; }

 private:
  const char* key_;
};

struct JournalField {
  JournalKey key;
  std::string value;
};

// syslog(3) priorities, as journald's PRIORITY= wants them.
enum class Priority { emerg = 0, alert, crit, err, warning, notice, info, debug };
std::string_view priority_name(Priority p);

struct JournalEntry {
  std::string message_id;  // 32 lowercase hex characters (systemd-id128 new)
  std::string message;     // human text; the variable parts are also in `fields`
  Priority priority = Priority::info;
  std::vector<JournalField> fields;
  std::source_location where;
  [[nodiscard]] const std::string* field(std::string_view key) const;
};

// Where structured entries go. The daemon sends to journald; tests record.
class JournalSink {
 public:
  virtual ~JournalSink() = default;
  // Returns false when the entry could not be delivered (no journal).
  virtual bool send(const JournalEntry& entry) = 0;
};

// sd_journal_sendv with MESSAGE_ID, MESSAGE, PRIORITY, CODE_FILE/LINE/FUNC,
// SYSLOG_IDENTIFIER and every field.
class SystemdJournalSink final : public JournalSink {
 public:
  explicit SystemdJournalSink(std::string syslog_identifier);
  bool send(const JournalEntry& entry) override;

 private:
  std::string identifier_;
};

// A bounded queue in front of a JournalSink, drained by a thread of its own: sd_journal_sendv
// blocks while journald does not read (a stalled journald, a full disk), and the daemon's loop
// must not block with it (its watchdog would trip). When the queue is full the entry is
// dropped and counted (dropped(): the agent's /metrics and /v1/status); the thread says how
// many were dropped once the journal accepts entries again. The sink must outlive the sender.
class JournalSender {
 public:
  // `undelivered` runs on the sender's thread for each entry the sink refused (no journal).
  JournalSender(JournalSink& sink, std::size_t capacity,
                std::function<void(const JournalEntry&)> undelivered = {});
  // Gives the queue up to kFinishBound to drain, then leaves the thread behind (detached) if
  // the sink still blocks; the process is expected to exit then (imds-agent's main does).
  ~JournalSender();
  JournalSender(const JournalSender&) = delete;
  JournalSender& operator=(const JournalSender&) = delete;

  static constexpr std::chrono::milliseconds kFinishBound{1000};

  // Never blocks. false: the queue was full and the entry was dropped (and counted).
  bool submit(JournalEntry entry);
  // Waits up to `bound` until every queued entry went to the sink; true if they all did.
  bool flush(std::chrono::milliseconds bound);
  // Stops taking entries, drains for up to `bound`; true when the thread ended and was
  // joined, false when it was left behind because the sink still blocks.
  bool finish(std::chrono::milliseconds bound);
  [[nodiscard]] std::uint64_t dropped() const;

 private:
  struct State {
    std::mutex mutex;
    std::condition_variable cv;
    std::deque<JournalEntry> queue;
    std::size_t capacity = 0;
    bool busy = false;  // the thread is inside sink.send
    bool stopping = false;
    bool exited = false;
    std::uint64_t dropped = 0;
    std::uint64_t dropped_said = 0;  // how many drops the thread has told about
  };
  static void drain(const std::shared_ptr<State>& state, JournalSink& sink,
                    const std::function<void(const JournalEntry&)>& undelivered);
  std::shared_ptr<State> state_;
  std::thread thread_;
};

// One human-readable line per entry: "message (KEY=value ...)".
std::string format_entry_for_humans(const JournalEntry& entry);

}  // namespace imds::agent
