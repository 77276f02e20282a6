// Echoing a person's input back in an error message: quoted, bounded, control characters
// replaced, so a flag or a config value cannot forge lines on a terminal or in a log.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace imds {

// "'TEXT'", at most 64 characters of TEXT then "...", each control character as '?'.
inline std::string quoted(std::string_view text) {
  constexpr std::size_t kShown = 64;
  std::string out = "'";
  for (const char c : text.substr(0, kShown)) {
    const auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? '?' : c;
  }
  if (text.size() > kShown) out += "...";
  return out + "'";
}

}  // namespace imds
