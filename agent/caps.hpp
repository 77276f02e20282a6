// Capabilities are per thread: the probe worker keeps only what probing needs, the main
// thread (configuration, the socket API, the journal) keeps none once the worker exists.
// Raw capget(2)/capset(2): no libcap dependency for two system calls.
#pragma once

#include <cstdint>

#include "result.hpp"

namespace imds::agent {

// Capability numbers (linux/capability.h) as a bit mask, bit N = capability N.
using CapabilityMask = std::uint64_t;

// What the probe worker needs, and nothing else:
//  CAP_SYS_ADMIN   setns(2) into a container's network namespace and back
//  CAP_NET_RAW     the packet socket that reads the TTL of the IMDS's segments (hop limit)
//  CAP_SYS_PTRACE  /proc/PID/ns/net of other users' processes (and, under the unit's
//                  ProtectProc=ptraceable, seeing those processes in /proc at all)
CapabilityMask probe_capabilities();

// The calling thread's sets, as /proc/thread-self/status shows them.
struct ThreadCapabilities {
  CapabilityMask effective = 0;
  CapabilityMask permitted = 0;
  CapabilityMask inheritable = 0;
};
Result<ThreadCapabilities> thread_capabilities();

// Leaves the calling thread only `keep` (intersected with what it holds) in its permitted
// and effective sets, and nothing inheritable, so the kernel clears the ambient set too
// (nothing passes through exec). Irreversible
// for this thread; threads it creates later inherit the result; other threads keep theirs.
// Holding nothing to drop is success (an unprivileged run).
Status limit_thread_capabilities(CapabilityMask keep);

// "CAP_SYS_ADMIN CAP_NET_RAW", or "none": for logs and errors.
std::string capability_names(CapabilityMask mask);

}  // namespace imds::agent
