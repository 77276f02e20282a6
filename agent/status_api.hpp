// The status API's JSON answers, sent by its routes (Agent::handle, status_json and metrics_text,
// in status_api.cpp) and by the loop to the POST /v1/probe callers waiting for a probe.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "api_server.hpp"

namespace imds::agent {

// `j` indented; bytes that are not UTF-8 (names of namespaces) are replaced, never thrown on.
ApiResponse json_response(unsigned status, const nlohmann::json& j);

// {"error": message}: what the caller did wrong or why the agent cannot serve it now.
ApiResponse error_response(unsigned status, std::string message);

// The status document stays bounded however many namespaces there are: at most this many
// entries in each per-namespace list (the rest are counted in a "<list>_omitted" field).
inline constexpr std::size_t kMaxListedNamespaces = 256;

// Caps the per-namespace lists of a diagnosis document (to_json): `targets` and
// `inference.targets` (the first entry, the host, always stays) and each finding's
// `subjects`, adding `targets_omitted`, `inference.targets_omitted`, `subjects_omitted`.
void cap_namespace_lists(nlohmann::json& doc, std::size_t max = kMaxListedNamespaces);

}  // namespace imds::agent
