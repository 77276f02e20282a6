// Small file and text helpers (see sys.hpp).
#include "sys.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <random>

#include "netns.hpp"

namespace imds::sys {

std::string errno_text(int err) { return std::strerror(err); }

std::string base36(unsigned long n) {
  static constexpr std::string_view digits = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::string out;
  do {
    out.insert(out.begin(), digits[n % 36]);
    n /= 36;
  } while (n != 0);
  return out;
}

std::string random_chars(std::size_t n, std::string_view alphabet) {
  std::random_device rd;
  std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(alphabet[pick(rd)]);
  return out;
}

std::optional<std::string> read_capped(const std::string& path, std::size_t cap) {
  // O_NONBLOCK: a FIFO planted where a file is expected must not block the reader.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd.valid()) return std::nullopt;
  std::string out;
  std::array<char, 4096> buf{};
  while (out.size() < cap) {
    const ssize_t n = ::read(fd.get(), buf.data(), std::min(buf.size(), cap - out.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf.data(), static_cast<std::size_t>(n));
  }
  return out;
}

bool write_file(const std::string& path, const std::string& value, std::string& error) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_TRUNC));
  if (!fd.valid()) {
    error = "cannot open " + path + ": " + errno_text(errno);
    return false;
  }
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    error = "cannot write " + path + ": " + errno_text(errno);
    return false;
  }
  return true;
}

std::string join(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) out += (out.empty() ? "" : " ") + a;
  return out;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace imds::sys
