// The daemon's side of systemd: sd_notify states, the watchdog period, and whether stderr
// is connected to the journal (then human logs go to the journal with priorities).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace spdlog::sinks {
class sink;
}

namespace imds::agent {

class Notifier {
 public:
  virtual ~Notifier() = default;
  virtual void notify(std::string_view state) = 0;  // "READY=1\nSTATUS=..."
  // Half of WATCHDOG_USEC when the watchdog is on for this process.
  [[nodiscard]] virtual std::optional<std::chrono::microseconds> watchdog_period() const = 0;
};

class SystemdNotifier final : public Notifier {
 public:
  void notify(std::string_view state) override;
  [[nodiscard]] std::optional<std::chrono::microseconds> watchdog_period() const override;
};

// $JOURNAL_STREAM is "DEV:INODE" of the stream systemd connected; it only counts when
// stderr is still that very stream (a child of a service may have redirected it).
bool stderr_is_journal_stream();

// spdlog to the journal (via spdlog's systemd sink) or to stderr for people.
void setup_logging(std::string_view level, bool to_journal);
void set_log_level(std::string_view level);

// Log lines reach `sink` from one thread of their own through a bounded queue (spdlog's
// async logger), so a journald or a stderr reader that stalls never stalls the caller: when
// the queue is full, the oldest line waiting is dropped and counted. setup_logging uses it;
// tests install a sink of their own.
inline constexpr std::size_t kLogQueueLines = 1024;
void install_logger(std::shared_ptr<spdlog::sinks::sink> sink, const std::string& pattern);
// Log lines dropped so far because the queue was full.
std::uint64_t log_lines_dropped();
// Flushes and waits at most `bound` for the queue to empty; false if it did not.
bool flush_logs(std::chrono::milliseconds bound);

}  // namespace imds::agent
