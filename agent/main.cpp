// imds-agent: configuration, logging and the main loop; the work is in libimdsagent.
#include <curl/curl.h>
#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <cstdlib>

#include "agent.hpp"
#include "config.h"
#include "config.hpp"
#include "engine.hpp"
#include "journal.hpp"
#include "systemd.hpp"

namespace {
// Exit codes, documented in imds-agent(8).
constexpr int kExitOk = 0;
constexpr int kExitRuntime = 1;
constexpr int kExitConfig = 2;
}  // namespace

namespace {

int run(int argc, char** argv) {
  using namespace imds::agent;
  auto parsed = parse_command_line(argc, argv);
  if (!parsed) {
    std::fprintf(stderr, "imds-agent: %s\nTry 'imds-agent --help'.\n",
                 parsed.error().message.c_str());
    return kExitConfig;
  }
  const auto& cl = parsed.value();
  if (cl.help) {
    std::fputs(usage_text().c_str(), stdout);
    return kExitOk;
  }
  if (cl.version) {
    std::puts("imds-agent " IMDS_VERSION);
    return kExitOk;
  }
  auto loaded = load_config(cl.sources);
  if (!loaded) {
    std::fprintf(stderr, "imds-agent: configuration error: %s\n", loaded.error().message.c_str());
    return kExitConfig;
  }
  auto config = std::move(loaded).value();
  if (cl.check_config) {
    std::string files;
    for (const auto& f : config.sources) files += "\n  " + f;
    std::printf("imds-agent: configuration is valid; read:%s\n",
                files.empty() ? " no file (built-in defaults)" : files.c_str());
    return kExitOk;
  }

  const bool journal = stderr_is_journal_stream();
  setup_logging(config.log_level, journal);
  curl_global_init(CURL_GLOBAL_DEFAULT);  // before any thread exists

  int rc = kExitOk;
  {
    boost::asio::io_context io(1);
    SystemdJournalSink sink("imds-agent");
    EventReporter reporter(sink, /*echo=*/!journal);
    SystemdNotifier notifier;
    Agent agent(io, std::move(config), cl.sources, make_engine(), reporter, notifier);
    if (auto err = agent.start()) {
      spdlog::critical("cannot serve the API: {}", *err);
      rc = kExitRuntime;
    } else {
      io.run();
    }
    // Stopping is bounded: a probe stuck on a hanging IMDS, or a journald that does not read,
    // is not waited for. Such a thread cannot be joined, and destroying what it uses under
    // it is not safe, so the process then ends here, with the same exit status as a clean
    // stop, once the logs are flushed (imds-agent(8), SIGNALS).
    const bool worker_done = agent.finish(Agent::kWorkerBound);
    const bool journal_done = reporter.flush(std::chrono::milliseconds(1000));
    if (!worker_done || !journal_done) {
      if (!journal_done) spdlog::warn("the journal did not take the last events in time");
      spdlog::default_logger()->flush();  // not shutdown(): a thread left behind may still log
      std::fflush(nullptr);
      std::_Exit(rc);
    }
  }
  curl_global_cleanup();
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    // A bug, not an expected failure: say so and let systemd restart us.
    std::fprintf(stderr, "imds-agent: internal error: %s\n", e.what());
    return kExitRuntime;
  }
}
