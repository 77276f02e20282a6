// Fuzzes the agent's configuration file parsing (agent/config.hpp, load_config): the syntax
// pre-pass, Boost.Program_options and every key's value parser. A bad file must be an error
// value naming the file, never an exception, a crash or a half-applied setting.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // load_config reads a path: a memfd is a regular file with no name on any disk.
  const int fd = ::memfd_create("imds-agent.conf", MFD_CLOEXEC);
  if (fd < 0) std::abort();
  std::size_t written = 0;
  while (written < size) {
    const ssize_t n = ::write(fd, data + written, size - written);
    if (n <= 0) std::abort();
    written += static_cast<std::size_t>(n);
  }
  imds::agent::ConfigSources sources;
  sources.file = "/proc/self/fd/" + std::to_string(fd);
  sources.file_required = true;
  const auto config = imds::agent::load_config(sources);
  if (config) {
    // The ranges the daemon relies on (imds-agent.conf(5)).
    if (!(config->jitter >= 0.0 && config->jitter <= 0.5)) std::abort();
    if (!(config->request_rate >= 1.0 && config->request_rate <= 100.0)) std::abort();
    if (config->interval.count() <= 0 || config->request_timeout.count() <= 0) std::abort();
    if (config->sources.size() != 1) std::abort();
  } else if (config.error().message.rfind(sources.file, 0) != 0) {
    std::abort();  // every error names the file (and line)
  }
  ::close(fd);
  return 0;
}
