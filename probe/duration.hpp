// Durations as people write them, in imds-probe's flags and the agent's configuration alike:
// "500ms", "1.5s", "2min", "6h", "1d"; one grammar, so a value means the same in both.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "result.hpp"

namespace imds {

// A number, optionally with a decimal fraction, then optionally blanks and a unit: ms, s or
// sec, m or min, h, d; no unit means seconds. Rounded to the nearest millisecond. Refused:
// negative numbers, exponents, inf/nan, more than 32 characters, and values too large for
// milliseconds (they would wrap). The error starts with the quoted text. Callers check
// their own range and say so with duration_out_of_range().
Result<std::chrono::milliseconds> parse_duration(std::string_view text);

// The largest unit that divides the duration: "1d", "6h", "5min", "60s", "1500ms", "0s".
// parse_duration() reads it back.
std::string format_duration(std::chrono::milliseconds duration);

// "'TEXT' is out of range (between 1s and 24h)": for a duration outside [min, max].
std::string duration_out_of_range(std::string_view text, std::chrono::milliseconds min,
                                  std::chrono::milliseconds max);

}  // namespace imds
