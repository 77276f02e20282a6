// /metrics: Prometheus text format 0.0.4, checked by a strict parser written here and, when
// installed, by promtool (Debian package `prometheus`).
#include "metrics.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "events.hpp"
#include "fixtures.hpp"

namespace imds::agent {
namespace {

using namespace testing;

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value;
};

struct Exposition {
  std::map<std::string, std::string> types;
  std::vector<Sample> samples;
  std::string error;  // first violation, empty when the text is valid
};

// The text format's grammar, strictly: HELP/TYPE lines before the family's samples, one
// TYPE per family, samples of a family contiguous, valid names, label escapes, float values,
// a final newline, histogram buckets cumulative and ending with +Inf = _count.
Exposition parse_exposition(const std::string& text) {
  Exposition out;
  if (text.empty() || text.back() != '\n') {
    out.error = "must end with a newline";
    return out;
  }
  static const std::regex help_re(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$)");
  static const std::regex type_re(
      R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$)");
  static const std::regex sample_re(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.eE+-]+|\+Inf|-Inf|NaN)$)");
  static const std::regex label_re(
      R"re(^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$))re");
  std::string family;
  std::set<std::string> finished;
  std::istringstream in(text);
  int lineno = 0;
  auto fail = [&](const std::string& why) {
    if (out.error.empty()) out.error = "line " + std::to_string(lineno) + ": " + why;
  };
  auto family_of = [&](const std::string& name) {
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      std::string s(suffix);
      if (name.size() > s.size() && name.ends_with(s)) {
        auto base = name.substr(0, name.size() - s.size());
        if (out.types.contains(base) && out.types[base] == "histogram") return base;
      }
    }
    return name;
  };
  for (std::string line; std::getline(in, line);) {
    ++lineno;
    std::smatch m;
    if (line.starts_with("# HELP ")) {
      if (!std::regex_match(line, m, help_re)) fail("bad HELP");
      continue;
    }
    if (line.starts_with("# TYPE ")) {
      if (!std::regex_match(line, m, type_re)) {
        fail("bad TYPE");
        continue;
      }
      if (out.types.contains(m[1])) fail("second TYPE for " + m[1].str());
      out.types[m[1]] = m[2];
      if (!family.empty()) finished.insert(family);
      family = m[1];
      continue;
    }
    if (line.starts_with("#")) continue;
    if (!std::regex_match(line, m, sample_re)) {
      fail("not a sample: " + line);
      continue;
    }
    Sample s{m[1], {}, 0};
    std::string labels = m[3];
    while (!labels.empty()) {
      std::smatch lm;
      if (!std::regex_search(labels, lm, label_re)) {
        fail("bad labels: " + m[3].str());
        break;
      }
      if (s.labels.contains(lm[1])) fail("duplicate label " + lm[1].str());
      s.labels[lm[1]] = lm[2];
      labels = lm.suffix();
    }
    std::string v = m[4];
    s.value = v == "+Inf" ? HUGE_VAL : v == "-Inf" ? -HUGE_VAL : std::stod(v);
    auto fam = family_of(s.name);
    if (fam != family) fail("sample " + s.name + " outside its family's block");
    if (finished.contains(fam)) fail("family " + fam + " is split");
    if (!out.types.contains(fam)) fail("sample " + s.name + " without TYPE");
    if (out.types[fam] == "counter" && !fam.ends_with("_total"))
      fail(fam + ": counter without _total");
    out.samples.push_back(std::move(s));
  }
  for (const auto& [name, type] : out.types) {
    if (type != "histogram") continue;
    double last = -1;
    double inf = -1;
    double count = -2;
    for (const auto& s : out.samples) {
      if (s.name == name + "_bucket") {
        if (s.value < last) fail(name + ": buckets not cumulative");
        last = s.value;
        if (s.labels.at("le") == "+Inf") inf = s.value;
      }
      if (s.name == name + "_count") count = s.value;
    }
    if (inf != count) fail(name + ": +Inf bucket differs from _count");
  }
  return out;
}

