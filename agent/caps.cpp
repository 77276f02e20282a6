// Per-thread capability limits with capget(2)/capset(2); see caps.hpp.
#include "caps.hpp"

#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <string>

namespace imds::agent {
namespace {

constexpr CapabilityMask bit(int cap) { return CapabilityMask{1} << static_cast<unsigned>(cap); }

struct Sets {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};  // pid 0: this thread
  std::array<__user_cap_data_struct, _LINUX_CAPABILITY_U32S_3> data{};
};

CapabilityMask join(__u32 low, __u32 high) {
  return static_cast<CapabilityMask>(low) | (static_cast<CapabilityMask>(high) << 32U);
}

Result<Sets> get() {
  Sets s;
  if (::syscall(SYS_capget, &s.header, s.data.data()) != 0) {
    return Error{std::string("capget: ") + std::strerror(errno)};
  }
  return s;
}

}  // namespace

CapabilityMask probe_capabilities() {
  return bit(CAP_SYS_ADMIN) | bit(CAP_NET_RAW) | bit(CAP_SYS_PTRACE);
}

Result<ThreadCapabilities> thread_capabilities() {
  auto s = get();
  if (!s) return s.error();
  return ThreadCapabilities{join(s->data[0].effective, s->data[1].effective),
                            join(s->data[0].permitted, s->data[1].permitted),
                            join(s->data[0].inheritable, s->data[1].inheritable)};
}

Status limit_thread_capabilities(CapabilityMask keep) {
  auto s = get();
  if (!s) return s.error();
  const auto low = static_cast<__u32>(keep & 0xffffffffU);
  const auto high = static_cast<__u32>(keep >> 32U);
  const std::array<__u32, 2> halves{low, high};
  bool changes = false;
  for (std::size_t i = 0; i < s->data.size(); ++i) {
    auto& d = s->data[i];
    const __u32 permitted = d.permitted & halves[i];
    const __u32 effective = d.effective & permitted;
    // Nothing inheritable: no capability passes through exec(2), and with the inheritable
    // set empty the kernel empties the ambient set that AmbientCapabilities= filled.
    const __u32 inheritable = 0;
    changes = changes || permitted != d.permitted || effective != d.effective ||
              inheritable != d.inheritable;
    d.permitted = permitted;
    d.effective = effective;
    d.inheritable = inheritable;
  }
  if (!changes) return {};
  if (::syscall(SYS_capset, &s->header, s->data.data()) != 0) {
    return Error{std::string("capset (keeping ") + capability_names(keep) +
                 "): " + std::strerror(errno) +
                 (errno == EPERM ? " (a seccomp filter without capset? the unit's "
                                   "SystemCallFilter= must allow it)"
                                 : "")};
  }
  return {};
}

std::string capability_names(CapabilityMask mask) {
  struct Name {
    int cap;
    const char* name;
  };
  static constexpr std::array<Name, 6> known{{{CAP_CHOWN, "CAP_CHOWN"},
                                              {CAP_DAC_OVERRIDE, "CAP_DAC_OVERRIDE"},
                                              {CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"},
                                              {CAP_NET_RAW, "CAP_NET_RAW"},
                                              {CAP_SYS_PTRACE, "CAP_SYS_PTRACE"},
                                              {CAP_SYS_ADMIN, "CAP_SYS_ADMIN"}}};
  std::string out;
  for (int cap = 0; cap < 64; ++cap) {
    if ((mask & bit(cap)) == 0) continue;
    std::string name = "cap_" + std::to_string(cap);
    for (const auto& n : known) {
      if (n.cap == cap) name = n.name;
    }
    out += (out.empty() ? "" : " ") + name;
  }
  return out.empty() ? "none" : out;
}

}  // namespace imds::agent
