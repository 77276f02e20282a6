// The duration grammar shared by imds-probe and imds-agent; see duration.hpp.
#include "duration.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <system_error>

#include "quote.hpp"

namespace imds {
namespace {

using std::chrono::milliseconds;

constexpr std::size_t kMaxDurationBytes = 32;

struct Unit {
  std::string_view name;
  std::int64_t ms;
};
constexpr std::array<Unit, 8> kUnits = {{
    {"", 1000},
    {"ms", 1},
    {"s", 1000},
    {"sec", 1000},
    {"m", 60'000},
    {"min", 60'000},
    {"h", 3'600'000},
    {"d", 86'400'000},
}};

bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::size_t digits_from(std::string_view text, std::size_t at) {
  while (at < text.size() && is_digit(text[at])) ++at;
  return at;
}

// round(0.FRACTION x unit_ms), halves up, exactly: Horner's rule from the last digit keeps
// floor(2 x value) in an integer (floor((d + floor(x)) / 10) == floor((d + x) / 10)), so
// no digit is lost and nothing can overflow (every step stays below 20 x unit_ms).
std::int64_t fraction_ms(std::string_view fraction, std::int64_t unit_ms) {
  std::int64_t twice = 0;
  for (std::size_t i = fraction.size(); i-- > 0;) {
    twice = (std::int64_t{fraction[i] - '0'} * 2 * unit_ms + twice) / 10;
  }
  return (twice + 1) / 2;
}

}  // namespace

Result<milliseconds> parse_duration(std::string_view text) {
  const auto not_a_duration = [&] {
    return Error{quoted(text) + " is not a duration (e.g. 500ms, 1.5s, 60s, 5min, 6h, 1d)"};
  };
  const auto out_of_range = [&] {
    return Error{quoted(text) + " is out of range (more than 292 million years)"};
  };
  if (text.empty() || text.size() > kMaxDurationBytes) return not_a_duration();

  const std::size_t whole_end = digits_from(text, 0);
  if (whole_end == 0) return not_a_duration();  // also "-5s", ".5s", "inf", "nan"
  std::size_t number_end = whole_end;
  std::string_view fraction;
  if (number_end < text.size() && text[number_end] == '.') {
    number_end = digits_from(text, whole_end + 1);
    fraction = text.substr(whole_end + 1, number_end - whole_end - 1);
    if (fraction.empty()) return not_a_duration();
  }
  std::string_view unit_name = text.substr(number_end);
  unit_name.remove_prefix(std::min(unit_name.find_first_not_of(" \t"), unit_name.size()));
  const Unit* unit = nullptr;
  for (const Unit& u : kUnits) {
    if (u.name == unit_name) unit = &u;
  }
  if (unit == nullptr) return not_a_duration();

  constexpr std::int64_t kMax = std::numeric_limits<milliseconds::rep>::max();
  std::int64_t whole = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + whole_end, whole);
  if (ec == std::errc::result_out_of_range || whole > kMax / unit->ms) return out_of_range();
  if (ec != std::errc() || end != text.data() + whole_end) return not_a_duration();
  const std::int64_t ms = whole * unit->ms;
  const std::int64_t rest = fraction_ms(fraction, unit->ms);
  if (ms > kMax - rest) return out_of_range();
  return milliseconds(ms + rest);
}

std::string format_duration(milliseconds duration) {
  const auto ms = duration.count();
  if (ms != 0 && ms % 86'400'000 == 0) return std::to_string(ms / 86'400'000) + "d";
  if (ms != 0 && ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms != 0 && ms % 60'000 == 0) return std::to_string(ms / 60'000) + "min";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string duration_out_of_range(std::string_view text, milliseconds min, milliseconds max) {
  return quoted(text) + " is out of range (between " + format_duration(min) + " and " +
         format_duration(max) + ")";
}

}  // namespace imds
