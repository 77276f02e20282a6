// The event catalog (name, MESSAGE_ID, priority, constant message template) shared with the
// journal catalog, and the journal entry each event becomes.
#pragma once

#include <array>
#include <source_location>
#include <string>
#include <string_view>
#include <vector>

#include "journal.hpp"

namespace imds::agent {

enum class EventKind {
  started,
  first_verdict,
  option_changed,
  container_imdsv2_lost,
  container_imdsv2_gained,
  container_appeared,
  container_vanished,
  policy_drift,
  policy_compliant_again,
  imds_unreachable,
  imds_back,
  config_reloaded,
  stopping,
  imdsv1_caller,
  token_puts_lost,
  callers_summary,
  discovery_changed,
  flapping,
  flapping_ended,
};

struct EventSpec {
  EventKind kind;
  std::string_view name;        // "option-changed": IMDS_EVENT= and docs
  std::string_view message_id;  // systemd-id128 new
  Priority priority;            // default; some events raise it (see diff())
  std::string_view message;     // constant template, @FIELD@ filled from the fields
};

inline constexpr std::array<EventSpec, 19> kEventSpecs = {{
    {EventKind::started, "started", "3c502ce89a38470a8b5401cc076d14ba", Priority::info,
     "imds-agent @IMDS_AGENT_VERSION@ started, probing every @IMDS_INTERVAL@"},
    {EventKind::first_verdict, "first-verdict", "dc945e5354594578bb1ca8d316f49047", Priority::info,
     "IMDS verdict: HttpEndpoint @IMDS_HTTP_ENDPOINT@, HttpTokens @IMDS_HTTP_TOKENS@, hop "
     "limit @IMDS_HOP_LIMIT_RANGE@, @IMDS_CONTAINERS@ container namespace(s), "
     "@IMDS_CONTAINERS_NO_V2@ without IMDSv2"},
    {EventKind::option_changed, "option-changed", "82f6000580cd4b1190daebc52835d1bf",
     Priority::notice,
     "IMDS option @IMDS_OPTION@ changed from @IMDS_OLD_VALUE@ to @IMDS_NEW_VALUE@"},
    {EventKind::container_imdsv2_lost, "container-imdsv2-lost", "01e99a85d9d648179353d3286787e613",
     Priority::warning,
     "Container namespace @IMDS_TARGET@ can no longer get an IMDSv2 token: @IMDS_VERDICT@"},
    {EventKind::container_imdsv2_gained, "container-imdsv2-gained",
     "d11418d5479d4ddc99f5ec983c575414", Priority::notice,
     "Container namespace @IMDS_TARGET@ gets IMDSv2 tokens again: @IMDS_VERDICT@"},
    {EventKind::container_appeared, "container-appeared", "5452aa30089e4170bb8d89f670e199b5",
     Priority::debug,
     "Container namespace @IMDS_TARGET@ appeared, IMDSv2 @IMDS_IMDSV2@: @IMDS_VERDICT@"},
    {EventKind::container_vanished, "container-vanished", "966f2384fa624b879006072cd621371f",
     Priority::debug, "Container namespace @IMDS_TARGET@ vanished"},
    {EventKind::policy_drift, "policy-drift", "17b08986f2c24b4cb4d3c5110e72b4f9", Priority::warning,
     "IMDS option @IMDS_OPTION@ is @IMDS_NEW_VALUE@, policy expects @IMDS_EXPECTED@"},
    {EventKind::policy_compliant_again, "policy-compliant-again",
     "006e54f3fe2f4427a6b4faedbf8711f4", Priority::notice,
     "IMDS option @IMDS_OPTION@ complies with the policy again (@IMDS_NEW_VALUE@, expected "
     "@IMDS_EXPECTED@)"},
    {EventKind::imds_unreachable, "imds-unreachable", "bd076fbdd1cf4762aedf5c4126bc1303",
     Priority::err, "IMDS at @IMDS_ENDPOINT@ is unreachable from the host: @IMDS_REASON@"},
    {EventKind::imds_back, "imds-back", "3dd77fe1007c42e08b05544048db169c", Priority::notice,
     "IMDS at @IMDS_ENDPOINT@ is reachable again after @IMDS_DOWNTIME@"},
    {EventKind::config_reloaded, "config-reloaded", "c2530a4d1d6d443ca731fb41e72ff76f",
     Priority::info, "Configuration reloaded from @IMDS_CONFIG@"},
    {EventKind::stopping, "stopping", "338369f5107e4f468d77647a4b813b27", Priority::info,
     "imds-agent stopping after @IMDS_CYCLES@ probe cycle(s)"},
    {EventKind::imdsv1_caller, "imdsv1-caller", "94a3a251723943f58b536e923797206a",
     Priority::notice,
     "@IMDS_CALLER@ (@IMDS_SDK@) calls IMDSv1 without a token (@IMDS_CALLS@ call(s), answered "
     "@IMDS_ANSWERS@): it breaks when HttpTokens=required"},
    {EventKind::token_puts_lost, "token-puts-lost", "b49a842f731b4331bfda3cd8826aa822",
     Priority::warning,
     "@IMDS_CALLER@ (@IMDS_SDK@) gets no answer to its IMDSv2 token PUTs (@IMDS_PUTS_LOST@ "
     "lost): @IMDS_CAUSE@; @IMDS_FALLBACK_CALLS@ IMDSv1 fallback call(s)"},
    {EventKind::callers_summary, "callers-summary", "b7640a88ae8845ca8a7367effd08309f",
     Priority::info,
     "IMDS callers in the last @IMDS_PERIOD@: @IMDS_V1_CALLS@ IMDSv1 call(s) from "
     "@IMDS_V1_CALLERS@ caller(s), @IMDS_FALLBACK_CALLS@ fallback call(s), @IMDS_PUTS_LOST@ "
     "lost token PUT(s)"},
    {EventKind::discovery_changed, "discovery-changed", "13eeda3e998048f28c61eeb1be9fede0",
     Priority::notice,
     "Container discovery now sees @IMDS_DISCOVERY@ (@IMDS_UNUSABLE_ENTRIES@ unusable "
     "entries, @IMDS_UNLISTED_NAMESPACES@ unlisted container namespaces)"},
    {EventKind::flapping, "flapping", "35fa903a5d684b229444c8349533aa8b", Priority::warning,
     "@IMDS_SUBJECT@ keeps changing (@IMDS_CHANGES@ confirmed changes in @IMDS_WINDOW@, now "
     "@IMDS_NEW_VALUE@, last reported @IMDS_OLD_VALUE@): no more events about it until it "
     "holds still for @IMDS_WINDOW@"},
    {EventKind::flapping_ended, "flapping-ended", "f6173c020c0f42b4b57732932232b2f2",
     Priority::notice, "@IMDS_SUBJECT@ holds still again: @IMDS_NEW_VALUE@ for @IMDS_WINDOW@"},
}};

const EventSpec& spec_of(EventKind kind);

struct Event {
  EventKind kind;
  Priority priority;
  std::vector<JournalField> fields;  // IMDS_EVENT is added when sent
  [[nodiscard]] const std::string* field(std::string_view key) const;
};

// Fills @KEY@ in a template from the fields; unknown keys become "?".
std::string expand_template(std::string_view tmpl, const std::vector<JournalField>& fields);

// The journal entry of an event: MESSAGE_ID, expanded MESSAGE, PRIORITY, IMDS_EVENT=name.
JournalEntry to_journal_entry(const Event& event,
                              std::source_location where = std::source_location::current());

}  // namespace imds::agent
