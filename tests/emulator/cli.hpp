// Command line of imds-emulator (HACKING.md), parsed and validated without side effects so
// it can be unit-tested.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "rules.hpp"

namespace imds::emu {

struct Config {
  Options options;
  std::vector<std::string> listen;  // IP addresses, v4 or v6
  std::uint16_t port = 80;
  std::optional<std::string> control;  // Unix socket path
  std::optional<int> ready_fd;
  int max_connections = 512;
  std::chrono::milliseconds read_timeout{10000};  // to receive one whole request
  bool verbose = false;
};

// What main does: run with `config`, or print `out` (stdout) / `err` (stderr) and exit
// with `exit_code` (0 for --help/--version, 2 for a bad command line).
struct CliResult {
  std::optional<Config> config;
  int exit_code = 0;
  std::string out;
  std::string err;
};

CliResult parse_command_line(int argc, const char* const* argv);

}  // namespace imds::emu
