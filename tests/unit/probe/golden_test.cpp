// Golden files pin the JSON schema (docs/json-schema.md) and the text report for a few
// representative diagnoses. After an intended change, regenerate and review:
//   IMDS_UPDATE_GOLDEN=1 meson test -C BUILD probe-pure && git diff tests/unit/probe/golden
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "builders.hpp"
#include "expect.hpp"
#include "render.hpp"

namespace imds {
namespace {

using namespace imds::test;

std::filesystem::path golden_path(const std::string& name) {
  return std::filesystem::path(IMDS_GOLDEN_DIR) / name;
}

bool updating() {
  const char* value = std::getenv("IMDS_UPDATE_GOLDEN");
  return value != nullptr && std::string_view(value) == "1";
}

void expect_golden(const std::string& name, const std::string& actual) {
  const auto path = golden_path(name);
  if (updating()) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << actual;
    ASSERT_TRUE(out.good()) << "cannot write " << path;
    return;
  }
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in.good()) << "missing golden file " << path
                         << " (create it with IMDS_UPDATE_GOLDEN=1)";
  std::ostringstream expected;
  expected << in.rdbuf();
  EXPECT_EQ(actual, expected.str()) << "output differs from " << path
                                    << "; if the change is intended, regenerate with "
                                       "IMDS_UPDATE_GOLDEN=1 and review the diff";
}

void expect_golden_json(const std::string& name, const Diagnosis& d) {
  expect_golden(name, to_json(d).dump(2) + "\n");
}

Diagnosis expecting(Diagnosis d, std::initializer_list<const char*> expectations) {
  for (const char* text : expectations) {
    EXPECT_TRUE(parse_expectation(text, d.expectations).ok()) << text;
  }
  return finish(std::move(d));
}

// AMI registered with --imds-support v2.0: required, hop limit 2, a bridge container works.
Diagnosis healthy_v2_instance() {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 2;
  w.ipv6 = true;
  w.tags = true;
  return expecting(diagnosis({observe_host(w), observe_container(w, "web", 1)}, w),
                   {"imds-support=v2.0"});
}

// Required + hop limit 1 (account default wins over the AMI): containers get nothing.
Diagnosis broken_bridge_containers() {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 1;
  TargetObservations web = observe_container(w, "web", 1);
  web.target.source = TargetSource::container;
  web.target.container_id = "4f2b8c1d9e0a";
  web.target.runtime = "docker";
  web.target.container_name = "shop-api";  // Docker's name, from config.v2.json
  return expecting(diagnosis({observe_host(w), std::move(web), observe_container(w, "dind", 2),
                              cut_off(target("ecs-task", 1), Outcome::unreachable)},
                             w),
                   {"imds-support=v2.0"});
}

// Without CAP_NET_RAW: bounds from containers, an interceptor in a pod, a proxy variable.
Diagnosis bounds_interceptor_proxy() {
  World w;
  w.hop_limit = 2;
  w.packet_ttl = false;
  TargetObservations pod = observe_container(w, "pod", 1);
  pod.distance.reset();
  for (auto& o : pod.observations) {
    if (o.result.outcome == Outcome::http) o.result.server = "kube2iam";
  }
  Diagnosis d = diagnosis(
      {observe_host(w), observe_container(w, "web", 1), observe_container(w, "dind", 2), pod}, w);
  d.proxy.variable = "http_proxy";
  return finish(std::move(d));
}

// Discovery in a mount namespace that lacks Docker's bind mounts (a tool container without
// mount propagation): the netns files are empty, the host alone is probed. Never healthy.
Diagnosis invisible_docker_namespaces() {
  World w;
  w.tokens = HttpTokens::required;
  w.hop_limit = 1;
  Diagnosis d = diagnosis({observe_host(w)}, w);
  DiscoveryLook look;
  NetnsDirLook run_netns;
  run_netns.dir = "/run/netns";
  NetnsDirLook docker;
  docker.dir = "/run/docker/netns";
  docker.state = NetnsDirLook::State::read;
  docker.entries = 2;
  docker.unusable.at(static_cast<std::size_t>(EntryProblem::not_mounted_here)) = 2;
  docker.examples = {"1a2b3c4d5e6f", "6f5e4d3c2b1a"};
  look.dirs = {run_netns, docker};
  look.runtimes = {"docker"};
  d.discovery = look;
  return finish(std::move(d));
}

// Not on EC2: the connection is refused.
Diagnosis not_on_ec2() {
  World w;
  w.ipv6 = false;
  return finish(diagnosis({cut_off(host_target(), Outcome::refused)}, w));
}

TEST(Golden, HealthyV2InstanceJson) {
  expect_golden_json("healthy-v2-instance.json", healthy_v2_instance());
}

TEST(Golden, BrokenBridgeContainersJson) {
  expect_golden_json("broken-bridge-containers.json", broken_bridge_containers());
}

TEST(Golden, BrokenBridgeContainersText) {
  expect_golden("broken-bridge-containers.txt", render_text(broken_bridge_containers(), false));
}

TEST(Golden, BoundsInterceptorProxyJson) {
  expect_golden_json("bounds-interceptor-proxy.json", bounds_interceptor_proxy());
}

TEST(Golden, BoundsInterceptorProxyText) {
  expect_golden("bounds-interceptor-proxy.txt", render_text(bounds_interceptor_proxy(), false));
}

TEST(Golden, NotOnEc2Json) { expect_golden_json("not-on-ec2.json", not_on_ec2()); }

TEST(Golden, InvisibleDockerNamespacesText) {
  const Diagnosis d = invisible_docker_namespaces();
  EXPECT_FALSE(is_healthy(d));
  EXPECT_EQ(exit_code(d), 1);
  expect_golden("invisible-docker-namespaces.txt", render_text(d, false));
}

TEST(Golden, InvisibleDockerNamespacesJson) {
  expect_golden_json("invisible-docker-namespaces.json", invisible_docker_namespaces());
}

// Every finding id the scenarios here produce is listed in docs/json-schema.md.
TEST(Golden, EveryFindingIdIsDocumentedInTheSchema) {
  std::ifstream in(IMDS_SCHEMA_DOC);
  ASSERT_TRUE(in.good()) << IMDS_SCHEMA_DOC;
  std::ostringstream doc;
  doc << in.rdbuf();
  World optional_world;
  optional_world.probe_v1 = false;
  optional_world.hop_limit = 5;
  Diagnosis excess = diagnosis({observe_host(optional_world)}, optional_world);
  excess.proxy.variable = "http_proxy";
  TargetObservations broken = target("broken", std::nullopt);
  broken.error = "setns: Operation not permitted";
  excess.targets.push_back(std::move(broken));
  const std::vector<Diagnosis> scenarios = {
      healthy_v2_instance(),
      broken_bridge_containers(),
      bounds_interceptor_proxy(),
      not_on_ec2(),
      invisible_docker_namespaces(),
      expecting(std::move(excess),
                {"imds-support=v2.0", "ipv6=enabled", "tags=enabled", "endpoint=disabled"}),
  };
  std::size_t seen = 0;
  for (const auto& d : scenarios) {
    for (const auto& f : d.findings) {
      ++seen;
      EXPECT_NE(doc.str().find("`" + f.id + "`"), std::string::npos)
          << f.id << " is missing from " << IMDS_SCHEMA_DOC;
    }
  }
  EXPECT_GE(seen, 15u);
}

}  // namespace
}  // namespace imds
