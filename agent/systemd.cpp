// sd_notify, sd_watchdog_enabled and the logging setup, as Waybar does it.
#include "systemd.hpp"

#include "caps.hpp"

#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/systemd_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <string>
#include <thread>

namespace imds::agent {

void SystemdNotifier::notify(std::string_view state) {
  std::string s(state);
  sd_notify(0, s.c_str());
}

std::optional<std::chrono::microseconds> SystemdNotifier::watchdog_period() const {
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return std::nullopt;
  return std::chrono::microseconds(usec / 2);
}

bool stderr_is_journal_stream() {
  const char* js = std::getenv("JOURNAL_STREAM");
  if (js == nullptr) return false;
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) != 0) return false;
  unsigned long long dev = 0;
  unsigned long long ino = 0;
  if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
  return dev == st.st_dev && ino == st.st_ino;
}

void set_log_level(std::string_view level) {
  spdlog::level::level_enum l = spdlog::level::info;
  if (level == "debug")
    l = spdlog::level::debug;
  else if (level == "warning")
    l = spdlog::level::warn;
  else if (level == "error")
    l = spdlog::level::err;
  spdlog::set_level(l);
}

namespace {

// The queue and its thread, for the life of the process (async loggers hold it weakly).
// The thread only writes lines: it holds no capability, whichever thread created it.
const std::shared_ptr<spdlog::details::thread_pool>& log_pool() {
  static const auto pool = std::make_shared<spdlog::details::thread_pool>(
      kLogQueueLines, 1, [] { (void)limit_thread_capabilities(0); });
  return pool;
}

}  // namespace

void install_logger(std::shared_ptr<spdlog::sinks::sink> sink, const std::string& pattern) {
  auto logger = std::make_shared<spdlog::async_logger>(
      "imds-agent", std::move(sink), log_pool(), spdlog::async_overflow_policy::overrun_oldest);
  logger->set_pattern(pattern);
  logger->set_level(spdlog::get_level());
  spdlog::set_default_logger(std::move(logger));
}

std::uint64_t log_lines_dropped() { return log_pool()->overrun_counter(); }

bool flush_logs(std::chrono::milliseconds bound) {
  spdlog::default_logger()->flush();  // queued behind the lines before it
  const auto until = std::chrono::steady_clock::now() + bound;
  while (log_pool()->queue_size() > 0) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

void setup_logging(std::string_view level, bool to_journal) {
  if (to_journal) {
    install_logger(std::make_shared<spdlog::sinks::systemd_sink_mt>("imds-agent"), "%v");
  } else {
    install_logger(std::make_shared<spdlog::sinks::stderr_color_sink_mt>(),
                   "%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  }
  set_log_level(level);
  spdlog::flush_on(spdlog::level::debug);
}

}  // namespace imds::agent
