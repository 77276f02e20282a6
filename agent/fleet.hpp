// Files that engines people already run collect from every instance: node_exporter's textfile
// collector (the /metrics text as imds_agent.prom) and AWS Systems Manager Inventory (the
// custom inventory type Custom:ImdsPosture). Pure functions and one atomic write; the agent
// calls them after each cycle (status_api.cpp).
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "model.hpp"
#include "result.hpp"
#include "snapshot.hpp"

namespace imds::agent {

inline constexpr std::string_view kTextfileName = "imds_agent.prom";
inline constexpr std::string_view kInventoryFileName = "ImdsPosture.json";
inline constexpr std::string_view kInventoryTypeName = "Custom:ImdsPosture";
inline constexpr std::string_view kInventorySchemaVersion = "1.0";
// `ssm-inventory-dir = auto`: the directory SSM Agent reads custom inventory from on Linux.
inline constexpr std::string_view kSsmInventoryAuto = "auto";
std::string ssm_inventory_auto_dir(std::string_view instance_id);  // /var/lib/amazon/ssm/ID/...

// The limits of an SSM inventory item (the PutInventory API's InventoryItem) and our own
// bounds under them.
struct InventoryLimits {
  static constexpr std::size_t type_name = 100;     // TypeName length
  static constexpr std::size_t entries = 10000;     // Content items
  static constexpr std::size_t attributes = 50;     // keys per item
  static constexpr std::size_t key = 64;            // key length
  static constexpr std::size_t value = 4096;        // value length
  static constexpr std::size_t our_entries = 1000;  // namespaces listed (host first)
  static constexpr std::size_t our_bytes = std::size_t{200} * 1024;  // the whole file
};

// The host namespace's verdict, when the last diagnosis had one.
struct HostPosture {
  std::optional<TargetVerdict> verdict;
  std::optional<std::string> instance_id;
};

// Custom:ImdsPosture: SchemaVersion, TypeName, CaptureTime and Content, one entry per
// namespace (the host first, then the containers in the snapshot's order) with its verdict
// and the instance's observed options; every value a string, as inventory wants. Entries
// beyond the bounds are left out and counted in the host entry (NamespacesNotListed).
nlohmann::json ssm_inventory(const Snapshot& snapshot, const HostPosture& host,
                             std::string_view version, std::chrono::system_clock::time_point now);

// The first way `doc` breaks SSM Inventory's rules for a custom inventory item, or success.
Status check_ssm_inventory(const nlohmann::json& doc);

// Writes `content` to DIR/NAME so that a reader sees the old file or the new one, never a
// part: a temporary file ".NAME.tmp" in DIR (never a symbolic link), written, synced, made
// readable by all (0644: the collector runs as another user) and renamed over NAME.
Status write_file_atomically(const std::string& dir, std::string_view name,
                             std::string_view content);

}  // namespace imds::agent
