// Inference over observations and the findings built from it. Each rule is grounded in
// IMDS.md (the behaviour spec); nothing here does I/O or reads the clock or environment.
#include "inference.hpp"

#include <algorithm>
#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace imds {

namespace {

constexpr std::string_view kImdsServer = "EC2ws";
constexpr std::array kFamilies{Family::v4, Family::v6};

// ---- Reading observations ----

bool answered(const HttpResult& r) { return r.outcome == Outcome::http; }
bool attempted(const HttpResult& r) { return r.outcome != Outcome::skipped; }
bool from_imds(const HttpResult& r) { return answered(r) && r.server && *r.server == kImdsServer; }
bool ok(const HttpResult& r) { return answered(r) && r.status == 200; }

// Collection skips a container's PUT when the host saw the PUT response arrive with a TTL
// no larger than the container's distance: the answer is known without sitting out a timeout.
bool predicted_drop(const HttpResult& r) {
  return r.outcome == Outcome::skipped && r.skip_reason.starts_with("predicted");
}

// The PUT response was lost on its way back (or would have been): what a hop limit that is
// too low looks like from the caller's side (a read timeout, once seen as ECONNRESET).
bool put_dropped(const HttpResult& r) {
  return predicted_drop(r) || r.outcome == Outcome::timeout || r.outcome == Outcome::reset;
}

const Observation* find(const TargetObservations& t, Step step, Family family) {
  for (const auto& o : t.observations) {
    if (o.step == step && o.family == family) return &o;
  }
  return nullptr;
}

const TargetObservations* host_of(const Diagnosis& d) {
  for (const auto& t : d.targets) {
    if (t.target.is_host) return &t;
  }
  return nullptr;
}

// Host first, then the others in their order: host evidence is the most direct.
std::vector<const TargetObservations*> host_first(const Diagnosis& d) {
  std::vector<const TargetObservations*> out;
  for (const auto& t : d.targets) {
    if (t.target.is_host) out.push_back(&t);
  }
  for (const auto& t : d.targets) {
    if (!t.target.is_host) out.push_back(&t);
  }
  return out;
}

std::optional<int> distance_of(const TargetObservations& t) {
  if (t.distance) return t.distance;
  if (t.target.is_host) return 0;
  return std::nullopt;
}

// The family that describes a target in its verdict: IPv4 when it was probed, else IPv6.
Family primary_family(const TargetObservations& t) {
  for (const auto& o : t.observations) {
    if (o.family == Family::v4 && attempted(o.result)) return Family::v4;
  }
  for (const auto& o : t.observations) {
    if (o.family == Family::v6 && attempted(o.result)) return Family::v6;
  }
  return Family::v4;
}

// Something at the IMDS address talked to this namespace: a handshake or an HTTP answer.
bool reached(const TargetObservations& t, Family f) {
  return std::any_of(t.observations.begin(), t.observations.end(), [f](const Observation& o) {
    return o.family == f &&
           (answered(o.result) || o.result.connected || o.result.outcome == Outcome::reset);
  });
}

// Untrusted text (namespace names from the file system, IMDS bodies, error strings) made
// safe for a one-line message: control characters replaced, length bounded.
std::string printable(std::string_view text, std::size_t max = 80) {
  std::string out;
  for (char c : text.substr(0, max)) {
    const auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? '?' : c;
  }
  if (text.size() > max) out += "...";
  return out;
}

std::string label(const TargetObservations& t) {
  if (t.target.name.empty()) return t.target.is_host ? "host" : "(unnamed namespace)";
  return printable(t.target.name, 64);
}

std::string hops(int n) { return std::to_string(n) + (n == 1 ? " hop" : " hops"); }

std::string trimmed(std::string_view s) {
  constexpr std::string_view ws = " \t\r\n";
  const auto first = s.find_first_not_of(ws);
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(ws);
  return std::string(s.substr(first, last - first + 1));
}

std::string failure_words(const HttpResult& r) {
  switch (r.outcome) {
    case Outcome::http:
      return "HTTP " + std::to_string(r.status);
    case Outcome::timeout:
      return r.connected ? "connected, then no answer before the timeout" : "connect timed out";
    case Outcome::reset:
      return "connection reset";
    case Outcome::refused:
      return "connection refused";
    case Outcome::unreachable:
      return "no route (network unreachable)";
    case Outcome::error:
      return r.error.empty() ? "failed" : "failed: " + printable(r.error);
    case Outcome::skipped:
      return r.skip_reason.empty() ? "not sent" : "not sent: " + printable(r.skip_reason);
  }
  return "unknown outcome";
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

struct HopResolution {
  HopLimit limit;
  std::vector<std::string> conflicts;  // evidence that disagrees, in words
};

HopResolution resolve_hop_limit(const Diagnosis& d) {
  std::vector<Evidence> measured;  // hop limit read from a PUT response's TTL
  std::vector<Evidence> lower;     // hop limit >= value
  std::vector<Evidence> upper;     // hop limit <= value
  for (const auto* t : host_first(d)) {
    const auto dist = distance_of(*t);
    if (!dist || *dist < 0) continue;  // without a distance, nothing is proven
    for (Family f : kFamilies) {
      const Observation* put = find(*t, Step::token_put, f);
      if (put == nullptr) continue;
      const HttpResult& r = put->result;
      // An interceptor's token and TTL say nothing about the IMDS's hop limit.
      if (from_imds(r) && r.status == 200) {
        if (r.ttl) {
          const int h = *r.ttl + *dist;
          if (h >= 1 && h <= kMaxHopLimit) {
            measured.push_back({h, label(*t) + "'s token PUT response arrived with TTL " +
                                       std::to_string(*r.ttl) + " " + hops(*dist) + " away"});
          }
        }
        if (*dist >= 1) {
          lower.push_back({*dist + 1, label(*t) + " got a token " + hops(*dist) + " away"});
        }
      } else if (*dist >= 1 && put_dropped(r) && (predicted_drop(r) || reached(*t, f))) {
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
    h.method = "packet-ttl";
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
    h.method = "min-ttl-search";
  }

  if (h.exact) {
    const std::string exact = std::to_string(*h.exact);
    if (lo != nullptr && *h.exact < lo->value) {
      out.conflicts.push_back("hop limit " + exact + " (" + h.method + ") contradicts: " + lo->why +
                              ", which needs at least " + std::to_string(lo->value));
    }
    if (hi != nullptr && *h.exact > hi->value) {
      out.conflicts.push_back("hop limit " + exact + " (" + h.method + ") contradicts: " + hi->why +
                              ", which suggests at most " + std::to_string(hi->value));
    }
    h.lower = h.upper = *h.exact;
  } else if (lo != nullptr || hi != nullptr) {
    h.method = "bounds";
    h.lower = lo != nullptr ? lo->value : 1;
    h.upper = hi != nullptr ? hi->value : kMaxHopLimit;
    if (h.lower > h.upper) {
      // A token that arrived is hard proof; a missing response may have other causes.
      out.conflicts.push_back(lo->why + " (hop limit >= " + std::to_string(lo->value) + "), but " +
                              hi->why + " (hop limit <= " + std::to_string(hi->value) + ")");
      h.upper = kMaxHopLimit;
    } else if (h.lower == h.upper) {
      h.exact = h.lower;
    }
  } else {
    h.method = "none";
  }
  return out;
}

// ---- IPv6, tags, interception ----

// IMDS.md: a disabled IPv6 endpoint has been seen as "network unreachable"; the emulator
// closes its listener (refused). Timeouts alone prove nothing.
Tristate infer_ipv6(const TargetObservations* host) {
  if (host == nullptr) return Tristate::unknown;
  bool off = false;
  for (const auto& o : host->observations) {
    if (o.family != Family::v6) continue;
    if (answered(o.result)) return Tristate::yes;
    off = off || o.result.outcome == Outcome::refused || o.result.outcome == Outcome::unreachable;
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

// ---- Per-target verdicts ----

std::string works_summary(const TargetObservations& t, std::optional<int> dist,
                          const HopLimit& limit) {
  if (!dist) return "IMDSv2 works";
  if (t.target.is_host || *dist == 0) {
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
  if (put_dropped(put)) {
    if (dist && *dist >= 1 && limit.exact && *limit.exact <= *dist) {
      return base + "PUT response dropped after " + hops(*dist) + " (hop limit " +
             std::to_string(*limit.exact) +
             (put.outcome == Outcome::reset ? "; the connection was reset)" : ")");
    }
    const std::string what =
        put.outcome == Outcome::reset ? "PUT connection reset" : "PUT response never arrived";
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
  return base + "PUT " + failure_words(put);
}

TargetVerdict verdict_for(const TargetObservations& t, const Inference& inf) {
  TargetVerdict v;
  v.target = t.target.name;
  v.distance = distance_of(t);
  const Family f = primary_family(t);
  const Observation* put = find(t, Step::token_put, f);
  const Observation* v2 = find(t, Step::v2_get, f);
  const Observation* v1 = find(t, Step::v1_get, f);
  v.predicted = put != nullptr && predicted_drop(put->result);

  bool any_tried = false;
  bool refused_or_silent = false;
  for (const auto& o : t.observations) {
    if (o.family != f || !attempted(o.result)) continue;
    any_tried = true;
    const Outcome x = o.result.outcome;
    refused_or_silent = refused_or_silent || x == Outcome::refused || x == Outcome::unreachable ||
                        (x == Outcome::timeout && !o.result.connected);
  }
  if (reached(t, f)) {
    v.reachable = Tristate::yes;
  } else if (any_tried && refused_or_silent) {
    v.reachable = Tristate::no;
  }

  // IMDSv2: a token and data with it.
  if (put != nullptr && ok(put->result)) {
    const bool get_failed = v2 != nullptr && attempted(v2->result) && !ok(v2->result);
    v.imdsv2 = get_failed ? Tristate::no : Tristate::yes;
  } else if ((put != nullptr && (attempted(put->result) || v.predicted)) ||
             v.reachable == Tristate::no) {
    v.imdsv2 = Tristate::no;
  }

  // IMDSv1: a tokenless GET answers 200. A throttled or odd answer (429, 503, 404) says
  // nothing either way; a failed request, a 401 or a 403 means no.
  const bool v1_inconclusive = v1 != nullptr && answered(v1->result) && v1->result.status != 200 &&
                               v1->result.status != 401 && v1->result.status != 403;
  if (v1 != nullptr && ok(v1->result)) {
    v.imdsv1 = Tristate::yes;
  } else if (inf.http_tokens == HttpTokens::required || v.reachable == Tristate::no ||
             (v1 != nullptr && attempted(v1->result) && !v1_inconclusive)) {
    v.imdsv1 = Tristate::no;
  }

  // One line for people.
  if (!t.error.empty() && !any_tried) {
    v.summary = "not probed: " + printable(t.error);
  } else if (v.reachable == Tristate::no) {
    const Observation* first = nullptr;
    for (const auto& o : t.observations) {
      if (o.family == f && attempted(o.result)) {
        first = &o;
        break;
      }
    }
    v.summary = "IMDS unreachable: " + (first ? failure_words(first->result) : "no answer");
  } else if (v.imdsv2 == Tristate::yes) {
    v.summary = works_summary(t, v.distance, inf.hop_limit);
  } else if (v.imdsv2 == Tristate::no && put != nullptr && ok(put->result)) {
    v.summary = "token received, but the GET with it failed: " + failure_words(v2->result);
  } else if (v.imdsv2 == Tristate::no && put != nullptr) {
    v.summary = no_token_summary(put->result, v.distance, inf.hop_limit, inf.endpoint);
  } else if (put != nullptr) {
    v.summary = "IMDSv2 not tested (" + failure_words(put->result) + ")";
  } else {
    v.summary = "IMDSv2 not tested";
  }
  if (v.imdsv2 == Tristate::no && v.reachable != Tristate::no) {
    if (v.imdsv1 == Tristate::yes) {
      v.summary += "; tokenless IMDSv1 answers";
    } else if (v1 != nullptr && answered(v1->result) && v1->result.status == 401) {
      v.summary += "; IMDSv1 rejected (401): no metadata at all";
    }
  }
  return v;
}

// ---- Findings ----

struct FixContext {
  std::string instance_id = "<instance-id>";
  std::string region = "<region>";
  std::string ami_id = "<ami-id>";
};

FixContext fix_context(const Inference& inf) {
  FixContext c;
  // Re-checked here too: the Inference may have been built by someone else.
  if (inf.instance.instance_id && is_instance_id(*inf.instance.instance_id)) {
    c.instance_id = *inf.instance.instance_id;
  }
  if (inf.instance.region && is_region(*inf.instance.region)) c.region = *inf.instance.region;
  if (inf.instance.ami_id && is_ami_id(*inf.instance.ami_id)) c.ami_id = *inf.instance.ami_id;
  return c;
}

std::string modify_options(const FixContext& c, const std::string& options) {
  return "aws ec2 modify-instance-metadata-options --instance-id " + c.instance_id + " --region " +
         c.region + " " + options;
}

std::string ami_route(const FixContext& c) {
  return "# AMI builders: instances launched later from this AMI default to HttpTokens=required"
         " and hop limit 2\n"
         "aws ec2 modify-image-attribute --image-id " +
         c.ami_id + " --region " + c.region +
         " --imds-support v2.0\n"
         "# or when registering a new AMI:\n"
         "aws ec2 register-image ... --imds-support v2.0";
}

// How far the container namespaces probed are from the host.
struct ContainerDepth {
  int deepest = -1;         // largest measured distance; -1 without any
  bool unmeasured = false;  // a namespace that reaches the IMDS has no measured distance
};

ContainerDepth container_depth(const Diagnosis& d) {
  ContainerDepth depth;
  for (std::size_t i = 0; i < d.targets.size(); ++i) {
    const TargetObservations& t = d.targets[i];
    if (t.target.is_host) continue;
    if (t.distance) {
      depth.deepest = std::max(depth.deepest, *t.distance);
    } else if (i < d.inference.targets.size() && d.inference.targets[i].reachable != Tristate::no) {
      depth.unmeasured = true;
    }
  }
  return depth;
}

// Enough for every container namespace seen, and at least 2 (the AMI v2.0 default, which
// serves Docker bridge containers). Namespaces of unknown distance keep what they have now.
int recommended_hop_limit(const Diagnosis& d) {
  const ContainerDepth depth = container_depth(d);
  int want = std::max(2, depth.deepest + 1);
  if (depth.unmeasured && d.inference.hop_limit.exact) {
    want = std::max(want, *d.inference.hop_limit.exact);
  }
  return std::clamp(want, 1, kMaxHopLimit);
}

std::string hop_limit_option(int n) { return "--http-put-response-hop-limit " + std::to_string(n); }

std::string endpoint_words(const std::string& url) {
  return url.empty() ? std::string("the IMDS") : "the IMDS at " + printable(url);
}

constexpr std::string_view kSdkOptional =
    "SDKs there fall back to IMDSv1 after waiting for the token: botocore/boto3/AWS CLI wait "
    "1 s, then use IMDSv1 silently and pay that second again on every credential or region "
    "lookup; the Go SDK v2 tries 3 times (about 4 s), then uses IMDSv1 for the client's whole "
    "life; the JS SDK v3 waits 1 s (no retry) on every resolution; the Java SDK v2 waits "
    "AWS_METADATA_SERVICE_TIMEOUT, then caches \"no token\" and uses IMDSv1. It works, slowly, "
    "and only while HttpTokens stays optional: switching to required without raising the hop "
    "limit cuts this namespace off.";

constexpr std::string_view kSdkRequired =
    "SDKs there wait for the token (botocore/boto3/AWS CLI 1 s, Go SDK v2 about 4 s over 3 "
    "tries, JS SDK v3 1 s, Java SDK v2 AWS_METADATA_SERVICE_TIMEOUT), fall back to a tokenless "
    "GET and get 401: no region, no instance credentials, no metadata at all.";

constexpr std::string_view kSdkOnHttpError =
    "On a 403/404/405 answer to the PUT, botocore/boto3/AWS CLI and the Go SDK v2 switch to "
    "IMDSv1 (Go for the client's whole life), the JS SDK v3 turns tokens off for later calls and "
    "the Java SDK v2 caches \"no token\"; with HttpTokens=required those IMDSv1 requests get "
    "401.";

std::string switch_word(bool on) { return on ? "enabled" : "disabled"; }

class FindingList {
 public:
  void add(std::string id, Severity severity, std::string target, std::string summary,
           std::string detail, std::string fix = {}) {
    items_.push_back({std::move(id), severity, std::move(target), std::move(summary),
                      std::move(detail), std::move(fix)});
  }
  std::vector<Finding> sorted() && {
    std::stable_sort(items_.begin(), items_.end(),
                     [](const Finding& a, const Finding& b) { return a.severity > b.severity; });
    return std::move(items_);
  }

 private:
  std::vector<Finding> items_;
};

void endpoint_findings(const Diagnosis& d, const FixContext& c, FindingList& out) {
  const Inference& inf = d.inference;
  const std::string where = endpoint_words(d.endpoint_v4);
  if (inf.endpoint == EndpointState::unreachable) {
    std::string summary;
    std::string detail;
    switch (inf.unreachable_reason) {
      case UnreachableReason::refused:
        summary = where + " refused the connection from the host";
        detail =
            "Nothing listens at the IMDS address: this is most likely not an EC2 instance (or "
            "something local took the address).";
        break;
      case UnreachableReason::blackholed:
        summary = "no route from the host to " + where + " (network unreachable)";
        detail =
            "A blackhole or unreachable route covers the address (ECS awsvpc task networking "
            "blocks the IMDS this way), or this is not an EC2 instance. Check with "
            "`ip route get 169.254.169.254`.";
        break;
      case UnreachableReason::firewalled:
        summary = "connecting from the host to " + where + " timed out";
        detail =
            "No handshake completed: a firewall DROP rule for the address, or this is not an EC2 "
            "instance. Check with `nft list ruleset` or `iptables-save`.";
        break;
      case UnreachableReason::timeout:
        summary = "the host connected to " + where + " but got no HTTP answer";
        detail =
            "The handshake completed but no response arrived (timeout or reset): something "
            "other than the IMDS holds the address, or the IMDS is overloaded.";
        break;
      case UnreachableReason::intercepted_error:
      case UnreachableReason::none:
        summary = "something answers the host at " + where + ", but not as the IMDS";
        detail =
            "No answer carried `Server: EC2ws` or looked like an IMDS answer: a proxy or "
            "interceptor stands in the way and fails the requests.";
        break;
    }
    out.add("endpoint-unreachable", Severity::error, "", summary,
            detail + " Nothing can be learned about the metadata options from here.");
  } else if (inf.endpoint == EndpointState::disabled) {
    const bool intended = d.expectations.endpoint_enabled == false;
    out.add("endpoint-disabled", intended ? Severity::info : Severity::warning, "",
            "the instance metadata endpoint is disabled (HttpEndpoint=disabled)",
            "The token PUT and every metadata GET are answered 403. SDKs on this instance get no "
            "region and no instance credentials; cloud-init reports \"HTTP endpoint is "
            "disabled\".",
            intended ? "" : modify_options(c, "--http-endpoint enabled"));
  } else if (inf.endpoint == EndpointState::unknown) {
    std::string why = "no request from the host namespace produced a usable result";
    if (const auto* host = host_of(d); host == nullptr) {
      why = "the host namespace was not probed";
    } else if (!host->error.empty()) {
      why = "the host namespace could not be probed: " + printable(host->error);
    } else {
      for (const auto& o : host->observations) {
        if (o.family == Family::v4 && attempted(o.result)) {
          why = "the host's requests failed: " + failure_words(o.result);
          break;
        }
      }
    }
    out.add("endpoint-unknown", Severity::warning, "",
            "could not tell whether the IMDS endpoint is enabled", why + ".");
  }
}

void tokens_findings(const Diagnosis& d, const FixContext& c, FindingList& out) {
  const Inference& inf = d.inference;
  if (inf.http_tokens == HttpTokens::optional) {
    const int want = recommended_hop_limit(d);
    std::string options = "--http-tokens required";
    if (!inf.hop_limit.exact || *inf.hop_limit.exact < want)
      options += " " + hop_limit_option(want);
    options += " --http-endpoint enabled";
    const bool intended = d.expectations.http_tokens == HttpTokens::optional;
    out.add("tokens-optional", intended ? Severity::notice : Severity::warning, "",
            "HttpTokens is optional: IMDSv1 answers tokenless GETs (open to SSRF)",
            "Any request an attacker can make the instance send (server-side request forgery, "
            "an open proxy) reads metadata and the instance role's credentials without a "
            "token. Before switching, find the remaining IMDSv1 callers with the CloudWatch "
            "metric MetadataNoToken; the hop limit in the fix is what the container "
            "namespaces probed here need.",
            modify_options(c, options) + "\n" + ami_route(c));
  }
  const auto* host = host_of(d);
  // Why no tokenless GET was sent from the host, when none was.
  const std::optional<std::string> v1_skipped = [&]() -> std::optional<std::string> {
    if (!d.v1_probed) return "--no-v1";
    if (host == nullptr) return std::nullopt;
    const Observation* o = find(*host, Step::v1_get, Family::v4);
    if (o == nullptr || o->result.outcome != Outcome::skipped) return std::nullopt;
    return o->result.skip_reason.empty() ? "not sent" : printable(o->result.skip_reason);
  }();
  if (v1_skipped && inf.http_tokens == HttpTokens::unknown) {
    bool v2_works = false;
    for (const auto& v : inf.targets) {
      if (host != nullptr && v.target == host->target.name && v.imdsv2 == Tristate::yes) {
        v2_works = true;
      }
    }
    out.add("v1-not-probed", Severity::info, "",
            "IMDSv1 was not probed (" + *v1_skipped + "): HttpTokens cannot be known",
            std::string("Without one tokenless GET nobody can tell from inside whether IMDSv1 is "
                        "still open (HttpTokens optional) or rejected (required); no metadata "
                        "path exposes the option. ") +
                (v2_works ? "The token flow worked, so IMDSv2 itself works. " : "") +
                "Run once without --no-v1 (it adds one count to MetadataNoToken), or ask the "
                "EC2 API:",
            "aws ec2 describe-instances --instance-ids " + c.instance_id + " --region " + c.region +
                " --query 'Reservations[].Instances[].MetadataOptions'");
  }
}

void target_findings(const Diagnosis& d, const FixContext& c, FindingList& out) {
  const Inference& inf = d.inference;
  if (inf.endpoint != EndpointState::enabled) return;  // covered by the endpoint finding
  const int want = recommended_hop_limit(d);
  for (std::size_t i = 0; i < d.targets.size() && i < inf.targets.size(); ++i) {
    const TargetObservations& t = d.targets[i];
    const TargetVerdict& v = inf.targets[i];
    const std::string who = label(t);
    if (v.reachable == Tristate::no) {
      if (!t.target.is_host) {
        out.add("container-unreachable", Severity::notice, t.target.name, who + ": " + v.summary,
                "A blackhole route (ECS awsvpc blocking) or a firewall DROP keeps this namespace "
                "away from the IMDS; when that is intended there is nothing to do. SDKs there "
                "wait for their connect timeouts and find no credentials.");
      }
      continue;
    }
    if (v.imdsv2 != Tristate::no) continue;
    const Family f = primary_family(t);
    const Observation* put = find(t, Step::token_put, f);
    if (put == nullptr) continue;
    const HttpResult& r = put->result;
    if (t.target.is_host) {
      const Observation* v2 = find(t, Step::v2_get, f);
      const HttpResult& failing = ok(r) && v2 != nullptr ? v2->result : r;
      const bool throttled = answered(failing) && (failing.status == 429 || failing.status == 503);
      out.add("host-no-token", throttled ? Severity::warning : Severity::error, t.target.name,
              "IMDSv2 fails in the host namespace: " + v.summary,
              throttled ? "The IMDS throttled the request (429/503): a transient state, but "
                          "SDKs on the instance meet it too. Probe again later."
                        : "The hop limit cannot cause this on the host (it is at least 1): a "
                          "firewall rule, an interceptor or an IMDS fault is in the way.");
      continue;
    }
    std::string detail;
    std::string fix;
    Severity severity = Severity::warning;
    if (ok(r)) {
      detail = "The token arrived but the metadata GET with it failed.";
    } else if (put_dropped(r)) {
      if (v.imdsv1 == Tristate::no) {
        severity = Severity::error;
        detail = std::string(kSdkRequired);
      } else if (v.imdsv1 == Tristate::yes) {
        detail = std::string(kSdkOptional);
      } else {
        detail = "If HttpTokens is optional: " + std::string(kSdkOptional) +
                 " If it is required: " + std::string(kSdkRequired);
      }
      if (r.outcome == Outcome::reset) {
        detail +=
            " Here the dropped PUT ends in a connection reset, so clients fail at once "
            "instead of waiting.";
      }
      if (!v.distance) {
        detail +=
            " This namespace's distance could not be measured (that needs packet sockets, "
            "CAP_NET_RAW): the hop limit in the fix serves Docker bridge containers; "
            "Docker-in-Docker and some CNIs need one more.";
      }
      int need = v.distance ? std::max(want, *v.distance + 1) : want;
      if (!v.distance && inf.hop_limit.exact) {
        need = std::min(kMaxHopLimit, std::max(need, *inf.hop_limit.exact + 1));
      }
      fix = modify_options(c, hop_limit_option(need) + " --http-endpoint enabled");
      if (need <= 2) fix += "\n" + ami_route(c);
    } else {
      detail = "The PUT was answered, not dropped, so the hop limit is not the cause. " +
               std::string(kSdkOnHttpError);
    }
    if (v.predicted) {
      detail +=
          " (Predicted from the TTL the host's PUT response arrived with; this namespace's "
          "PUT was not sent.)";
    }
    out.add("container-no-token", severity, t.target.name, who + ": " + v.summary, detail, fix);
  }
}

void hop_limit_findings(const Diagnosis& d, const FixContext& c, FindingList& out) {
  const Inference& inf = d.inference;
  const HopResolution resolution = resolve_hop_limit(d);
  if (!resolution.conflicts.empty()) {
    std::string detail;
    for (const auto& conflict : resolution.conflicts) detail += conflict + ". ";
    detail +=
        "Likely causes: the options changed during the probe (ModifyInstanceMetadataOptions "
        "is pending for a while), a fault or firewall that drops responses, or a wrong "
        "distance for a namespace. The hop limit shown keeps the evidence of tokens that "
        "arrived.";
    out.add("hop-limit-bounds-contradict", Severity::warning, "",
            "the hop-limit evidence contradicts itself", detail);
  }
  if (inf.endpoint != EndpointState::enabled || !inf.hop_limit.exact) return;
  const int want = recommended_hop_limit(d);
  const int have = *inf.hop_limit.exact;
  // Without the distance of every namespace that reaches the IMDS, lowering it is a guess.
  const ContainerDepth depth = container_depth(d);
  if (have > want && !depth.unmeasured) {
    const int deepest = depth.deepest;
    const std::string need =
        deepest >= 0 ? "the deepest container namespace probed is " + hops(deepest) +
                           " away and needs " + std::to_string(deepest + 1)
                     : "no container namespace was probed; 2 serves Docker bridge containers";
    out.add("hop-limit-excess", Severity::notice, "",
            "hop limit " + std::to_string(have) + " is larger than needed (" +
                std::to_string(want) + " suffices)",
            "Every extra hop lets the token PUT response travel further from the instance (into "
            "nested containers or forwarded networks); " +
                need +
                ". Namespaces not probed here (started later, deeper nesting) may need "
                "more.",
            modify_options(c, hop_limit_option(want) + " --http-endpoint enabled"));
  }
}

void interception_findings(const Diagnosis& d, FindingList& out) {
  for (const auto& t : d.targets) {
    std::optional<std::string> foreign;
    std::size_t count = 0;
    for (const auto& o : t.observations) {
      if (!answered(o.result) || from_imds(o.result)) continue;
      ++count;
      if (!foreign) {
        foreign = o.result.server ? "Server: " + printable(*o.result.server, 40)
                                  : std::string("no Server header");
      }
    }
    if (!foreign) continue;
    out.add("interception-suspected", Severity::warning, t.target.name,
            label(t) + ": " + std::to_string(count) + " answer(s) came without Server: EC2ws (" +
                *foreign + ")",
            "Every IMDS answer carries `Server: EC2ws`; these came from something in between "
            "(kube2iam, kiam, a corporate or sidecar proxy). What this namespace sees describes "
            "that interceptor, not necessarily the instance's metadata options.");
  }
}

void environment_findings(const Diagnosis& d, FindingList& out) {
  const Inference& inf = d.inference;
  for (const auto& variable : inf.proxy_warnings) {
    out.add("proxy-captures-imds", Severity::warning, "",
            printable(variable, 32) +
                " is set and no_proxy does not cover 169.254.169.254: HTTP clients here send "
                "IMDS requests to the proxy",
            "curl and SDKs that honour proxy variables would ask the proxy for "
            "http://169.254.169.254; a proxy that adds X-Forwarded-For makes the token PUT fail "
            "with 403, and one that forwards the request exposes the metadata. The probe itself "
            "never uses a proxy; this concerns the environment it was started from.",
            "export no_proxy=\"169.254.169.254,fd00:ec2::254${no_proxy:+,$no_proxy}\"\n"
            "export NO_PROXY=\"$no_proxy\"");
  }

  // Collection marks what the overall deadline cut (probe/collect.hpp): verdicts resting on
  // those requests are unknown, and a run that learned less than it was asked must not
  // pass for healthy.
  std::size_t cut = 0;
  for (const auto& t : d.targets) {
    for (const auto& o : t.observations) {
      const HttpResult& r = o.result;
      if ((r.outcome == Outcome::skipped &&
           r.skip_reason.starts_with("not started before the overall deadline")) ||
          (r.outcome == Outcome::timeout && r.error.starts_with("overall deadline"))) {
        ++cut;
      }
    }
  }
  if (cut > 0) {
    out.add("run-incomplete", Severity::warning, "",
            std::to_string(cut) + " request(s) were cut short by the overall deadline",
            "The verdicts that rest on them are unknown. Many namespaces, a slow or throttled "
            "IMDS, or firewalled namespaces that eat connect timeouts make a run longer.",
            "imds-probe --deadline 30s ...   # or probe fewer namespaces at once");
  }

  std::size_t throttled = 0;
  std::size_t total = 0;
  for (const auto& t : d.targets) {
    for (const auto& o : t.observations) {
      if (!answered(o.result)) continue;
      ++total;
      if (o.result.status == 429 || o.result.status == 503) ++throttled;
    }
  }
  if (throttled > 0) {
    out.add("throttled", Severity::warning, "",
            std::to_string(throttled) + " of " + std::to_string(total) +
                " answers were 429/503 (throttled)",
            "The IMDS throttles per instance (IMDS, DNS and NTP share 1024 packets/s); verdicts "
            "that rest on throttled answers are uncertain. Something on this instance may be "
            "polling the IMDS too often; clients should back off exponentially.");
  }

  for (const auto& t : d.targets) {
    if (t.error.empty()) continue;
    out.add("target-not-probed", Severity::warning, t.target.name,
            label(t) + ": could not be probed: " + printable(t.error),
            "This namespace's verdict is missing; entering another namespace needs CAP_SYS_ADMIN "
            "(and CAP_SYS_PTRACE for another user's /proc/PID/ns/net).");
  }
}

void policy_findings(const Diagnosis& d, const FixContext& c, FindingList& out) {
  const Expectations& e = d.expectations;
  const Inference& inf = d.inference;
  const auto unverifiable = [&](std::string id, const std::string& what, std::string why) {
    out.add(std::move(id), Severity::warning, "", "cannot verify the expected " + what,
            std::move(why));
  };

  if (e.http_tokens && *e.http_tokens != HttpTokens::unknown) {
    const std::string want = std::string(to_string(*e.http_tokens));
    if (inf.http_tokens == HttpTokens::unknown) {
      unverifiable("policy-http-tokens", "HttpTokens=" + want,
                   d.v1_probed ? "No tokenless GET was answered, so HttpTokens is unknown."
                               : "IMDSv1 was not probed (--no-v1), so HttpTokens is unknown; run "
                                 "without --no-v1 to verify.");
    } else if (inf.http_tokens != *e.http_tokens) {
      std::string options = "--http-tokens " + want;
      const int hop = recommended_hop_limit(d);
      if (*e.http_tokens == HttpTokens::required &&
          (!inf.hop_limit.exact || *inf.hop_limit.exact < hop)) {
        options += " " + hop_limit_option(hop);
      }
      std::string fix = modify_options(c, options + " --http-endpoint enabled");
      if (*e.http_tokens == HttpTokens::required) fix += "\n" + ami_route(c);
      out.add("policy-http-tokens", Severity::error, "",
              "HttpTokens is " + std::string(to_string(inf.http_tokens)) + ", expected " + want,
              "The policy (--expect) asks for HttpTokens=" + want + ".", fix);
    }
  }

  if (e.hop_limit_min || e.hop_limit_max) {
    const int min = e.hop_limit_min.value_or(1);
    const int max = e.hop_limit_max.value_or(kMaxHopLimit);
    const std::string want = min == max ? std::to_string(min)
                             : max >= kMaxHopLimit
                                 ? ">= " + std::to_string(min)
                                 : std::to_string(min) + ".." + std::to_string(max);
    const HopLimit& h = inf.hop_limit;
    const bool known = h.method != "none";
    if (known && (h.upper < min || h.lower > max)) {
      const int set = e.hop_limit_max ? min : std::max(min, recommended_hop_limit(d));
      out.add("policy-hop-limit", Severity::error, "",
              "hop limit is " + describe_hop_limit(h) + ", expected " + want,
              "The policy (--expect) asks for a hop limit of " + want + ".",
              modify_options(c, hop_limit_option(std::min(set, max)) + " --http-endpoint enabled"));
    } else if (!known || h.lower < min || h.upper > max) {
      unverifiable("policy-hop-limit", "hop limit " + want,
                   "The hop limit is only known as " + describe_hop_limit(h) +
                       ". Run with CAP_NET_RAW (packet TTLs) or --exact-hop-limit, or with a "
                       "container namespace (--simulate-container), to pin it down.");
    }
  }

  if (e.endpoint_enabled) {
    const bool want = *e.endpoint_enabled;
    const EndpointState have = inf.endpoint;
    if (have == EndpointState::enabled || have == EndpointState::disabled) {
      if ((have == EndpointState::enabled) != want) {
        out.add(
            "policy-endpoint", Severity::error, "",
            "the metadata endpoint is " + switch_word(!want) + ", expected " + switch_word(want),
            "The policy (--expect) asks for HttpEndpoint=" + switch_word(want) + ".",
            modify_options(c, "--http-endpoint " + switch_word(want)));
      }
    } else {
      unverifiable("policy-endpoint", "endpoint=" + switch_word(want),
                   "The IMDS did not answer the host, so whether HttpEndpoint is enabled or "
                   "disabled cannot be seen from here.");
    }
  }

  const auto check_switch = [&](const std::optional<bool>& expected, Tristate have,
                                const std::string& id, const std::string& name,
                                const std::string& option, const std::string& unknown_why) {
    if (!expected) return;
    const bool want = *expected;
    if (have == Tristate::unknown) {
      unverifiable(id, name + "=" + switch_word(want), unknown_why);
    } else if ((have == Tristate::yes) != want) {
      out.add(id, Severity::error, "",
              name + " is " + switch_word(!want) + ", expected " + switch_word(want),
              "The policy (--expect) asks for " + name + "=" + switch_word(want) + ".",
              modify_options(c, option + " " + switch_word(want)));
    }
  };
  check_switch(e.ipv6_enabled, inf.ipv6, "policy-ipv6", "ipv6", "--http-protocol-ipv6",
               "The IPv6 endpoint was not probed or only timed out.");
  check_switch(e.tags_enabled, inf.tags, "policy-tags", "tags", "--instance-metadata-tags",
               "The metadata listing was not read from the host.");
}

}  // namespace

std::string describe_hop_limit(const HopLimit& h) {
  std::string how = h.method;
  if (how == "packet-ttl") how = "packet TTL";
  if (how == "min-ttl-search") how = "IP_MINTTL search";
  if (h.exact) return std::to_string(*h.exact) + " (" + how + ")";
  if (h.method == "none" || h.method.empty()) return "unknown";
  if (h.upper >= kMaxHopLimit) return ">= " + std::to_string(h.lower) + " (" + how + ")";
  if (h.lower <= 1) return "<= " + std::to_string(h.upper) + " (" + how + ")";
  return std::to_string(h.lower) + ".." + std::to_string(h.upper) + " (" + how + ")";
}

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

std::vector<Finding> make_findings(const Diagnosis& diagnosis) {
  const FixContext c = fix_context(diagnosis.inference);
  FindingList out;
  endpoint_findings(diagnosis, c, out);
  tokens_findings(diagnosis, c, out);
  target_findings(diagnosis, c, out);
  hop_limit_findings(diagnosis, c, out);
  interception_findings(diagnosis, out);
  environment_findings(diagnosis, out);
  policy_findings(diagnosis, c, out);
  return std::move(out).sorted();
}

bool is_healthy(const Diagnosis& diagnosis) {
  return std::none_of(diagnosis.findings.begin(), diagnosis.findings.end(),
                      [](const Finding& f) { return f.severity >= Severity::warning; });
}

}  // namespace imds
