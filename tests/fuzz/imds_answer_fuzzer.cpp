// Fuzzes what the probe makes of the IMDS's answers: the header checks of collection
// (outcome_from_curl, parse_token_ttl, plausible_token; probe/http.hpp) and the pure chain
// over observations (infer -> make_findings -> to_json / render_text / exit_code) with
// arbitrary statuses, Server headers, bodies, TTLs, outcomes and skip reasons from a host
// and a few containers. Nothing an IMDS (or something posing as one) sends may crash it,
// and the JSON must always serialise (invalid UTF-8 replaced, never thrown on).
#include <curl/curl.h>
#include <fuzzer/FuzzedDataProvider.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "findings.hpp"
#include "http.hpp"
#include "inference.hpp"
#include "observations.hpp"
#include "render.hpp"

namespace {

using namespace imds;

constexpr std::array kPaths = {
    "/latest/api/token",
    "/latest/meta-data/instance-id",
    "/latest/meta-data/ami-id",
    "/latest/meta-data/placement/region",
    "/latest/meta-data/placement/availability-zone",
    "/latest/meta-data/",
};

template <typename E>
E pick_enum(FuzzedDataProvider& in, int count) {
  return static_cast<E>(in.ConsumeIntegralInRange<int>(0, count - 1));
}

std::optional<int> maybe_ttl(FuzzedDataProvider& in) {
  if (!in.ConsumeBool()) return std::nullopt;
  return in.ConsumeIntegralInRange<int>(0, 255);
}

HttpResult answer(FuzzedDataProvider& in) {
  HttpResult r;
  r.outcome = pick_enum<Outcome>(in, 8);
  r.status = in.ConsumeIntegralInRange<int>(0, 999);
  r.latency = std::chrono::microseconds(in.ConsumeIntegralInRange<std::int64_t>(0, 10'000'000));
  r.connected = in.ConsumeBool();
  r.ttl = maybe_ttl(in);
  r.handshake_ttl = maybe_ttl(in);
  switch (in.ConsumeIntegralInRange<int>(0, 2)) {
    case 0: r.server = std::string(observations::kImdsServer); break;
    case 1: r.server = in.ConsumeRandomLengthString(64); break;
    default: break;
  }
  const std::string ttl_header = in.ConsumeRandomLengthString(24);
  r.token_ttl_seconds = parse_token_ttl(ttl_header);
  r.body = in.ConsumeRandomLengthString(256);
  r.body_truncated = in.ConsumeBool();
  r.error = in.ConsumeRandomLengthString(64);
  // As collection fills them: a skip reason exactly for skipped requests, and the proof
  // exactly for a predicted drop.
  if (r.outcome == Outcome::skipped) {
    r.skip = static_cast<SkipReason>(in.ConsumeIntegralInRange<int>(1, 6));
    if (r.skip == SkipReason::predicted_drop) {
      r.prediction = DropPrediction{in.ConsumeIntegralInRange<int>(1, 255),
                                    in.ConsumeIntegralInRange<int>(1, kMaxHopLimit)};
    }
  }
  r.cut_by_deadline = in.ConsumeBool();
  return r;
}

TargetObservations namespace_observations(FuzzedDataProvider& in, bool is_host, int index) {
  TargetObservations t;
  t.target.is_host = is_host;
  t.target.name = is_host ? "host" : in.ConsumeRandomLengthString(32);
  t.target.path = is_host ? "/proc/self/ns/net" : "/run/netns/" + std::to_string(index);
  t.target.inode = 4026531840U + static_cast<unsigned>(index);
  t.target.source = is_host ? TargetSource::host : pick_enum<TargetSource>(in, 7);
  if (!is_host && in.ConsumeBool()) t.target.container_id = in.ConsumeRandomLengthString(64);
  if (is_host) {
    t.distance = 0;
  } else if (in.ConsumeBool()) {
    t.distance = in.ConsumeIntegralInRange<int>(0, kMaxHopLimit);
  }
  if (in.ConsumeIntegralInRange<int>(0, 15) == 0) t.error = in.ConsumeRandomLengthString(40);
  const int count = in.ConsumeIntegralInRange<int>(0, 12);
  for (int i = 0; i < count; ++i) {
    Observation o;
    o.step = pick_enum<Step>(in, 5);
    o.family = in.ConsumeBool() ? Family::v4 : Family::v6;
    o.path = in.PickValueInArray(kPaths);
    o.result = answer(in);
    t.observations.push_back(std::move(o));
  }
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);

  // Collection's own checks on what arrived.
  const auto code = static_cast<CURLcode>(in.ConsumeIntegralInRange<int>(0, CURL_LAST));
  const long os_errno = in.ConsumeIntegralInRange<long>(0, 200);
  (void)outcome_from_curl(code, os_errno, in.ConsumeRandomLengthString(64));
  const std::string token = in.ConsumeRandomLengthString(128);
  if (plausible_token(token) && (token.empty() || token.find('\n') != std::string::npos)) {
    std::abort();  // it would go into a header line
  }
  if (const auto ttl = parse_token_ttl(in.ConsumeRandomLengthString(24))) {
    if (*ttl < 0 || *ttl > 21600) std::abort();
  }

  Diagnosis d;
  d.tool_version = "fuzz";
  d.endpoint_v4 = "http://169.254.169.254";
  d.endpoint_v6 = "http://[fd00:ec2::254]";
  d.v1_probed = in.ConsumeBool();
  d.packet_ttl_available = in.ConsumeBool();
  if (in.ConsumeBool()) d.searched_hop_limit = in.ConsumeIntegralInRange<int>(0, 70);
  if (in.ConsumeBool()) d.proxy.variable = "http_proxy";
  const int containers = in.ConsumeIntegralInRange<int>(0, 4);
  if (in.ConsumeIntegralInRange<int>(0, 7) != 0) d.targets.push_back(namespace_observations(in, true, 0));
  for (int i = 1; i <= containers; ++i) d.targets.push_back(namespace_observations(in, false, i));

  d.inference = infer(d);
  d.findings = make_findings(d);
  (void)is_healthy(d);
  const std::string json = to_json(d).dump();
  const std::string text = render_text(d, in.ConsumeBool());
  const int exit = exit_code(d);
  if (json.empty() || text.empty() || (exit != 0 && exit != 1 && exit != 3)) std::abort();
  return 0;
}
