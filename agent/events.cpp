// The event catalog's lookups and the journal entry of an event: pure functions, no I/O.
#include "events.hpp"

#include <algorithm>
#include <stdexcept>

#include "words.hpp"

namespace imds::agent {

const EventSpec& spec_of(EventKind kind) {
  for (const auto& s : kEventSpecs) {
    if (s.kind == kind) return s;
  }
  throw std::logic_error("event kind without a spec");
}

const std::string* Event::field(std::string_view key) const {
  for (const auto& f : fields) {
    if (f.key.view() == key) return &f.value;
  }
  return nullptr;
}

std::string expand_template(std::string_view tmpl, const std::vector<JournalField>& fields) {
  std::string out;
  std::size_t i = 0;
  while (i < tmpl.size()) {
    auto at = tmpl.find('@', i);
    if (at == std::string_view::npos) break;
    auto end = tmpl.find('@', at + 1);
    if (end == std::string_view::npos) break;
    out.append(tmpl.substr(i, at - i));
    auto key = tmpl.substr(at + 1, end - at - 1);
    const std::string* value = nullptr;
    for (const auto& f : fields) {
      if (f.key.view() == key) value = &f.value;
    }
    // Values come from outside (namespace names, IMDS text): in the one-line MESSAGE they
    // must not start a line of their own. The field itself keeps the raw value.
    out += value ? printable(*value, 256) : std::string("?");
    i = end + 1;
  }
  out.append(tmpl.substr(std::min(i, tmpl.size())));
  return out;
}

JournalEntry to_journal_entry(const Event& event, std::source_location where) {
  const auto& spec = spec_of(event.kind);
  JournalEntry entry;
  entry.message_id = std::string(spec.message_id);
  entry.message = expand_template(spec.message, event.fields);
  entry.priority = event.priority;
  entry.fields = event.fields;
  entry.fields.push_back({"IMDS_EVENT", std::string(spec.name)});
  entry.where = where;
  return entry;
}

}  // namespace imds::agent
