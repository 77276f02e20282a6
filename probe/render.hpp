// Renderers of a Diagnosis: JSON (schema in docs/json-schema.md), text for people, and the
// process exit code. Pure: no I/O; the caller decides where output goes and about colour.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "model.hpp"

namespace imds {

// Exit codes of imds-probe (documented in its man page).
inline constexpr int kExitHealthy = 0;      // no finding at warning or worse
inline constexpr int kExitFindings = 1;     // at least one finding at warning or worse
inline constexpr int kExitUsage = 2;        // usage or configuration error (the CLI's own)
inline constexpr int kExitUnreachable = 3;  // the IPv4 IMDS is unreachable from the host

// The whole diagnosis: every observation, the inference, the findings and expectations.
// Strings are valid UTF-8 (invalid bytes replaced), token PUT bodies are never included.
nlohmann::json to_json(const Diagnosis& diagnosis);

// The report for people: the verdict first, one line per target, then the findings with
// their fixes. ANSI colour only when `colour` (the CLI checks the TTY and NO_COLOR).
// Control characters from untrusted text are replaced.
std::string render_text(const Diagnosis& diagnosis, bool colour);

int exit_code(const Diagnosis& diagnosis);


}  // namespace imds
