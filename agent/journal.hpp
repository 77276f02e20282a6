// Structured journal entries: compile-time checked field keys, constant message templates,
// and the one mockable path (JournalSink) in front of sd_journal_sendv.
#pragma once

#include <memory>
#include <source_location>
#include <string>
#include <string_view>
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

// One human-readable line per entry: "message (KEY=value ...)".
std::string format_entry_for_humans(const JournalEntry& entry);

}  // namespace imds::agent
