// Fleet outputs: the node_exporter textfile and the SSM custom inventory file (fleet.hpp).
#include "fleet.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <regex>

#include "diagnose.hpp"
#include "netns.hpp"
#include "words.hpp"

namespace imds::agent {
namespace {

std::string tristate_word(Tristate t) {
  return t == Tristate::yes ? "yes" : t == Tristate::no ? "no" : "unknown";
}

std::string bool_word(std::optional<bool> b) { return b ? (*b ? "yes" : "no") : "unknown"; }

// A value as inventory takes it: valid UTF-8, at most the value limit.
std::string value_of(std::string_view raw) {
  return valid_utf8(raw.substr(0, InventoryLimits::value - 64));
}

// What every entry repeats: the instance's options, so that one row answers a query.
void add_options(nlohmann::json& entry, const Snapshot& s, std::string_view version) {
  const auto& o = s.options;
  entry["HttpTokens"] = http_tokens_word(o.http_tokens);
  entry["HopLimit"] = o.hop_limit ? hop_limit_range(*o.hop_limit) : "unknown";
  entry["Endpoint"] = s.reachable == false ? "unreachable" : bool_word(o.endpoint_enabled);
  entry["Ipv6Endpoint"] = bool_word(o.ipv6);
  entry["InstanceTags"] = bool_word(o.tags);
  entry["PolicyViolations"] = std::to_string(s.violations.size());
  entry["AgentVersion"] = value_of(version);
}

}  // namespace

std::string ssm_inventory_auto_dir(std::string_view instance_id) {
  return "/var/lib/amazon/ssm/" + std::string(instance_id) + "/inventory/custom";
}

nlohmann::json ssm_inventory(const Snapshot& s, const HostPosture& host, std::string_view version,
                             std::chrono::system_clock::time_point now) {
  nlohmann::json content = nlohmann::json::array();
  nlohmann::json h = nlohmann::json::object();
  h["Namespace"] = "host";
  h["ContainerId"] = "";
  h["ContainerName"] = "";
  h["Hops"] = "0";
  h["Imdsv2"] = host.verdict ? tristate_word(host.verdict->v4.imdsv2) : "unknown";
  h["Imdsv2Ipv6"] =
      host.verdict && host.verdict->v6.probed ? tristate_word(host.verdict->v6.imdsv2) : "unknown";
  h["Verdict"] = host.verdict           ? value_of(host.verdict->v4.summary)
                 : s.reachable == false ? value_of("IMDS unreachable: " + s.unreachable_reason)
                                        : "unknown";
  add_options(h, s, version);
  content.push_back(std::move(h));

  std::size_t bytes = content.dump().size();
  std::size_t not_listed = 0;
  for (const auto& [key, c] : s.containers) {
    nlohmann::json e = nlohmann::json::object();
    e["Namespace"] = value_of(c.path.empty() ? c.name : c.path);
    e["ContainerId"] = value_of(c.container_id.value_or(""));
    e["ContainerName"] = value_of(c.container_name.value_or(""));
    e["Hops"] = c.distance ? std::to_string(*c.distance) : "unknown";
    e["Imdsv2"] = tristate_word(c.imdsv2);
    e["Imdsv2Ipv6"] = tristate_word(c.imdsv2_ipv6);
    e["Verdict"] = value_of(c.verdict);
    add_options(e, s, version);
    const std::size_t size = e.dump().size() + 1;
    // Room is kept for the envelope (well under 1 KiB).
    if (content.size() >= InventoryLimits::our_entries ||
        bytes + size > InventoryLimits::our_bytes - 1024) {
      ++not_listed;
      continue;
    }
    bytes += size;
    content.push_back(std::move(e));
  }
  content[0]["NamespacesNotListed"] = std::to_string(not_listed);
  const std::string when = rfc3339_utc(std::chrono::time_point_cast<std::chrono::seconds>(now));
  return {
      {"SchemaVersion", kInventorySchemaVersion},
      {"TypeName", kInventoryTypeName},
      // Inventory's pattern has whole seconds: 2026-12-03T21:30:00Z.
      {"CaptureTime", when.substr(0, 19) + "Z"},
      {"Content", std::move(content)},
  };
}

Status check_ssm_inventory(const nlohmann::json& doc) {
  static const std::regex schema_re(R"(^([0-9]{1,6})(\.[0-9]{1,6})$)");
  static const std::regex time_re(
      R"(^(20)[0-9][0-9]-(0[1-9]|1[012])-([12][0-9]|3[01]|0[1-9])(T)(2[0-3]|[0-1][0-9])(:[0-5][0-9])(:[0-5][0-9])(Z)$)");
  if (!doc.is_object()) return Error{"not a JSON object"};
  for (const char* key : {"SchemaVersion", "TypeName", "CaptureTime"}) {
    if (!doc.contains(key) || !doc[key].is_string()) {
      return Error{std::string(key) + " is missing or not a string"};
    }
  }
  const auto& type = doc["TypeName"].get_ref<const std::string&>();
  if (type.empty() || type.size() > InventoryLimits::type_name || !type.starts_with("Custom:")) {
    return Error{"TypeName '" + type + "' is not Custom:NAME of at most 100 characters"};
  }
  if (!std::regex_match(doc["SchemaVersion"].get_ref<const std::string&>(), schema_re)) {
    return Error{"SchemaVersion is not N.N"};
  }
  if (!std::regex_match(doc["CaptureTime"].get_ref<const std::string&>(), time_re)) {
    return Error{"CaptureTime is not YYYY-MM-DDTHH:MM:SSZ"};
  }
  if (!doc.contains("Content") || !doc["Content"].is_array()) {
    return Error{"Content is missing or not an array"};
  }
  const auto& content = doc["Content"];
  if (content.size() > InventoryLimits::entries) return Error{"more than 10000 Content entries"};
  for (std::size_t i = 0; i < content.size(); ++i) {
    const auto& entry = content[i];
    const std::string where = "Content[" + std::to_string(i) + "]";
    if (!entry.is_object()) return Error{where + " is not an object"};
    if (entry.size() > InventoryLimits::attributes) return Error{where + " has over 50 keys"};
    for (const auto& [k, v] : entry.items()) {
      if (k.empty() || k.size() > InventoryLimits::key) {
        return Error{fmt::format("{}: key '{}' is not 1 to 64 characters", where, k)};
      }
      if (!v.is_string()) return Error{fmt::format("{}.{} is not a string", where, k)};
      if (v.get_ref<const std::string&>().size() > InventoryLimits::value) {
        return Error{fmt::format("{}.{} is longer than 4096 characters", where, k)};
      }
    }
  }
  if (doc.dump().size() > InventoryLimits::our_bytes) return Error{"larger than 200 KiB"};
  return {};
}

Status write_file_atomically(const std::string& dir, std::string_view name,
                             std::string_view content) {
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Error{errno_message(dir, errno)};
  const std::string tmp = "." + std::string(name) + ".tmp";
  const auto fail = [&](const std::string& what, int err) -> Status {
    ::unlinkat(dfd, tmp.c_str(), 0);
    ::close(dfd);
    return Error{errno_message(dir + "/" + what, err)};
  };
  // O_NOFOLLOW: a link planted under the temporary name is not followed; O_TRUNC: a temporary
  // file left by a crash is reused.
  const int fd =
      ::openat(dfd, tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    ::close(dfd);
    return Error{errno_message(dir + "/" + tmp, err)};
  }
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      ::close(fd);
      return fail(tmp, err);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fchmod(fd, 0644) != 0 || ::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    return fail(tmp, err);
  }
  if (::close(fd) != 0) return fail(tmp, errno);
  if (::renameat(dfd, tmp.c_str(), dfd, std::string(name).c_str()) != 0) {
    return fail(std::string(name), errno);
  }
  ::close(dfd);
  return {};
}

}  // namespace imds::agent
