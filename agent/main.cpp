// imds-agent: configuration, logging and the main loop; the work is in libimdsagent.
#include <curl/curl.h>
#include <linux/capability.h>
#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "agent.hpp"
#include "caps.hpp"
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

namespace imds::agent {
namespace {

// CAP_CHOWN: only a daemon started as root by hand has it, for giving the socket its group
// (under the unit the socket already has the daemon's group, and the unit grants no
// CAP_CHOWN). The main thread holds it until the socket is served, the worker never.
CapabilityMask start_capabilities() {
  return probe_capabilities() | (CapabilityMask{1} << static_cast<unsigned>(CAP_CHOWN));
}

// The probe worker keeps exactly the probe's capabilities: every cycle starts here, on the
// worker, before discovery touches anything (after the first cycle a no-op).
Engine on_probe_capabilities(Engine engine) {
  engine.discover = [discover = std::move(engine.discover)](const AgentConfig& config) {
    if (auto s = limit_thread_capabilities(probe_capabilities()); !s) {
      throw std::runtime_error("the probe worker cannot drop capabilities: " + s.error().message);
    }
    return discover(config);
  };
  // The caller watch's thread (started from the worker, perhaps before its first discovery)
  // keeps the probe's capabilities too: packet sockets, and each namespace's addresses.
  if (engine.open_watch) {
    engine.open_watch = [open = std::move(engine.open_watch)](const WatchOptions& options) {
      if (auto s = limit_thread_capabilities(probe_capabilities()); !s) {
        throw std::runtime_error("the caller watch cannot drop capabilities: " +
                                 s.error().message);
      }
      return open(options);
    };
  }
  return engine;
}

// For the log: what the calling thread is left with.
std::string held_by_this_thread() {
  auto caps = thread_capabilities();
  return caps ? capability_names(caps->effective | caps->permitted) : caps.error().message;
}

}  // namespace
}  // namespace imds::agent

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
  // Before any thread exists, so that every thread starts with no more than this.
  if (auto s = limit_thread_capabilities(start_capabilities()); !s) {
    spdlog::critical("cannot drop capabilities: {}", s.error().message);
    return kExitConfig;
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);  // before any thread exists

  int rc = kExitOk;
  {
    boost::asio::io_context io(1);
    SystemdJournalSink sink("imds-agent");
    EventReporter reporter(sink, /*echo=*/!journal);
    SystemdNotifier notifier;
    Agent agent(io, std::move(config), cl.sources, on_probe_capabilities(make_engine()), reporter,
                notifier);
    if (auto err = agent.start()) {
      spdlog::critical("cannot serve the API: {}", *err);
      rc = kExitRuntime;
    } else if (auto s = limit_thread_capabilities(0); !s) {
      // The worker exists (it kept its own capabilities) and the socket is served: from
      // here the main thread parses configuration and client requests holding nothing.
      spdlog::critical("cannot drop the main thread's capabilities: {}", s.error().message);
      rc = kExitConfig;
    } else {
      spdlog::debug("capabilities: main thread {}, probe worker {}", held_by_this_thread(),
                    capability_names(probe_capabilities()));
      io.run();
    }
    // Stopping is bounded: a probe stuck on a hanging IMDS, or a journald that does not read,
    // is not waited for. Such a thread cannot be joined, and destroying what it uses under
    // it is not safe, so the process then ends here, with the same exit status as a clean
    // stop, once the logs are flushed (imds-agent(8), SIGNALS).
    const bool worker_done = agent.finish(Agent::kWorkerBound);
    const bool journal_done = reporter.flush(std::chrono::milliseconds(1000));
    if (!journal_done) spdlog::warn("the journal did not take the last events in time");
    // The log thread is joined at exit: only once its queue is empty (a stalled journald
    // would hold it up), so it ends like the others when it does not empty in time.
    const bool logs_done = flush_logs(std::chrono::milliseconds(500));
    if (!worker_done || !journal_done || !logs_done) {
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
