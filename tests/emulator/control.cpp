// Control API of the emulator: JSON in, JSON out, validated and bounded.
#include "control.hpp"

#include <algorithm>
#include <charconv>

namespace imds::emu {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxIdentityLength = 255;
constexpr std::size_t kMaxFaultPaths = 100;
constexpr std::size_t kMaxFaultPathLength = 1024;

std::string dump(const json& j) {
  // Logged paths are client bytes: never let invalid UTF-8 abort a reply.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

ControlReply reply(int status, const json& j) { return {status, dump(j) + "\n"}; }

ControlReply error(int status, std::string message) {
  return reply(status, json{{"error", std::move(message)}});
}

std::string need_string(const json& v, std::string_view key) {
  return v.is_string() ? std::string() : "\"" + std::string(key) + "\" must be a string";
}

std::optional<long long> integer(const json& v) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<unsigned long long>();
    if (u > static_cast<unsigned long long>(INT64_MAX)) return std::nullopt;
    return static_cast<long long>(u);
  }
  if (v.is_number_integer()) return v.get<long long>();
  return std::nullopt;
}

std::string enabled_string(bool b) { return b ? "enabled" : "disabled"; }

std::string_view path_of(std::string_view target) { return target.substr(0, target.find('?')); }

// ?since=N on GET /requests: entries with a larger seq only.
std::optional<std::uint64_t> since_of(std::string_view target) {
  const auto q = target.find('?');
  if (q == std::string_view::npos) return 0;
  std::string_view query = target.substr(q + 1);
  constexpr std::string_view kSince = "since=";
  if (!query.starts_with(kSince)) return std::nullopt;
  query.remove_prefix(kSince.size());
  std::uint64_t since = 0;
  const auto [ptr, ec] = std::from_chars(query.data(), query.data() + query.size(), since);
  if (ec != std::errc{} || ptr != query.data() + query.size()) return std::nullopt;
  return since;
}

}  // namespace

std::optional<HttpTokens> parse_http_tokens(std::string_view v) {
  if (v == "optional") return HttpTokens::optional;
  if (v == "required") return HttpTokens::required;
  return std::nullopt;
}

std::optional<bool> parse_enabled(std::string_view v) {
  if (v == "enabled") return true;
  if (v == "disabled") return false;
  return std::nullopt;
}

std::optional<UnauthorizedBody> parse_unauthorized_body(std::string_view v) {
  if (v == "xhtml") return UnauthorizedBody::xhtml;
  if (v == "empty") return UnauthorizedBody::empty;
  return std::nullopt;
}

std::optional<int> parse_hop_limit(std::string_view v) {
  int n = 0;
  const auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc{} || ptr != v.data() + v.size()) return std::nullopt;
  if (n < kMinHopLimit || n > kMaxHopLimit) return std::nullopt;
  return n;
}

std::string check_identity(std::string_view what, std::string_view value) {
  if (value.empty() || value.size() > kMaxIdentityLength) {
    return std::string(what) + " must be 1.." + std::to_string(kMaxIdentityLength) + " characters";
  }
  const bool ok = std::all_of(value.begin(), value.end(),
                              [](char c) { return c > ' ' && c < 127 && c != '/'; });
  if (!ok) return std::string(what) + " must be printable ASCII without spaces or '/'";
  return {};
}

std::string check_tag(std::string_view key, std::string_view value) {
  // EC2: keys 1..128, values 0..256 characters; keys in metadata may not contain '/'
  // and may not be "." or "..".
  if (key.empty() || key.size() > 128) return "tag key must be 1..128 characters";
  if (value.size() > 256) return "tag value must be at most 256 characters";
  if (key == "." || key == ".." || key.find('/') != std::string_view::npos) {
    return "tag key '" + std::string(key) + "' is not allowed in metadata ('/', '.', '..')";
  }
  auto printable = [](char c) { return static_cast<unsigned char>(c) >= ' ' && c != 127; };
  if (!std::all_of(key.begin(), key.end(), printable) ||
      !std::all_of(value.begin(), value.end(), printable)) {
    return "tags must not contain control characters";
  }
  return {};
}

