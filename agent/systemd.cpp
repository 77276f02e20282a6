// sd_notify, sd_watchdog_enabled and the logging setup, as Waybar does it.
#include "systemd.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/systemd_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <string>

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

void setup_logging(std::string_view level, bool to_journal) {
  std::shared_ptr<spdlog::logger> logger;
  if (to_journal) {
    logger = std::make_shared<spdlog::logger>(
        "imds-agent", std::make_shared<spdlog::sinks::systemd_sink_mt>("imds-agent"));
    logger->set_pattern("%v");
  } else {
    logger = std::make_shared<spdlog::logger>(
        "imds-agent", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  }
  spdlog::set_default_logger(logger);
  set_log_level(level);
  spdlog::flush_on(spdlog::level::debug);
}

}  // namespace imds::agent
