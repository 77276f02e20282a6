// Inference over observations: what they prove about the instance's metadata options and
// what each namespace experiences, per address family. Each rule is grounded in IMDS.md (the
// behaviour spec); nothing here does I/O or reads the clock or environment.
#include "inference.hpp"

#include <algorithm>
#include <optional>
#include <string>
#include <string_view>

#include "hops.hpp"
#include "observations.hpp"
#include "words.hpp"

namespace imds {

using namespace observations;

namespace {

std::string label(const TargetObservations& t) {
  if (t.target.name.empty()) return t.target.is_host ? "host" : "(unnamed namespace)";
  return printable(t.target.name, 64);
}

std::string trimmed(std::string_view s) {
  constexpr std::string_view ws = " \t\r\n";
  const auto first = s.find_first_not_of(ws);
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(ws);
  return std::string(s.substr(first, last - first + 1));
}

// ---- Identity (only validated values may ever reach a fix command) ----

bool lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

bool hex_id(std::string_view text, std::string_view prefix) {
  if (!text.starts_with(prefix)) return false;
  const auto rest = text.substr(prefix.size());
  return rest.size() >= 8 && rest.size() <= 17 && std::all_of(rest.begin(), rest.end(), lower_hex);
}

// Starts with a letter (so it can never read as a command-line option), ends with a letter
// or digit, only [a-z0-9-] in between.
bool region_shaped(std::string_view text, std::size_t max) {
  if (text.empty() || text.size() > max) return false;
  const auto lower_alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  return (text.front() >= 'a' && text.front() <= 'z') && lower_alnum(text.back()) &&
         std::all_of(text.begin(), text.end(), [&](char c) { return lower_alnum(c) || c == '-'; });
}

InstanceIdentity infer_identity(const TargetObservations* host) {
  InstanceIdentity id;
  if (host == nullptr) return id;
  const auto take = [](std::optional<std::string>& slot, const std::string& body,
                       bool (*valid)(std::string_view)) {
    if (slot) return;
    auto value = trimmed(body);
    if (valid(value)) slot = std::move(value);
  };
  for (Family f : kFamilies) {
    for (const auto& o : host->observations) {
      if (o.family != f || o.step == Step::token_put || o.step == Step::listing) continue;
      if (!ok(o.result) || o.result.body_truncated) continue;
      const std::string_view path = o.path;
      if (path.ends_with("/meta-data/instance-id")) {
        take(id.instance_id, o.result.body, is_instance_id);
      } else if (path.ends_with("/meta-data/ami-id")) {
        take(id.ami_id, o.result.body, is_ami_id);
      } else if (path.ends_with("/meta-data/placement/region")) {
        take(id.region, o.result.body, is_region);
      } else if (path.ends_with("/meta-data/placement/availability-zone")) {
        take(id.availability_zone, o.result.body, is_availability_zone);
      }
    }
  }
  return id;
}

// ---- Endpoint ----

struct EndpointVerdict {
  EndpointState state = EndpointState::unknown;
  UnreachableReason reason = UnreachableReason::none;
};

// IPv4 from the host namespace: the instance's own view of HttpEndpoint.
EndpointVerdict infer_endpoint(const TargetObservations* host) {
  if (host == nullptr) return {};
  std::vector<const Observation*> tried;
  std::vector<const Observation*> answers;
  for (const auto& o : host->observations) {
    if (o.family != Family::v4 || !attempted(o.result)) continue;
    tried.push_back(&o);
    if (answered(o.result)) answers.push_back(&o);
  }
  if (tried.empty()) return {};

  if (!answers.empty()) {
    const bool any_imds = std::any_of(answers.begin(), answers.end(),
                                      [](const Observation* o) { return from_imds(o->result); });
    // When the IMDS itself answered, an interceptor's answers do not describe it.
    std::vector<const Observation*> considered;
    for (const auto* o : answers) {
      if (!any_imds || from_imds(o->result)) considered.push_back(o);
    }
    // Disabled: the token PUT gets 403 (we never send X-Forwarded-For, the other documented
    // cause) and no metadata GET gets anything but 403.
    bool put_forbidden = false;
    bool get_not_forbidden = false;
    for (const auto* o : considered) {
      if (o->step == Step::token_put) {
        put_forbidden = put_forbidden || o->result.status == 403;
      } else if (o->result.status != 403) {
        get_not_forbidden = true;
      }
    }
    if (put_forbidden && !get_not_forbidden) return {EndpointState::disabled};
    if (any_imds) return {EndpointState::enabled};
    // Only something else answered: it relays the IMDS when its answers look like the IMDS's.
    const bool imds_like = std::any_of(considered.begin(), considered.end(), [](const auto* o) {
      const int s = o->result.status;
      return s == 200 || s == 401 || s == 404;
    });
    if (imds_like) return {EndpointState::enabled};
    return {EndpointState::unreachable, UnreachableReason::intercepted_error};
  }

  const auto any = [&](auto pred) { return std::any_of(tried.begin(), tried.end(), pred); };
  const auto outcome_is = [](Outcome x) {
    return [x](const Observation* o) { return o->result.outcome == x; };
  };
  const bool connected = any([](const Observation* o) {
    return o->result.connected || o->result.outcome == Outcome::reset;
  });
  if (connected) {
    return {EndpointState::unreachable, any(outcome_is(Outcome::error))
                                            ? UnreachableReason::intercepted_error
                                            : UnreachableReason::timeout};
  }
  if (any(outcome_is(Outcome::refused))) {
    return {EndpointState::unreachable, UnreachableReason::refused};
  }
  if (any(outcome_is(Outcome::unreachable))) {
    return {EndpointState::unreachable, UnreachableReason::no_route};
  }
  if (any(outcome_is(Outcome::blocked))) {
    return {EndpointState::unreachable, UnreachableReason::blackholed};
  }
  if (any(outcome_is(Outcome::timeout))) {
    return {EndpointState::unreachable, UnreachableReason::firewalled};
  }
  return {};  // only local errors: nothing is proven about the endpoint
}

// ---- HttpTokens ----

// Tokenless GETs are not hop-limited, so any namespace's answer tells; the IMDS's own
// answers (Server: EC2ws) from the host come first. The status is all that counts (the 401
// body varies).
HttpTokens infer_http_tokens(const Diagnosis& d) {
  const auto order = host_first(d);
  for (bool imds_only : {true, false}) {
    for (const auto* t : order) {
      for (Family f : kFamilies) {
        const Observation* o = find(*t, Step::v1_get, f);
        if (o == nullptr || !answered(o->result)) continue;
        if (imds_only && !from_imds(o->result)) continue;
        if (o->result.status == 200) return HttpTokens::optional;
        if (o->result.status == 401) return HttpTokens::required;
      }
    }
  }
  return HttpTokens::unknown;
}

// ---- Hop limit ----

struct Evidence {
  int value = 0;
  std::string why;
};

// A lost PUT answer farther away bounds the hop limit only when the host, where any answer
// arrives, got one: when the host's PUT hung or was reset too, the IMDS is not answering.
bool host_put_answered(const Diagnosis& d, Family f) {
  const TargetObservations* host = host_of(d);
  const Observation* put = host != nullptr ? find(*host, Step::token_put, f) : nullptr;
  return put != nullptr && answered(put->result);
}

}  // namespace

HopResolution resolve_hop_limit(const Diagnosis& d) {
  std::vector<Evidence> measured;  // hop limit read from a PUT response's TTL
  std::vector<Evidence> lower;     // hop limit >= value
  std::vector<Evidence> upper;     // hop limit <= value
  for (const auto* t : host_first(d)) {
    const auto dist = t->distance;
    if (!dist || *dist < 0) continue;  // without a distance, nothing is proven
    for (Family f : kFamilies) {
      const Observation* put = find(*t, Step::token_put, f);
      if (put == nullptr) continue;
      const HttpResult& r = put->result;
      // An interceptor's token and TTL say nothing about the IMDS's hop limit.
      if (from_imds(r) && r.status == 200) {
        if (r.ttl) {
          const int h = hop_limit_from_ttl(*r.ttl, *dist);
          if (h >= 1 && h <= kMaxHopLimit) {
            measured.push_back({h, label(*t) + "'s token PUT response arrived with TTL " +
                                       std::to_string(*r.ttl) + " " + hops(*dist) + " away"});
          }
        }
        if (*dist >= 1) {
          lower.push_back({*dist + 1, label(*t) + " got a token " + hops(*dist) + " away"});
        }
      } else if (*dist >= 1 && put_drop(r) != PutDrop::none && reached(*t, f) &&
                 host_put_answered(d, f)) {
        upper.push_back({*dist, label(*t) + " got no PUT response " + hops(*dist) +
                                    " away while the IMDS answered it otherwise"});
      }
    }
  }

  HopResolution out;
  HopLimit& h = out.limit;
  const Evidence* lo = nullptr;
  const Evidence* hi = nullptr;
  for (const auto& e : lower) {
    if (lo == nullptr || e.value > lo->value) lo = &e;
  }
  for (const auto& e : upper) {
    if (hi == nullptr || e.value < hi->value) hi = &e;
  }

  if (!measured.empty()) {
    h.exact = measured.front().value;
    h.method = HopLimitMethod::packet_ttl;
    for (const auto& m : measured) {
      if (m.value != *h.exact) {
        out.conflicts.push_back("packet TTLs disagree: " + measured.front().why + " (hop limit " +
                                std::to_string(*h.exact) + "), but " + m.why + " (hop limit " +
                                std::to_string(m.value) + ")");
      }
    }
  } else if (d.searched_hop_limit && *d.searched_hop_limit >= 1 &&
             *d.searched_hop_limit <= kMaxHopLimit) {
    h.exact = *d.searched_hop_limit;
    h.method = HopLimitMethod::min_ttl_search;
  }

  if (h.exact) {
    const std::string exact = std::to_string(*h.exact);
    if (lo != nullptr && *h.exact < lo->value) {
      out.conflicts.push_back("hop limit " + exact + " (" + method_words(h.method) + ") contradicts: " + lo->why +
                              ", which needs at least " + std::to_string(lo->value));
    }
    if (hi != nullptr && *h.exact > hi->value) {
      out.conflicts.push_back("hop limit " + exact + " (" + method_words(h.method) + ") contradicts: " + hi->why +
                              ", which suggests at most " + std::to_string(hi->value));
    }
    h.lower = h.upper = *h.exact;
  } else if (lo != nullptr || hi != nullptr) {
    h.method = HopLimitMethod::bounds;
    h.lower = lo != nullptr ? lo->value : 1;
    h.upper = hi != nullptr ? hi->value : kMaxHopLimit;
    if (h.lower > h.upper) {
      // A token that arrived is hard proof; a missing response may have other causes.
      out.conflicts.push_back(lo->why + " (hop limit >= " + std::to_string(lo->value) + "), but " +
                              hi->why + " (hop limit <= " + std::to_string(hi->value) + ")");
      h.upper = kMaxHopLimit;
    }  // lower == upper is a proven value, but not a measured one: exact stays unset
  } else {
    h.method = HopLimitMethod::none;
  }
  return out;
}

namespace {

// ---- IPv6, tags, interception ----

// IMDS.md: a disabled IPv6 endpoint has been seen as "network unreachable"; the emulator
// closes its listener (refused). Timeouts alone prove nothing.
Tristate infer_ipv6(const TargetObservations* host) {
  if (host == nullptr) return Tristate::unknown;
  bool off = false;
  for (const auto& o : host->observations) {
    if (o.family != Family::v6) continue;
    if (answered(o.result)) return Tristate::yes;
    off = off || o.result.outcome == Outcome::refused || o.result.outcome == Outcome::unreachable ||
          o.result.outcome == Outcome::blocked;
  }
  return off ? Tristate::no : Tristate::unknown;
}

// `tags/` is in the listing only with InstanceMetadataTags=enabled (tags/instance itself
// has been seen answering 200 with tags disabled, so only the listing counts).
Tristate infer_tags(const TargetObservations* host) {
  if (host == nullptr) return Tristate::unknown;
  for (Family f : kFamilies) {
    const Observation* o = find(*host, Step::listing, f);
    if (o == nullptr || !ok(o->result)) continue;
    std::string_view body = o->result.body;
    while (!body.empty()) {
      const auto nl = body.find('\n');
      const auto line = trimmed(body.substr(0, nl));
      if (line == "tags/") return Tristate::yes;
      body = nl == std::string_view::npos ? std::string_view{} : body.substr(nl + 1);
    }
    if (!o->result.body_truncated) return Tristate::no;
  }
  return Tristate::unknown;
}

Tristate infer_interception(const Diagnosis& d) {
  Tristate seen = Tristate::unknown;
  for (const auto& t : d.targets) {
    for (const auto& o : t.observations) {
      if (!answered(o.result)) continue;
      if (!from_imds(o.result)) return Tristate::yes;
      seen = Tristate::no;
    }
  }
  return seen;
}

// ---- Per-target verdicts, one per address family ----

std::string works_summary(std::optional<int> dist, bool is_host, const HopLimit& limit) {
  if (!dist) return "IMDSv2 works";
  if (is_host || *dist == 0) {
    return limit.exact ? "IMDSv2 works (hop limit " + std::to_string(*limit.exact) + ")"
                       : "IMDSv2 works";
  }
  if (limit.exact) {
    return "IMDSv2 works (hop limit " + std::to_string(*limit.exact) + " >= " + hops(*dist) +
           " + 1)";
  }
  return "IMDSv2 works (token received " + hops(*dist) + " away)";
}

std::string no_token_summary(const HttpResult& put, std::optional<int> dist, const HopLimit& limit,
                             EndpointState endpoint) {
  const std::string base = "no IMDSv2 token: ";
  const PutDrop drop = put_drop(put);
  if (drop != PutDrop::none) {
    const std::string how = drop == PutDrop::reset ? "; the connection was reset" : "";
    if (drop == PutDrop::predicted && put.prediction) {
      return base + "PUT response dropped after " + hops(put.prediction->distance) +
             " (hop limit " + std::to_string(put.prediction->host_ttl) + ")";
    }
    if (dist && *dist >= 1 && limit.exact && !put_response_crosses(*limit.exact, *dist)) {
      return base + "PUT response dropped after " + hops(*dist) + " (hop limit " +
             std::to_string(*limit.exact) + how + ")";
    }
    const std::string what =
        drop == PutDrop::reset ? "PUT connection reset" : "PUT response never arrived";
    if (dist && *dist >= 1) {
      if (limit.exact) {
        return base + what + " " + hops(*dist) + " away, although hop limit " +
               std::to_string(*limit.exact) + " reaches that far";
      }
      return base + what + " " + hops(*dist) + " away (hop limit too low?)";
    }
    return base + what;
  }
  if (answered(put)) {
    std::string s = base + "PUT answered HTTP " + std::to_string(put.status);
    if (put.status == 403 && endpoint == EndpointState::disabled) s += " (endpoint disabled)";
    return s;
  }
  return base + "PUT " + result_words(put);
}

// The reason a family does not reach the IMDS, from its requests' transport failures.
UnreachableReason unreachable_reason(const TargetObservations& t, Family f) {
  bool refused = false;
  bool no_route = false;
  bool blocked = false;
  bool silent = false;
  for (const auto& o : t.observations) {
    if (o.family != f || !attempted(o.result)) continue;
    const HttpResult& r = o.result;
    refused = refused || r.outcome == Outcome::refused;
    no_route = no_route || r.outcome == Outcome::unreachable;
    blocked = blocked || r.outcome == Outcome::blocked;
    silent = silent || (r.outcome == Outcome::timeout && !r.connected && !r.cut_by_deadline);
  }
  if (no_route) return UnreachableReason::no_route;
  if (blocked) return UnreachableReason::blackholed;
  if (refused) return UnreachableReason::refused;
  if (silent) return UnreachableReason::firewalled;
  return UnreachableReason::none;
}

FamilyVerdict family_verdict(const TargetObservations& t, Family f, const Inference& inf) {
  FamilyVerdict v{f};
  const Observation* put = find(t, Step::token_put, f);
  const Observation* v2 = find(t, Step::v2_get, f);
  const Observation* v1 = find(t, Step::v1_get, f);
  v.predicted = put != nullptr && predicted_drop(put->result);
  v.probed = v.predicted || std::any_of(t.observations.begin(), t.observations.end(),
                                        [f](const Observation& o) {
                                          return o.family == f && attempted(o.result);
                                        });
  if (!v.probed) {
    if (!t.error.empty()) {
      v.summary = "not probed: " + printable(t.error);
    } else if (put != nullptr) {
      v.summary = "not probed (" + skip_words(put->result) + ")";
    } else {
      v.summary = "not probed";
    }
    return v;
  }

  if (reached(t, f)) {
    v.reachable = Tristate::yes;
  } else if (const auto why = unreachable_reason(t, f); why != UnreachableReason::none) {
    v.reachable = Tristate::no;
    v.unreachable_reason = why;
  }

  // IMDSv2: a token, and data with it. What the deadline cut proves nothing.
  if (put != nullptr) v.put_drop = put_drop(put->result);
  if (put != nullptr && ok(put->result)) {
    if (v2 != nullptr && attempted(v2->result) && !cut_short(v2->result)) {
      v.imdsv2 = ok(v2->result) ? Tristate::yes : Tristate::no;
    } else if (v2 == nullptr || !cut_short(v2->result)) {
      v.imdsv2 = Tristate::yes;
    }
  } else if (v.reachable == Tristate::no ||
             (put != nullptr && (v.predicted || (attempted(put->result) && !cut_short(put->result))))) {
    v.imdsv2 = Tristate::no;
  }

  // IMDSv1: a tokenless GET answers 200. A throttled or odd answer (429, 503, 404) says
  // nothing either way; a failed request, a 401 or a 403 means no.
  const bool v1_sent = v1 != nullptr && attempted(v1->result) && !cut_short(v1->result);
  const bool v1_inconclusive = v1_sent && answered(v1->result) && v1->result.status != 200 &&
                               v1->result.status != 401 && v1->result.status != 403;
  if (v1_sent && ok(v1->result)) {
    v.imdsv1 = Tristate::yes;
  } else if (inf.http_tokens == HttpTokens::required || v.reachable == Tristate::no ||
             (v1_sent && !v1_inconclusive)) {
    v.imdsv1 = Tristate::no;
  }

  // One line for people.
  if (v.reachable == Tristate::no) {
    const bool off = f == Family::v6 && inf.ipv6 == Tristate::no;
    v.summary = off ? "IPv6 endpoint off (" + unreachable_words(v.unreachable_reason) + ")"
                    : "IMDS unreachable: " + unreachable_words(v.unreachable_reason);
  } else if (v.imdsv2 == Tristate::yes) {
    v.summary = works_summary(t.distance, t.target.is_host, inf.hop_limit);
  } else if (v.imdsv2 == Tristate::no && put != nullptr && ok(put->result)) {
    v.summary = "token received, but the GET with it failed: " + result_words(v2->result);
  } else if (v.imdsv2 == Tristate::no && put != nullptr) {
    v.summary = no_token_summary(put->result, t.distance, inf.hop_limit, inf.endpoint);
  } else if (put != nullptr) {
    v.summary = "IMDSv2 not known (" + result_words(put->result) + ")";
  } else {
    v.summary = "IMDSv2 not tested";
  }
  if (v.imdsv2 == Tristate::no && v.reachable != Tristate::no) {
    if (v.imdsv1 == Tristate::yes) {
      v.summary += "; tokenless IMDSv1 answers";
    } else if (v1_sent && answered(v1->result) && v1->result.status == 401) {
      v.summary += "; IMDSv1 rejected (401): no metadata at all";
    }
  }
  return v;
}

TargetVerdict verdict_for(const TargetObservations& t, const Inference& inf) {
  TargetVerdict v;
  v.target = t.target.name;
  v.distance = t.distance;
  v.v4 = family_verdict(t, Family::v4, inf);
  v.v6 = family_verdict(t, Family::v6, inf);
  return v;
}

}  // namespace

bool is_instance_id(std::string_view text) { return hex_id(text, "i-"); }
bool is_ami_id(std::string_view text) { return hex_id(text, "ami-"); }
bool is_region(std::string_view text) { return region_shaped(text, 30); }
bool is_availability_zone(std::string_view text) { return region_shaped(text, 32); }

Inference infer(const Diagnosis& diagnosis) {
  Inference inf;
  const TargetObservations* host = host_of(diagnosis);
  const EndpointVerdict endpoint = infer_endpoint(host);
  inf.endpoint = endpoint.state;
  inf.unreachable_reason = endpoint.reason;
  inf.http_tokens = infer_http_tokens(diagnosis);
  inf.hop_limit = resolve_hop_limit(diagnosis).limit;
  inf.ipv6 = infer_ipv6(host);
  inf.tags = infer_tags(host);
  inf.interception = infer_interception(diagnosis);
  if (diagnosis.proxy.variable && !diagnosis.proxy.no_proxy_covers_imds) {
    inf.proxy_warnings.push_back(*diagnosis.proxy.variable);
  }
  inf.instance = infer_identity(host);
  for (const auto& t : diagnosis.targets) inf.targets.push_back(verdict_for(t, inf));
  return inf;
}

}  // namespace imds