json options_json(const Options& o) {
  return {
      {"http_tokens", to_string(o.http_tokens)},
      {"hop_limit", o.hop_limit},
      {"http_endpoint", enabled_string(o.endpoint_enabled)},
      {"ipv6", enabled_string(o.ipv6_enabled)},
      {"tags", enabled_string(o.tags_enabled)},
      {"unauthorized_body", to_string(o.unauthorized_body)},
      {"instance_id", o.instance_id},
      {"ami_id", o.ami_id},
      {"region", o.region},
      {"availability_zone", o.availability_zone},
      {"tags_map", o.tags},
  };
}

json faults_json(const Faults& f) {
  json after = nullptr;
  if (f.after_dropped_put != AfterDroppedPut::none) after = to_string(f.after_dropped_put);
  return {
      {"delay_ms", f.delay.count()},
      {"hang", f.hang},
      {"reset", f.reset},
      {"status", f.status == 0 ? json(nullptr) : json(f.status)},
      {"share", f.share},
      {"no_server_header", f.no_server_header},
      {"oversized_bytes", f.oversized_bytes},
      {"malformed", f.malformed},
      {"trickle_ms", f.trickle.count()},
      {"oversized_header_bytes", f.oversized_header_bytes},
      {"no_ttl_header", f.no_ttl_header},
      {"token_lifetime_ms", f.token_lifetime ? json(f.token_lifetime->count()) : json(nullptr)},
      {"after_dropped_put", after},
      {"paths", f.paths},
  };
}

json log_entry_json(const LogEntry& e) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(e.time.time_since_epoch()).count();
  return {
      {"seq", e.seq},
      {"time", static_cast<double>(ms) / 1000.0},
      {"peer", e.peer},
      {"port", e.port},
      {"family", to_string(e.family)},
      {"method", e.method},
      {"path", e.path},
      {"has_token", e.has_token},
      {"token_valid", e.token_valid},
      {"has_xff", e.has_xff},
      {"ttl_header", e.ttl_header ? json(*e.ttl_header) : json(nullptr)},
      {"status", e.status},
      {"hop_limit", e.hop_limit ? json(*e.hop_limit) : json(nullptr)},
      {"faults", e.faults},
  };
}

std::string apply_options_patch(const json& patch, Options& o, std::chrono::milliseconds& pending) {
  pending = std::chrono::milliseconds(0);
  if (!patch.is_object()) return "the body must be a JSON object";
  bool region_set = false;
  bool az_set = false;
  for (const auto& [key, v] : patch.items()) {
    if (key == "http_tokens") {
      const auto t = v.is_string() ? parse_http_tokens(v.get<std::string>()) : std::nullopt;
      if (!t) return R"("http_tokens" must be "optional" or "required")";
      o.http_tokens = *t;
    } else if (key == "hop_limit") {
      const auto n = integer(v);
      if (!n || *n < kMinHopLimit || *n > kMaxHopLimit) {
        return "\"hop_limit\" must be an integer 1..64";
      }
      o.hop_limit = static_cast<int>(*n);
    } else if (key == "http_endpoint" || key == "ipv6" || key == "tags") {
      const auto b = v.is_string() ? parse_enabled(v.get<std::string>()) : std::nullopt;
      if (!b) return '"' + key + R"(" must be "enabled" or "disabled")";
      (key == "http_endpoint" ? o.endpoint_enabled
       : key == "ipv6"        ? o.ipv6_enabled
                              : o.tags_enabled) = *b;
    } else if (key == "unauthorized_body") {
      const auto b = v.is_string() ? parse_unauthorized_body(v.get<std::string>()) : std::nullopt;
      if (!b) return R"("unauthorized_body" must be "xhtml" or "empty")";
      o.unauthorized_body = *b;
    } else if (key == "instance_id" || key == "ami_id" || key == "region" ||
               key == "availability_zone") {
      if (auto e = need_string(v, key); !e.empty()) return e;
      const auto s = v.get<std::string>();
      if (auto e = check_identity(key, s); !e.empty()) return e;
      if (key == "instance_id") o.instance_id = s;
      if (key == "ami_id") o.ami_id = s;
      if (key == "region") {
        o.region = s;
        region_set = true;
      }
      if (key == "availability_zone") {
        o.availability_zone = s;
        az_set = true;
      }
    } else if (key == "tags_map") {
      if (!v.is_object()) return "\"tags_map\" must be an object of strings";
      if (v.size() > kMaxTags) return "\"tags_map\" holds at most 50 tags";
      std::map<std::string, std::string> tags;
      for (const auto& [k, tv] : v.items()) {
        if (!tv.is_string()) return "\"tags_map\" values must be strings";
        if (auto e = check_tag(k, tv.get<std::string>()); !e.empty()) return e;
        tags[k] = tv.get<std::string>();
      }
      o.tags = std::move(tags);
    } else if (key == "pending_ms") {
      const auto n = integer(v);
      if (!n || *n < 0 || *n > kMaxPending.count()) {
        return "\"pending_ms\" must be an integer 0.." + std::to_string(kMaxPending.count());
      }
      pending = std::chrono::milliseconds(*n);
    } else {
      return "unknown option \"" + key + "\"";
    }
  }
  // A region without an AZ would leave a stale AZ of another region behind.
  if (region_set && !az_set) o.availability_zone = o.region + "a";
  return {};
}

