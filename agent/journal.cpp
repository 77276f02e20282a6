// The real journal sink (sd_journal_sendv) and the human form of an entry.
#include "journal.hpp"

#include <sys/uio.h>
// The entry carries CODE_FILE/LINE/FUNC of the caller (std::source_location); without this
// the sd_journal_sendv macro would add a second set naming this file.
#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <spdlog/spdlog.h>
#include <systemd/sd-journal.h>

#include <algorithm>
#include <array>

#include "bounded_stop.hpp"
#include "caps.hpp"

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

JournalSender::JournalSender(JournalSink& sink, std::size_t capacity,
                             std::function<void(const JournalEntry&)> undelivered)
    : state_(std::make_shared<State>()) {
  state_->capacity = std::max<std::size_t>(capacity, 1);
  thread_ = std::thread([state = state_, &sink, undelivered = std::move(undelivered)] {
    // Sending to the journal needs no capability: this thread holds none (caps.hpp).
    if (auto s = limit_thread_capabilities(0); !s)
      spdlog::warn("journal thread: cannot drop capabilities: {}", s.error().message);
    drain(state, sink, undelivered);
  });
}

JournalSender::~JournalSender() { finish(kFinishBound); }

void JournalSender::drain(const std::shared_ptr<State>& state, JournalSink& sink,
                          const std::function<void(const JournalEntry&)>& undelivered) {
  std::unique_lock lock(state->mutex);
  for (;;) {
    state->cv.wait(lock, [&] { return state->stopping || !state->queue.empty(); });
    if (state->queue.empty()) break;  // stopping, and everything went out
    JournalEntry entry = std::move(state->queue.front());
    state->queue.pop_front();
    state->busy = true;
    const std::uint64_t dropped = state->dropped - state->dropped_said;
    state->dropped_said = state->dropped;
    lock.unlock();
    if (dropped > 0) {
      spdlog::warn(
          "{} journal event(s) were dropped: the journal did not accept them as fast as they "
          "came (imds_agent_journal_dropped_total counts them)",
          dropped);
    }
    if (!sink.send(entry) && undelivered) undelivered(entry);
    lock.lock();
    state->busy = false;
    state->cv.notify_all();
  }
  state->exited = true;
  state->cv.notify_all();
}

bool JournalSender::submit(JournalEntry entry) {
  std::lock_guard lock(state_->mutex);
  if (state_->stopping || state_->queue.size() >= state_->capacity) {
    ++state_->dropped;
    return false;
  }
  state_->queue.push_back(std::move(entry));
  state_->cv.notify_all();
  return true;
}

bool JournalSender::flush(std::chrono::milliseconds bound) {
  std::unique_lock lock(state_->mutex);
  return state_->cv.wait_for(lock, bound, [&] {
    return state_->exited || (state_->queue.empty() && !state_->busy);
  }) && state_->queue.empty();
}

bool JournalSender::finish(std::chrono::milliseconds bound) {
  // Blocked in sd_journal_sendv, it is left behind: what it still touches is its shared
  // state and the sink; the caller exits the process rather than destroy the sink.
  return stop_within(thread_, *state_, bound);
}

std::uint64_t JournalSender::dropped() const {
  std::lock_guard lock(state_->mutex);
  return state_->dropped;
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