std::string rendered_metrics() {
  Snapshot prev;
  Expectations e;
  e.http_tokens = HttpTokens::required;
  auto d = diagnosis(HttpTokens::required, bounds(2, 64),
                     {{"c1", 11}, {"we\"ird\\name\n", 12, Tristate::no}});
  auto s = observe(prev, d, nullptr, e, std::chrono::system_clock::now());
  s.options.ipv6 = false;
  s.options.tags = true;
  ProbeStats stats;
  stats.cycles = 3;
  stats.errors = 1;
  stats.durations.observe(std::chrono::milliseconds(30));
  stats.durations.observe(std::chrono::milliseconds(700));
  stats.durations.observe(std::chrono::seconds(60));
  return render_metrics(s, HostImdsv2{true, std::nullopt}, stats, "0.1.0");
}

TEST(Metrics, TheStrictParserRejectsWhatPrometheusRejects) {
  EXPECT_NE(parse_exposition("a 1").error, "");  // no final newline
  EXPECT_NE(parse_exposition("# TYPE a gauge\na{x=\"\"\"} 1\n").error, "");
  EXPECT_NE(parse_exposition("# TYPE a counter\na 1\n").error, "");  // no _total
  EXPECT_NE(parse_exposition("# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n").error, "");
  EXPECT_NE(parse_exposition("b 1\n").error, "");  // untyped without TYPE (we always type)
  EXPECT_EQ(parse_exposition("# TYPE a_total counter\na_total 1\n").error, "");
}

TEST(Metrics, RenderedMetricsAreValidExpositionFormat) {
  auto text = rendered_metrics();
  auto parsed = parse_exposition(text);
  EXPECT_EQ(parsed.error, "") << text;
  auto value = [&](const std::string& name) {
    for (const auto& s : parsed.samples) {
      if (s.name == name) return s.value;
    }
    ADD_FAILURE() << "no sample " << name;
    return -1.0;
  };
  EXPECT_EQ(value("imds_http_tokens_required"), 1);
  EXPECT_EQ(value("imds_hop_limit_lower"), 2);
  EXPECT_EQ(value("imds_hop_limit_upper"), 64);
  EXPECT_EQ(value("imds_endpoint_up"), 1);
  EXPECT_EQ(value("imds_ipv6_enabled"), 0);
  EXPECT_EQ(value("imds_tags_enabled"), 1);
  EXPECT_EQ(value("imds_probe_cycles_total"), 3);
  EXPECT_EQ(value("imds_probe_errors_total"), 1);
  EXPECT_EQ(value("imds_probe_duration_seconds_count"), 3);
  EXPECT_EQ(value("imds_container_namespaces"), 2);
  EXPECT_EQ(parsed.types["imds_probe_duration_seconds"], "histogram");
  int targets = 0;
  for (const auto& s : parsed.samples) {
    if (s.name != "imds_target_imdsv2_ok") continue;
    ++targets;
    EXPECT_EQ(s.labels.at("family"), "ipv4");
    if (s.labels.at("netns") == R"(/run/netns/we\"ird\\name\n)") {
      EXPECT_EQ(s.value, 0);
    }
  }
  EXPECT_EQ(targets, 3);  // host + two containers
}

TEST(Metrics, ANamespaceNameThatIsNotUtf8StaysAValidScrape) {
  Snapshot prev;
  auto d = diagnosis(HttpTokens::required, exact(2), {{"bad\xff\xfename", 11, Tristate::no}});
  auto s = observe(prev, d, nullptr, Expectations{}, std::chrono::system_clock::now());
  const std::string text = render_metrics(s, HostImdsv2{}, ProbeStats{}, "0.1.0");
  EXPECT_EQ(text.find('\xff'), std::string::npos);
  EXPECT_NE(text.find("bad\xef\xbf\xbd\xef\xbf\xbdname"), std::string::npos) << text;
}

