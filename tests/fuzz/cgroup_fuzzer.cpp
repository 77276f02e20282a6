// Fuzzes imds::parse_cgroup (probe/targets.hpp): the text of /proc/PID/cgroup is written by
// whoever names the cgroups, so any bytes may come; a label, when found, must be valid.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "targets.hpp"

namespace {

bool lowercase_hex(std::string_view s) {
  for (const char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto label = imds::parse_cgroup(text);
  if (label) {
    const auto& id = label->container_id;
    // The documented promise of ContainerLabel::container_id: it goes into names and fixes.
    if (id.size() < 12 || id.size() > 64 || !lowercase_hex(id)) std::abort();
  }
  return 0;
}
