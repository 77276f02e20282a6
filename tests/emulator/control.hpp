// The emulator's control API (HACKING.md "The emulator") as a pure function of
// (method, target, JSON body) over the State, plus the option value parsers the command
// line shares. The Unix-socket transport lives in server.cpp.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "rules.hpp"

namespace imds::emu {

inline constexpr std::chrono::milliseconds kMaxPending{3600 * 1000};
inline constexpr std::chrono::milliseconds kMaxFaultDelay{600 * 1000};
inline constexpr std::size_t kMaxTags = 50;  // EC2's limit of tags per resource

std::optional<HttpTokens> parse_http_tokens(std::string_view v);
std::optional<bool> parse_enabled(std::string_view v);  // "enabled" / "disabled"
std::optional<UnauthorizedBody> parse_unauthorized_body(std::string_view v);
std::optional<int> parse_hop_limit(std::string_view v);
// Empty string when `value` is acceptable as instance/AMI id, region or AZ, else why not.
std::string check_identity(std::string_view what, std::string_view value);
// Empty string when the tag is acceptable (EC2 rules for tags in metadata), else why not.
std::string check_tag(std::string_view key, std::string_view value);

nlohmann::json options_json(const Options& options);
nlohmann::json faults_json(const Faults& faults);
nlohmann::json log_entry_json(const LogEntry& entry);

// Applies a POST /options body to `base`. On error returns the message and leaves `base`
// in an unspecified state. `pending` receives "pending_ms" (0 when absent).
std::string apply_options_patch(const nlohmann::json& patch, Options& base,
                                std::chrono::milliseconds& pending);
// Parses a POST /faults body (it replaces all faults; {} clears them).
std::string parse_faults(const nlohmann::json& body, Faults& out);

struct ControlReply {
  int status = 200;
  std::string body;  // JSON text
};

ControlReply handle_control(std::string_view method, std::string_view target, std::string_view body,
                            State& state, Now now);

}  // namespace imds::emu