TEST(Metrics, WhatDiscoveryCouldNotUseIsCountedByDirectoryAndProblem) {
  Snapshot s;
  s.probed = true;
  EngineStats engine;
  NetnsDirLook docker;
  docker.dir = "/run/docker/netns";
  docker.state = NetnsDirLook::State::read;
  docker.entries = 2;
  docker.unusable.at(static_cast<std::size_t>(EntryProblem::not_mounted_here)) = 2;
  NetnsDirLook named;
  named.dir = "/run/netns";
  engine.look.dirs = {named, docker};
  engine.look.unlisted_container_namespaces = 3;
  const std::string text = render_metrics(s, HostImdsv2{}, ProbeStats{}, "0.1.0", &engine);
  const auto parsed = parse_exposition(text);
  ASSERT_EQ(parsed.error, "") << text;
  std::size_t series = 0;
  double hidden = -1;
  for (const auto& sample : parsed.samples) {
    if (sample.name != "imds_discovery_unusable_entries") continue;
    ++series;
    if (sample.labels.at("dir") == "/run/docker/netns" &&
        sample.labels.at("problem") == "not_mounted_here") {
      hidden = sample.value;
    }
  }
  EXPECT_EQ(series, 2 * kEntryProblems) << "every problem of every directory, zeros included";
  EXPECT_EQ(hidden, 2);
  EXPECT_NE(text.find("\nimds_discovery_unlisted_container_namespaces 3\n"), std::string::npos);
  EXPECT_NE(text.find("\nimds_discovery_unreadable_dirs 0\n"), std::string::npos);
}

TEST(Metrics, AnExactHopLimitIsOneGaugeInsteadOfBounds) {
  Snapshot s;
  s.probed = true;
  s.options.hop_limit = exact(2);
  auto text = render_metrics(s, HostImdsv2{}, ProbeStats{}, "0.1.0");
  EXPECT_NE(text.find("\nimds_hop_limit 2\n"), std::string::npos);
  EXPECT_EQ(text.find("imds_hop_limit_lower"), std::string::npos);
  EXPECT_EQ(parse_exposition(text).error, "");
}

TEST(Metrics, PromtoolAcceptsTheRenderedMetrics) {
  const char* promtool = "/usr/bin/promtool";
  if (!std::filesystem::exists(promtool)) GTEST_SKIP() << "promtool is not installed";
  auto path = std::filesystem::temp_directory_path() /
              ("imds-agent-metrics-" + std::to_string(::getpid()) + ".prom");
  std::ofstream(path) << rendered_metrics();
  std::string cmd = std::string(promtool) + " check metrics < " + path.string() + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string output;
  std::array<char, 512> buf{};
  while (std::fgets(buf.data(), static_cast<int>(buf.size()), p) != nullptr) output += buf.data();
  const int status = ::pclose(p);
  std::filesystem::remove(path);
  EXPECT_EQ(status, 0) << output;
}

TEST(Metrics, ATargetSeriesCarriesDockersNameWhenKnown) {
  Snapshot prev;
  auto d = diagnosis(HttpTokens::required, exact(1),
                     {{"c1", 11, Tristate::no}, {"c2", 12, Tristate::yes}});
  d.targets[1].target.container_name = "web";
  auto s = observe(prev, d, nullptr, Expectations{}, std::chrono::system_clock::now());
  const auto parsed = parse_exposition(render_metrics(s, HostImdsv2{}, ProbeStats{}, "0.1.0"));
  ASSERT_EQ(parsed.error, "");
  std::map<std::string, std::string> names;  // netns -> container_name
  for (const auto& sample : parsed.samples) {
    if (sample.name == "imds_target_imdsv2_ok") {
      names[sample.labels.at("netns")] = sample.labels.at("container_name");
    }
  }
  EXPECT_EQ(names, (std::map<std::string, std::string>{
                       {"/run/netns/c1", "web"}, {"/run/netns/c2", ""}}));
}

}  // namespace
}  // namespace imds::agent
