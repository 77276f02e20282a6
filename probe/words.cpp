// Words for people, derived from the model's values (see words.hpp).
#include "words.hpp"

#include <nlohmann/json.hpp>

namespace imds {

std::string printable(std::string_view text, std::size_t max) {
  std::string out;
  for (char c : text.substr(0, max)) {
    const auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? '?' : c;
  }
  if (text.size() > max) out += "...";
  return out;
}

std::string valid_utf8(std::string_view text) {
  using nlohmann::json;
  // nlohmann's serializer already knows UTF-8; its "replace" handler is the repair.
  return json::parse(json(std::string(text)).dump(-1, ' ', false, json::error_handler_t::replace))
      .get<std::string>();
}

std::string hops(int n) { return std::to_string(n) + (n == 1 ? " hop" : " hops"); }

std::string switch_word(bool on) { return on ? "enabled" : "disabled"; }

std::string switch_word(Tristate on) {
  return on == Tristate::unknown ? "unknown" : switch_word(on == Tristate::yes);
}

std::string switch_word(std::optional<bool> on) { return on ? switch_word(*on) : "unknown"; }

std::string http_tokens_word(std::optional<HttpTokens> tokens) {
  return std::string(to_string(tokens.value_or(HttpTokens::unknown)));
}

std::string hop_limit_range(const HopLimit& h) {
  if (h.exact) return std::to_string(*h.exact);
  if (h.method == HopLimitMethod::none) return "unknown";
  if (h.lower == h.upper) return std::to_string(h.lower);
  if (h.lower > 1 && h.upper >= kMaxHopLimit) return ">=" + std::to_string(h.lower);
  if (h.lower <= 1 && h.upper < kMaxHopLimit) return "<=" + std::to_string(h.upper);
  if (h.lower > 1) return std::to_string(h.lower) + ".." + std::to_string(h.upper);
  return "unknown";
}

std::string method_words(HopLimitMethod method) {
  switch (method) {
    case HopLimitMethod::packet_ttl:
      return "packet TTL";
    case HopLimitMethod::min_ttl_search:
      return "IP_MINTTL search";
    case HopLimitMethod::bounds:
      return "bounds";
    case HopLimitMethod::none:
      break;
  }
  return "none";
}

std::string describe_hop_limit(const HopLimit& h) {
  std::string range = hop_limit_range(h);
  if (range == "unknown") return range;
  return range + " (" + method_words(h.method) + ")";
}

std::string expected_hop_limit(std::optional<int> min, std::optional<int> max) {
  if (min && max && *min == *max) return std::to_string(*min);
  if (min && max) return std::to_string(*min) + ".." + std::to_string(*max);
  if (min) return ">=" + std::to_string(*min);
  if (max) return "<=" + std::to_string(*max);
  return {};
}

std::string unreachable_words(UnreachableReason reason) {
  switch (reason) {
    case UnreachableReason::refused:
      return "connection refused";
    case UnreachableReason::no_route:
      return "no route (network unreachable)";
    case UnreachableReason::blackholed:
      return "blocked (blackhole route or local firewall)";
    case UnreachableReason::firewalled:
      return "connect timed out (firewalled?)";
    case UnreachableReason::timeout:
      return "connected, but no HTTP answer";
    case UnreachableReason::intercepted_error:
      return "an interceptor answered with an error";
    case UnreachableReason::none:
      break;
  }
  return "no answer";
}

std::string skip_words(const HttpResult& r) {
  switch (r.skip) {
    case SkipReason::none:
      return "sent";
    case SkipReason::not_started:
      return "not started before the overall deadline";
    case SkipReason::v1_disabled:
      return "tokenless GET disabled (it counts in MetadataNoToken)";
    case SkipReason::listing_disabled:
      return "listing disabled";
    case SkipReason::no_token:
      return "no token";
    case SkipReason::namespace_not_entered:
      return "namespace not entered";
    case SkipReason::predicted_drop:
      if (r.prediction) {
        return "predicted: PUT response TTL " + std::to_string(r.prediction->host_ttl) +
               " at the host cannot cross " + hops(r.prediction->distance);
      }
      return "predicted drop";
  }
  return "not sent";
}

std::string result_words(const HttpResult& r) {
  switch (r.outcome) {
    case Outcome::http:
      return "HTTP " + std::to_string(r.status);
    case Outcome::timeout:
      if (r.cut_by_deadline) return "cut short by the overall deadline";
      if (r.connected) return "connected, then no answer before the timeout";
      return r.retried ? "connect timed out, and again when retried" : "connect timed out";
    case Outcome::reset:
      return "connection reset";
    case Outcome::refused:
      return "connection refused";
    case Outcome::unreachable:
      return "no route (network unreachable)";
    case Outcome::blocked:
      return "blocked (blackhole route or local firewall)";
    case Outcome::error:
      return r.error.empty() ? "failed" : "failed: " + printable(r.error);
    case Outcome::skipped:
      return "not sent: " + skip_words(r);
  }
  return "unknown outcome";
}

std::string entry_problem_words(EntryProblem problem) {
  switch (problem) {
    case EntryProblem::not_mounted_here:
      return "an empty file: a namespace bind mount that this mount namespace does not see, or "
             "a stale name";
    case EntryProblem::stale:
      return "an empty file beside mounted ones that no running container claims: a removed "
             "container's, not cleaned up yet";
    case EntryProblem::dangling_link:
      return "a symbolic link to nothing";
    case EntryProblem::not_a_namespace_file:
      return "not on the namespace file system";
    case EntryProblem::other_namespace_type:
      return "a namespace of another type";
    case EntryProblem::permission_denied:
      return "permission denied";
    case EntryProblem::unreadable:
      return "unreadable";
  }
  return "unreadable";
}

std::string_view entry_problem_label(EntryProblem problem) {
  switch (problem) {
    case EntryProblem::not_mounted_here:
      return "not mounted here";
    case EntryProblem::stale:
      return "stale";
    case EntryProblem::dangling_link:
      return "dangling link";
    case EntryProblem::not_a_namespace_file:
      return "not a namespace file";
    case EntryProblem::other_namespace_type:
      return "other namespace type";
    case EntryProblem::permission_denied:
      return "permission denied";
    case EntryProblem::unreadable:
      return "unreadable";
  }
  return "unreadable";
}

std::string entry_problem_counts(const NetnsDirLook& dir) {
  std::string out;
  for (std::size_t i = 0; i < kEntryProblems; ++i) {
    if (dir.unusable.at(i) == 0) continue;
    out += (out.empty() ? "" : ", ") + std::to_string(dir.unusable.at(i)) + " " +
           std::string(entry_problem_label(static_cast<EntryProblem>(i)));
  }
  return out;
}

std::string namespace_label(std::string_view name, const std::optional<std::string>& container) {
  std::string out = printable(name, 64);
  if (container) out += " " + printable(*container, 64);
  return out;
}

std::string describe_discovery(const DiscoveryLook& look) {
  std::string out;
  const auto part = [&](const std::string& text) {
    if (!out.empty()) out += "; ";
    out += text;
  };
  for (const NetnsDirLook& d : look.dirs) {
    const std::string dir = printable(d.dir, 120);
    if (d.state == NetnsDirLook::State::absent) {
      part(dir + ": absent");
    } else if (d.state == NetnsDirLook::State::unreadable) {
      part(dir + ": unreadable (" + printable(d.error) + ")");
    } else if (d.entries == 0) {
      part(dir + ": none");
    } else {
      part(dir + ": " + std::to_string(d.entries) + (d.entries == 1 ? " entry, " : " entries, ") +
           std::to_string(d.usable) + " usable" +
           (d.unusable_total() > 0 ? " (" + entry_problem_counts(d) + ")" : ""));
    }
  }
  if (!look.proc_scanned) {
    part("/proc: skipped");
  } else {
    part("/proc: " + std::to_string(look.proc_namespaces) + " more");
  }
  if (look.unlisted_container_namespaces > 0) {
    part(std::to_string(look.unlisted_container_namespaces) +
         " container namespaces not listed");
  }
  if (!look.runtimes.empty()) {
    std::string names;
    for (const auto& r : look.runtimes) names += (names.empty() ? "" : ", ") + r;
    part("runtimes: " + names);
  }
  return out;
}

}  // namespace imds
