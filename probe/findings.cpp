// Findings: what the inference means for people, with the exact fix (see findings.hpp).
// Wording of values comes from words.hpp and policy checks from policy.hpp.
#include "findings.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <optional>
#include <string>
#include <string_view>

#include "inference.hpp"
#include "observations.hpp"
#include "policy.hpp"
#include "words.hpp"

namespace imds {

using namespace observations;

namespace {

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
    } else if (i < d.inference.targets.size() &&
               d.inference.targets[i].headline().reachable != Tristate::no) {
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


// Findings of the instance as a whole, and of namespaces: those that share one (same id,
// severity, wording and fix) become one finding that lists them.
class FindingList {
 public:
  void add(std::string id, Severity severity, std::string summary, std::string detail,
           std::string fix = {}) {
    items_.push_back({{std::move(id), severity, {}, std::move(summary), std::move(detail),
                       std::move(fix)},
                      false});
  }

  void add_for(const TargetObservations& t, std::string id, Severity severity,
               std::string summary, std::string detail, std::string fix = {}) {
    FindingSubject subject{t.target.name, t.target.container_id, t.distance,
                           t.target.container_name};
    for (auto& item : items_) {
      Finding& f = item.finding;
      if (!f.subjects.empty() && item.host == t.target.is_host && f.id == id &&
          f.severity == severity && f.summary == summary && f.detail == detail && f.fix == fix) {
        f.subjects.push_back(std::move(subject));
        return;
      }
    }
    items_.push_back({{std::move(id), severity, {std::move(subject)}, std::move(summary),
                       std::move(detail), std::move(fix)},
                      t.target.is_host});
  }

  std::vector<Finding> sorted() && {
    std::vector<Finding> out;
    out.reserve(items_.size());
    for (auto& item : items_) {
      Finding& f = item.finding;
      // The host's findings name it in their own words.
      if (f.subjects.size() == 1 && !item.host) {
        f.summary = subject_label(f.subjects.front()) + ": " + f.summary;
      } else if (f.subjects.size() > 1) {
        f.summary = std::to_string(f.subjects.size()) + " namespaces: " + f.summary;
      }
      out.push_back(std::move(f));
    }
    std::stable_sort(out.begin(), out.end(),
                     [](const Finding& a, const Finding& b) { return a.severity > b.severity; });
    return out;
  }

 private:
  static std::string subject_label(const FindingSubject& s) {
    return s.name.empty() ? "(unnamed namespace)" : namespace_label(s.name, s.container_name);
  }
  struct Item {
    Finding finding;
    bool host = false;
  };
  std::vector<Item> items_;
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
      case UnreachableReason::no_route:
      case UnreachableReason::blackholed:
        summary = where + " is unreachable from the host: " +
                  unreachable_words(inf.unreachable_reason);
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
    out.add("endpoint-unreachable", Severity::error, summary,
            detail + " Nothing can be learned about the metadata options from here.");
  } else if (inf.endpoint == EndpointState::disabled) {
    const bool intended = d.expectations.endpoint_enabled == false;
    out.add("endpoint-disabled", intended ? Severity::info : Severity::warning,
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
          why = "the host's requests failed: " + result_words(o.result);
          break;
        }
      }
    }
    out.add("endpoint-unknown", Severity::warning,
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
    out.add("tokens-optional", intended ? Severity::notice : Severity::warning,
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
    return skip_words(o->result);
  }();
  if (v1_skipped && inf.http_tokens == HttpTokens::unknown) {
    bool v2_works = false;
    for (const auto& v : inf.targets) {
      if (host != nullptr && v.target == host->target.name &&
          v.headline().imdsv2 == Tristate::yes) {
        v2_works = true;
      }
    }
    out.add("v1-not-probed", Severity::info,
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
    const TargetVerdict& verdict = inf.targets[i];
    const FamilyVerdict& v = verdict.headline();
    const FamilyVerdict& v6 = verdict.v6;
    if (v.reachable == Tristate::no) {
      if (t.target.is_host) continue;
      if (v6.reachable == Tristate::yes) {
        out.add_for(t, "ipv4-blocked-ipv6-open", Severity::warning,
                    "IPv4 does not reach the IMDS (" + unreachable_words(v.unreachable_reason) +
                        "), but IPv6 does" +
                        (v6.imdsv2 == Tristate::yes ? ": IMDSv2 works over IPv6" : ""),
                    "The block (ECS awsvpc task networking, a blackhole route, a DROP rule) covers "
                    "IPv4 only: SDKs set to the IPv6 endpoint (AWS_EC2_METADATA_SERVICE_ENDPOINT_"
                    "MODE=IPv6) still reach the IMDS from this namespace. Block fd00:ec2::254 as "
                    "well, or lift the IPv4 block if it is not intended.",
                    "ip -6 route add blackhole fd00:ec2::254/128   # inside this namespace, or "
                    "the same firewall rule for IPv6");
      } else {
        out.add_for(t, "container-unreachable", Severity::notice, v.summary,
                    "A blackhole route (ECS awsvpc blocking) or a firewall DROP keeps this "
                    "namespace away from the IMDS; when that is intended there is nothing to do. "
                    "SDKs there wait for their connect timeouts and find no credentials.");
      }
      continue;
    }
    if (v.imdsv2 != Tristate::no) {
      if (v.imdsv2 == Tristate::yes && inf.ipv6 == Tristate::yes && v6.reachable == Tristate::yes &&
          v6.imdsv2 == Tristate::no) {
        out.add_for(t, "container-no-token-ipv6", Severity::warning, "over IPv6: " + v6.summary,
                    "IMDSv2 works over IPv4 here, but not over IPv6: SDKs set to the IPv6 "
                    "endpoint (AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6) get no token.");
      }
      continue;
    }
    const Observation* put = find(t, Step::token_put, Family::v4);
    if (put == nullptr) continue;
    const HttpResult& r = put->result;
    if (t.target.is_host) {
      const Observation* v2 = find(t, Step::v2_get, Family::v4);
      const HttpResult& failing = ok(r) && v2 != nullptr ? v2->result : r;
      const bool throttled = observations::throttled(failing);
      out.add_for(t, "host-no-token", throttled ? Severity::warning : Severity::error,
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
    } else if (put_drop(r) != PutDrop::none) {
      if (v.imdsv1 == Tristate::no) {
        severity = Severity::error;
        detail = std::string(kSdkRequired);
      } else if (v.imdsv1 == Tristate::yes) {
        detail = std::string(kSdkOptional);
      } else {
        detail = "If HttpTokens is optional: " + std::string(kSdkOptional) +
                 " If it is required: " + std::string(kSdkRequired);
      }
      if (put_drop(r) == PutDrop::reset) {
        detail +=
            " Here the dropped PUT ends in a connection reset, so clients fail at once "
            "instead of waiting.";
      }
      if (!verdict.distance) {
        detail +=
            " This namespace's distance could not be measured (that needs packet sockets, "
            "CAP_NET_RAW): the hop limit in the fix serves Docker bridge containers; "
            "Docker-in-Docker and some CNIs need one more.";
      }
      int need = verdict.distance ? std::max(want, *verdict.distance + 1) : want;
      if (!verdict.distance && inf.hop_limit.exact) {
        need = std::min(kMaxHopLimit, std::max(need, *inf.hop_limit.exact + 1));
      }
      fix = modify_options(c, hop_limit_option(need) + " --http-endpoint enabled");
      if (need <= 2) fix += "\n" + ami_route(c);
    } else if (observations::throttled(r)) {
      detail =
          "The PUT was answered 429/503 (throttled), not dropped, so the hop limit is not the "
          "cause. The IMDS throttles per instance, not per namespace: when the host is not "
          "throttled, the answer most likely comes from a metadata proxy in this namespace's "
          "path (kube2iam, kiam, a sidecar). " +
          std::string(kSdkOnHttpError);
    } else {
      detail = "The PUT was answered, not dropped, so the hop limit is not the cause. " +
               std::string(kSdkOnHttpError);
    }
    if (v.predicted) {
      detail +=
          " (Predicted from the TTL the host's PUT response arrived with; this namespace's "
          "PUT was not sent.)";
    }
    out.add_for(t, "container-no-token", severity, v.summary, detail, fix);
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
    out.add("hop-limit-bounds-contradict", Severity::warning,
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
    out.add("hop-limit-excess", Severity::notice,
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
    out.add_for(t, "interception-suspected", Severity::warning,
                std::to_string(count) + " answer(s) came without Server: EC2ws (" + *foreign + ")",
            "Every IMDS answer carries `Server: EC2ws`; these came from something in between "
            "(kube2iam, kiam, a corporate or sidecar proxy). What this namespace sees describes "
            "that interceptor, not necessarily the instance's metadata options.");
  }
}

// What discovery could not see: never a silent gap (a finding per directory that held
// entries it could not use, and one for container processes in namespaces it did not list).
void discovery_findings(const Diagnosis& d, const DiscoveryLook& look, FindingList& out) {
  for (const NetnsDirLook& dir : look.dirs) {
    const std::string name = printable(dir.dir, 120);
    if (dir.state == NetnsDirLook::State::unreadable) {
      out.add("discovery-blind", Severity::warning,
              "cannot read " + name + ": " + printable(dir.error),
              "The namespaces in this directory were not probed: their verdicts are missing.",
              "sudo imds-probe --all-containers   # reading a namespace directory needs root");
      continue;
    }
    const auto count = [&](EntryProblem p) { return dir.unusable.at(static_cast<std::size_t>(p)); };
    const std::size_t stale = count(EntryProblem::stale);
    if (stale > 0) {
      // Not a gap, but said: if these files outlive the runtime's clean-up, they are mounts
      // this mount namespace stopped receiving (a bind without propagation taken earlier).
      std::string summary = name;
      summary += ": " + std::to_string(stale);
      summary += stale == 1 ? " empty file" : " empty files";
      summary += " that no running container claims (removed containers, not cleaned up yet)";
      std::string fix = "ls -l ";
      fix += name;
      fix += "   # a minute from now: files still there mean missing mounts\ndocker run -v ";
      fix += name;
      fix += ':';
      fix += name;
      fix += ":rslave ...   # a tool container: let the host's mounts propagate";
      out.add("discovery-stale-entries", Severity::notice, std::move(summary),
              "Docker unlinks a removed container's namespace file about a minute after the "
              "container goes. Files that stay longer belong to containers started after this "
              "mount namespace stopped receiving the runtime's mounts (a bind mount without "
              "propagation): those containers are not probed.",
              std::move(fix));
    }
    const std::size_t bad = dir.unusable_total() - stale;
    if (bad == 0) continue;
    std::string examples;
    for (const auto& e : dir.examples) examples += (examples.empty() ? "" : ", ") + e;
    std::string detail;
    std::string fix;
    if (count(EntryProblem::not_mounted_here) > 0) {
      detail =
          "Container runtimes bind-mount each container's network namespace onto a file in this "
          "directory. Seen from a mount namespace without those mounts (a tool container, a "
          "privileged pod or DaemonSet, a unit with its own mount namespace) the files are "
          "empty: the containers behind them were not probed and their verdicts are missing. ";
      fix = "docker run -v ";
      fix += name;
      fix += ':';
      fix += name;
      fix += ":rslave ...   # a tool container: let the host's mounts propagate\n"
             "# Kubernetes: mount the hostPath ";
      fix += name;
      fix += " with mountPropagation: HostToContainer\n"
             "nsenter -t 1 -m -- imds-probe --all-containers   # or run in the host's mount "
             "namespace";
    }
    if (count(EntryProblem::permission_denied) > 0) {
      detail += "Opening a namespace file needs root (or CAP_SYS_ADMIN and CAP_DAC_READ_SEARCH). ";
      if (fix.empty()) fix = "sudo imds-probe --all-containers";
    }
    if (count(EntryProblem::dangling_link) > 0) {
      detail += "A link to nothing is a stale entry whose namespace is gone. ";
      if (fix.empty()) fix = "ls -l " + name + "   # and remove the stale entries";
    }
    if (count(EntryProblem::not_a_namespace_file) + count(EntryProblem::other_namespace_type) +
            count(EntryProblem::unreadable) > 0) {
      detail += "Entries that are not network namespaces are not probed. ";
    }
    detail += "Unusable: " + examples + (bad > dir.examples.size() ? ", ..." : "") + ".";
    out.add("discovery-blind", Severity::warning,
            name + ": " + std::to_string(bad) + " of " + std::to_string(dir.entries) +
                (dir.entries == 1 ? " entry is" : " entries are") +
                " not a network namespace this run can use (" + entry_problem_counts(dir) + ")",
            detail, fix);
  }
  if (look.unlisted_container_namespaces > 0) {
    out.add("discovery-unlisted-containers", Severity::warning,
            std::to_string(look.unlisted_container_processes) +
                " processes of containers run in " +
                std::to_string(look.unlisted_container_namespaces) +
                " network namespaces that discovery did not list",
            "Their cgroups name a container, but no namespace directory holds their namespace "
            "and the /proc scan is off: those containers were not probed.",
            "imds-probe --all-containers   # without --no-proc-scan (imds-agent: proc-scan = yes)\n"
            "imds-probe --all-containers --netns-dir DIR   # or the runtime's namespace directory");
  }
  const std::size_t discovered = discovered_targets(d);
  if (!look.runtimes.empty() && discovered == 0 && !look.proc_scanned) {
    std::string names;
    for (const auto& r : look.runtimes) names += (names.empty() ? "" : ", ") + r;
    out.add("discovery-runtime-without-containers", Severity::info,
            names + " runs here (its API socket exists), and discovery listed no container "
                    "namespace",
            "With the /proc scan off, only the namespace directories are read; if containers "
            "run, their namespaces are elsewhere.",
            "imds-probe --all-containers   # without --no-proc-scan");
  }
}

void environment_findings(const Diagnosis& d, FindingList& out) {
  const Inference& inf = d.inference;
  for (const auto& variable : inf.proxy_warnings) {
    out.add("proxy-captures-imds", Severity::warning,
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

  // Verdicts resting on what the overall deadline cut are unknown, and a run that learned
  // less than it was asked must not pass for healthy.
  std::size_t cut = 0;
  for (const auto& t : d.targets) {
    cut += static_cast<std::size_t>(std::count_if(
        t.observations.begin(), t.observations.end(),
        [](const Observation& o) { return cut_short(o.result); }));
  }
  if (cut > 0) {
    out.add("run-incomplete", Severity::warning,
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
      if (observations::throttled(o.result)) ++throttled;
    }
  }
  if (throttled > 0) {
    out.add("throttled", Severity::warning,
            std::to_string(throttled) + " of " + std::to_string(total) +
                " answers were 429/503 (throttled)",
            "The IMDS throttles per instance (IMDS, DNS and NTP share 1024 packets/s); verdicts "
            "that rest on throttled answers are uncertain. Something on this instance may be "
            "polling the IMDS too often; clients should back off exponentially.");
  }

  // A connection whose SYN got no answer, answered when tried again at once: a word, not an
  // alarm (info: health, exit codes and the agent's events do not change).
  for (const auto& t : d.targets) {
    const bool transient =
        std::any_of(t.observations.begin(), t.observations.end(), [](const Observation& o) {
          return o.result.retried && (answered(o.result) || o.result.connected);
        });
    if (!transient) continue;
    out.add_for(t, "transient-no-answer", Severity::info,
                "a connection got no answer at first; its quick retry did (transient)",
                "One SYN was lost on the way: the IMDS, DNS and NTP share 1024 packets/s per "
                "instance, and behind NAT a port can meet one the server still holds from an "
                "earlier connection. A firewall drops the retry too, so this is not one; the "
                "verdicts rest on the retry. Nothing to do unless it recurs in most runs.");
  }

  if (const auto& cut = d.discovery_truncated; cut && cut->not_probed > 0) {
    const std::string kept = std::to_string(cut->found - std::min(cut->found, cut->not_probed));
    out.add("discovery-truncated", Severity::warning,
            "found " + std::to_string(cut->found) + " network namespaces; " +
                std::to_string(cut->not_probed) + " of them are not probed in this " +
                (cut->later_cycles ? "cycle" : "run"),
            cut->later_cycles
                ? "imds-agent keeps at most " + kept +
                      " namespaces at a time; the others get their turn in later cycles, once "
                      "every namespace kept has been probed. Until then their verdicts are "
                      "missing."
                : "imds-probe probes at most " + kept +
                      " discovered namespaces in one run; the verdicts of the others are "
                      "missing.",
            cut->later_cycles ? ""
                              : "imds-probe --netns /run/netns/NAME ...   # the others, by name; "
                                "or run imds-agent, which gets to all of them in turn");
  }
  if (d.discovery) discovery_findings(d, *d.discovery, out);

  for (const auto& t : d.targets) {
    if (t.error.empty()) continue;
    out.add_for(t, "target-not-probed", Severity::warning,
                "could not be probed: " + printable(t.error),
            "This namespace's verdict is missing; entering another namespace needs CAP_SYS_ADMIN "
            "(and CAP_SYS_PTRACE for another user's /proc/PID/ns/net).");
  }
}

void policy_findings(const Diagnosis& d, const FixContext& c, FindingList& out) {
  const Inference& inf = d.inference;
  for (const PolicyCheck& check : check_policy(d.expectations, observed_options(d))) {
    const std::string option(option_name(check.option));
    // Finding id and how --expect names the option, in PolicyOption order.
    constexpr std::array<std::pair<std::string_view, std::string_view>, 5> kWords = {{
        {"policy-http-tokens", "HttpTokens="},
        {"policy-hop-limit", "hop limit "},
        {"policy-endpoint", "endpoint="},
        {"policy-ipv6", "ipv6="},
        {"policy-tags", "tags="},
    }};
    const auto& [id_word, prefix] = kWords.at(static_cast<std::size_t>(check.option));
    const std::string id(id_word);
    const std::string what = std::string(prefix) + check.expected;
    if (check.state == PolicyState::met) continue;
    if (check.state == PolicyState::unknown) {
      std::string why = check.reason + ".";
      why[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(why[0])));
      if (check.option == PolicyOption::http_tokens && !d.v1_probed) {
        why += " Run without --no-v1 to verify.";
      } else if (check.option == PolicyOption::hop_limit) {
        why +=
            " Run with CAP_NET_RAW (packet TTLs) or --exact-hop-limit, or with a container "
            "namespace (--simulate-container), to pin it down.";
      }
      out.add(id, Severity::warning, "cannot verify the expected " + what, why);
      continue;
    }
    const std::string asks = "The policy (--expect) asks for " + option + "=" + check.expected + ".";
    std::string summary;
    std::string fix;
    switch (check.option) {
      case PolicyOption::http_tokens: {
        const bool required = d.expectations.http_tokens == HttpTokens::required;
        std::string options = "--http-tokens " + check.expected;
        const int hop = recommended_hop_limit(d);
        if (required && (!inf.hop_limit.exact || *inf.hop_limit.exact < hop)) {
          options += " " + hop_limit_option(hop);
        }
        fix = modify_options(c, options + " --http-endpoint enabled");
        if (required) fix += "\n" + ami_route(c);
        summary = "HttpTokens is " + check.actual + ", expected " + check.expected;
        break;
      }
      case PolicyOption::hop_limit: {
        const int min = d.expectations.hop_limit_min.value_or(1);
        const int max = d.expectations.hop_limit_max.value_or(kMaxHopLimit);
        const int set =
            d.expectations.hop_limit_max ? min : std::max(min, recommended_hop_limit(d));
        fix = modify_options(c, hop_limit_option(std::min(set, max)) + " --http-endpoint enabled");
        summary = "hop limit is " + describe_hop_limit(inf.hop_limit) + ", expected " +
                  check.expected;
        break;
      }
      case PolicyOption::endpoint:
        fix = modify_options(c, "--http-endpoint " + check.expected);
        summary = "the metadata endpoint is " + check.actual + ", expected " + check.expected;
        break;
      case PolicyOption::ipv6:
        fix = modify_options(c, "--http-protocol-ipv6 " + check.expected);
        summary = "ipv6 is " + check.actual + ", expected " + check.expected;
        break;
      case PolicyOption::tags:
        fix = modify_options(c, "--instance-metadata-tags " + check.expected);
        summary = "tags is " + check.actual + ", expected " + check.expected;
        break;
    }
    out.add(id, Severity::error, summary, asks, fix);
  }
}
}  // namespace

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
