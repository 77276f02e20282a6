// The real journal sink (sd_journal_sendv) and the human form of an entry.
#include "journal.hpp"

#include <sys/uio.h>
// The entry carries CODE_FILE/LINE/FUNC of the caller (std::source_location); without this
// the sd_journal_sendv macro would add a second set naming this file.
#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-journal.h>

#include <array>

namespace imds::agent {

std::string_view priority_name(Priority p) {
  static constexpr std::array<std::string_view, 8> names = {"emerg",   "alert",  "crit", "err",
                                                            "warning", "notice", "info", "debug"};
  return names.at(static_cast<std::size_t>(p));
}

const std::string* JournalEntry::field(std::string_view key) const {
  for (const auto& f : fields) {
    if (f.key.view() == key) return &f.value;
  }
  return nullptr;
}

SystemdJournalSink::SystemdJournalSink(std::string syslog_identifier)
    : identifier_(std::move(syslog_identifier)) {}

bool SystemdJournalSink::send(const JournalEntry& entry) {
  std::vector<std::string> lines;
  lines.reserve(entry.fields.size() + 8);
  lines.push_back("MESSAGE_ID=" + entry.message_id);
  lines.push_back("MESSAGE=" + entry.message);
  lines.push_back("PRIORITY=" + std::to_string(static_cast<int>(entry.priority)));
  lines.push_back("SYSLOG_IDENTIFIER=" + identifier_);
  lines.push_back(std::string("CODE_FILE=") + entry.where.file_name());
  lines.push_back("CODE_LINE=" + std::to_string(entry.where.line()));
  lines.push_back(std::string("CODE_FUNC=") + entry.where.function_name());
  for (const auto& f : entry.fields) {
    std::string line(f.key.view());
    line += '=';
    line += f.value;  // journald's native protocol carries any bytes, newlines included
    lines.push_back(std::move(line));
  }
  std::vector<iovec> iov;
  iov.reserve(lines.size());
  for (auto& l : lines) iov.push_back({l.data(), l.size()});
  return sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) >= 0;
}

std::string format_entry_for_humans(const JournalEntry& entry) {
  std::string out = entry.message;
  if (!entry.fields.empty()) {
    out += " (";
    bool first = true;
    for (const auto& f : entry.fields) {
      if (!first) out += ' ';
      first = false;
      out += f.key.view();
      out += '=';
      out += f.value;
    }
    out += ')';
  }
  return out;
}

}  // namespace imds::agent