std::string parse_faults(const json& body, Faults& out) {
  if (!body.is_object()) return "the body must be a JSON object";
  Faults f;
  for (const auto& [key, v] : body.items()) {
    if (key == "delay_ms") {
      const auto n = integer(v);
      if (!n || *n < 0 || *n > kMaxFaultDelay.count()) {
        return "\"delay_ms\" must be an integer 0.." + std::to_string(kMaxFaultDelay.count());
      }
      f.delay = std::chrono::milliseconds(*n);
    } else if (key == "hang" || key == "reset" || key == "no_server_header" || key == "malformed" ||
               key == "no_ttl_header") {
      if (!v.is_boolean()) return "\"" + key + "\" must be true or false";
      const bool b = v.get<bool>();
      if (key == "hang") f.hang = b;
      if (key == "reset") f.reset = b;
      if (key == "no_server_header") f.no_server_header = b;
      if (key == "malformed") f.malformed = b;
      if (key == "no_ttl_header") f.no_ttl_header = b;
    } else if (key == "trickle_ms") {
      const auto n = integer(v);
      if (!n || *n < 0 || *n > kMaxTrickle.count()) {
        return "\"trickle_ms\" must be an integer 0.." + std::to_string(kMaxTrickle.count());
      }
      f.trickle = std::chrono::milliseconds(*n);
    } else if (key == "oversized_header_bytes") {
      const auto n = integer(v);
      if (!n || *n < 0 || static_cast<unsigned long long>(*n) > kMaxOversizedHeaderBytes) {
        return "\"oversized_header_bytes\" must be an integer 0.." +
               std::to_string(kMaxOversizedHeaderBytes);
      }
      f.oversized_header_bytes = static_cast<std::size_t>(*n);
    } else if (key == "token_lifetime_ms") {
      if (v.is_null()) {
        f.token_lifetime.reset();
        continue;
      }
      const auto n = integer(v);
      if (!n || *n < 0 || *n > kMaxTokenLifetime.count()) {
        return "\"token_lifetime_ms\" must be null or an integer 0.." +
               std::to_string(kMaxTokenLifetime.count());
      }
      f.token_lifetime = std::chrono::milliseconds(*n);
    } else if (key == "status") {
      const auto n = v.is_null() ? std::optional<long long>(0) : integer(v);
      if (!n || (*n != 0 && *n != 429 && *n != 503)) return "\"status\" must be 429 or 503";
      f.status = static_cast<int>(*n);
    } else if (key == "share") {
      if (!v.is_number()) return "\"share\" must be a number 0.0..1.0";
      const double s = v.get<double>();
      if (!(s >= 0.0 && s <= 1.0)) return "\"share\" must be a number 0.0..1.0";
      f.share = s;
    } else if (key == "oversized_bytes") {
      const auto n = integer(v);
      if (!n || *n < 0 || static_cast<unsigned long long>(*n) > kMaxOversizedBytes) {
        return "\"oversized_bytes\" must be an integer 0.." + std::to_string(kMaxOversizedBytes);
      }
      f.oversized_bytes = static_cast<std::size_t>(*n);
    } else if (key == "after_dropped_put") {
      const std::string s = v.is_string() ? v.get<std::string>() : v.is_null() ? "none" : "?";
      if (s == "hang") {
        f.after_dropped_put = AfterDroppedPut::hang;
      } else if (s == "reset") {
        f.after_dropped_put = AfterDroppedPut::reset;
      } else if (s == "none") {
        f.after_dropped_put = AfterDroppedPut::none;
      } else {
        return R"("after_dropped_put" must be "hang", "reset" or null)";
      }
    } else if (key == "paths") {
      if (!v.is_array() || v.size() > kMaxFaultPaths) {
        return "\"paths\" must be an array of at most 100 paths";
      }
      for (const auto& p : v) {
        if (!p.is_string() || p.get<std::string>().empty() || p.get<std::string>()[0] != '/' ||
            p.get<std::string>().size() > kMaxFaultPathLength) {
          return "\"paths\" entries must be strings starting with '/'";
        }
        f.paths.push_back(p.get<std::string>());
      }
    } else {
      return "unknown fault \"" + key + "\"";
    }
  }
  out = std::move(f);
  return {};
}

