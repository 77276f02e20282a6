// The simulated container (--simulate-container): a bridge namespace one hop from the host.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "model.hpp"
#include "result.hpp"

namespace imds {

// A bridge-networked "container" one forwarding hop from the host: an anonymous network
// namespace, a veth pair, a private /30 and an IPv6 ULA /64, forwarding on, masquerade in its
// own nftables table. Everything is undone by the destructor, and by SIGINT/SIGTERM/SIGHUP
// while it exists (the handler tears down, then re-raises the signal).
class SimulatedContainer {
 public:
  struct Options {
    std::string imds_v4 = "169.254.169.254";  // used to find the uplink device
    std::string imds_v6 = "fd00:ec2::254";
    bool ipv6 = true;
  };

  // Needs CAP_NET_ADMIN and CAP_SYS_ADMIN, `ip` and `nft`.
  static Result<std::unique_ptr<SimulatedContainer>> create(const Options& options);
  ~SimulatedContainer();
  SimulatedContainer(const SimulatedContainer&) = delete;
  SimulatedContainer& operator=(const SimulatedContainer&) = delete;

  // Distance 1 by construction; path is /proc/<pid>/fd/<n> while this object lives.
  [[nodiscard]] const NetnsTarget& target() const { return target_; }
  // Removes everything now (the destructor does it otherwise); returns what could not be
  // removed, for people. Idempotent.
  std::vector<std::string> remove();

  struct State;  // what was changed, so teardown can undo exactly that

 private:
  SimulatedContainer() = default;
  NetnsTarget target_;
  std::shared_ptr<State> state_;
};

}  // namespace imds
