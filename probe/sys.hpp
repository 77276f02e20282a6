// Small file and text helpers shared by discovery, the simulated container and the
// subprocess runner. Internal to libimdsprobe.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace imds::sys {

std::string errno_text(int err);
std::string base36(unsigned long n);
std::string random_chars(std::size_t n, std::string_view alphabet);
// Reads at most `cap` bytes of a (proc) file; nullopt when it cannot be opened. Never
// blocks on a FIFO (opened non-blocking: nothing to read is an empty result).
std::optional<std::string> read_capped(const std::string& path, std::size_t cap);
bool write_file(const std::string& path, const std::string& value, std::string& error);
std::string join(const std::vector<std::string>& argv);
std::string trim(std::string s);

}  // namespace imds::sys
