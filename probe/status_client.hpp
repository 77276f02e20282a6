// The `imds-probe status` and `imds-probe callers` client: reads the running imds-agent's
// GET /v1/status or GET /v1/callers over its Unix socket and prints it, as text for people or
// as the agent's own JSON.
#pragma once

#include <string>

namespace imds {

// --json=off is text; short and pretty print the document as compact or indented JSON.
struct StatusOutput {
  bool json = false;
  bool pretty = false;
};

// Prints the agent's document; returns the exit status of its latest diagnosis (what imds-probe
// would have returned), or kExitUsage, with what failed on stderr, when the agent cannot be read.
int agent_status(const std::string& socket_path, StatusOutput output);

// `imds-probe callers`: the agent's record of who called the IMDS (GET /v1/callers), as the
// callers table or its JSON. 0, or kExitUsage when the agent cannot be read or does not watch.
int agent_callers(const std::string& socket_path, StatusOutput output);

}  // namespace imds
