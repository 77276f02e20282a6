// The one place that words the model for people: enum values, hop limits, request results.
// The agent, the findings and the renderers all use these; nothing else builds such text.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "model.hpp"

namespace imds {

// Untrusted text (namespace names, IMDS bodies, error strings) made safe for one line:
// control characters replaced by '?', at most `max` bytes, "..." when cut.
std::string printable(std::string_view text, std::size_t max = 80);

// Bytes from outside as valid UTF-8: invalid sequences become U+FFFD (for JSON, metrics).
std::string valid_utf8(std::string_view text);

std::string hops(int n);  // "1 hop", "2 hops"
std::string switch_word(bool on);             // "enabled" / "disabled"
std::string switch_word(Tristate on);         // "enabled" / "disabled" / "unknown"
std::string switch_word(std::optional<bool> on);
std::string http_tokens_word(std::optional<HttpTokens> tokens);  // "optional", ..., "unknown"

// The hop limit as a range: "2", ">=2", "<=1", "2..3", "unknown".
std::string hop_limit_range(const HopLimit& limit);
// With how it was learned: "2 (packet TTL)", ">=2 (bounds)", "unknown".
std::string describe_hop_limit(const HopLimit& limit);
std::string method_words(HopLimitMethod method);  // "packet TTL", "IP_MINTTL search", ...
// An expected hop limit (--expect, expect=): "2", ">=2", "<=3", "2..3"; "" when none.
std::string expected_hop_limit(std::optional<int> min, std::optional<int> max);

// Why something does not reach the IMDS: "connection refused", "no route (network
// unreachable)", "connect timed out (firewalled?)", "connected, but no HTTP answer", ...
std::string unreachable_words(UnreachableReason reason);

// How one request ended, for people: "HTTP 401", "connection reset", "not sent: --no-v1"...
std::string result_words(const HttpResult& result);
// Why a request was not sent (its SkipReason, with the prediction's numbers).
std::string skip_words(const HttpResult& result);

// Why a namespace directory entry is not usable, in a sentence: "an empty file: ...".
std::string entry_problem_words(EntryProblem problem);
// The same as a short label after a count: "not mounted here", "dangling link", ...
std::string_view entry_problem_label(EntryProblem problem);
// "2 not mounted here, 1 dangling link": a directory's unusable entries by problem.
std::string entry_problem_counts(const NetnsDirLook& dir);
// What discovery looked at, in one line: "/run/docker/netns: 2 entries, 2 usable; /run/netns:
// none; /proc: skipped".
std::string describe_discovery(const DiscoveryLook& look);

// How reports name a namespace: its name (a container's 12-hex id), then Docker's name when
// known, "4f2b8c1d9e0a web"; printable, each part at most 64 characters.
std::string namespace_label(std::string_view name, const std::optional<std::string>& container);

}  // namespace imds