ControlReply handle_control(std::string_view method, std::string_view target, std::string_view body,
                            State& state, Now now) {
  const std::string_view path = path_of(target);
  auto parse_body = [&](json& out) -> std::string {
    out = json::parse(body, nullptr, false);
    if (out.is_discarded()) return "the body is not valid JSON";
    return {};
  };
  auto options_reply = [&] {
    const bool pending = state.pending(now.steady);
    json j = options_json(state.requested());
    j["state"] = pending ? "pending" : "applied";
    if (pending) {
      j["in_force"] = options_json(state.in_force(now.steady));
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(*state.pending_until() - now.steady);
      j["pending_ms_left"] = left.count();
    }
    return reply(200, j);
  };

  if (path == "/health") {
    if (method != "GET") return error(405, "use GET /health");
    return reply(200, json{{"ok", true}});
  }
  if (path == "/options") {
    if (method == "GET") return options_reply();
    if (method != "POST") return error(405, "use GET or POST /options");
    json patch;
    if (auto e = parse_body(patch); !e.empty()) return error(400, e);
    // Changes build on what was last asked for, like successive Modify calls.
    Options next = state.requested();
    std::chrono::milliseconds pending{0};
    if (auto e = apply_options_patch(patch, next, pending); !e.empty()) return error(400, e);
    state.set_options(std::move(next), pending, now.steady);
    return options_reply();
  }
  if (path == "/faults") {
    if (method == "GET") return reply(200, faults_json(state.faults));
    if (method != "POST") return error(405, "use GET or POST /faults");
    json j;
    if (auto e = parse_body(j); !e.empty()) return error(400, e);
    Faults f;
    if (auto e = parse_faults(j, f); !e.empty()) return error(400, e);
    state.faults = std::move(f);
    return reply(200, faults_json(state.faults));
  }
  if (path == "/requests") {
    if (method == "DELETE") {
      const auto n = state.log.entries().size();
      state.log.clear();
      return reply(200, json{{"cleared", n}});
    }
    if (method != "GET") return error(405, "use GET or DELETE /requests");
    const auto since = since_of(target);
    if (!since) return error(400, "the only query is ?since=SEQ");
    json arr = json::array();
    for (const auto& e : state.log.entries()) {
      if (e.seq > *since) arr.push_back(log_entry_json(e));
    }
    return reply(200, arr);
  }
  return error(404, "unknown control path; see tests/emulator/README.md");
}

}  // namespace imds::emu
