// Proxy variables that would send an SDK's IMDS requests through a proxy.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "collect.hpp"

namespace imds {
namespace {

ProxyEnvironment with(const std::map<std::string, std::string>& variables) {
  return proxy_environment([&](const char* name) -> const char* {
    const auto found = variables.find(name);
    return found == variables.end() ? nullptr : found->second.c_str();
  });
}

TEST(ProxyEnvironment, NothingSetMeansNoProxy) {
  const auto environment = with({});
  EXPECT_FALSE(environment.variable);
  EXPECT_FALSE(environment.no_proxy_covers_imds);
}

TEST(ProxyEnvironment, NamesTheVariableThatSetsAProxy) {
  EXPECT_EQ(with({{"http_proxy", "http://proxy:3128"}}).variable, "http_proxy");
  EXPECT_EQ(with({{"HTTP_PROXY", "http://proxy:3128"}}).variable, "HTTP_PROXY");
  EXPECT_EQ(with({{"all_proxy", "socks5://proxy:1080"}}).variable, "all_proxy");
  EXPECT_EQ(with({{"ALL_PROXY", "socks5://proxy:1080"}}).variable, "ALL_PROXY");
  EXPECT_EQ(with({{"http_proxy", "http://a:1"}, {"ALL_PROXY", "http://b:1"}}).variable,
            "http_proxy");
}

TEST(ProxyEnvironment, EmptyOrHttpsOnlyVariablesSetNoProxyForTheImds) {
  EXPECT_FALSE(with({{"http_proxy", ""}}).variable);
  EXPECT_FALSE(with({{"http_proxy", "  "}}).variable);
  EXPECT_FALSE(with({{"https_proxy", "http://proxy:3128"}}).variable);
}

TEST(ProxyEnvironment, NoProxyCoversTheImdsByAddressWildcardSuffixOrCidr) {
  for (const char* list : {"169.254.169.254", "localhost, 169.254.169.254", "*", "example.com,*",
                           ".254", "169.254.0.0/16", "10.0.0.0/8,169.254.169.254/32",
                           "169.254.169.254:80", " 169.254.169.254 "}) {
    EXPECT_TRUE(with({{"http_proxy", "http://p:1"}, {"no_proxy", list}}).no_proxy_covers_imds)
        << list;
  }
  EXPECT_TRUE(with({{"NO_PROXY", "169.254.169.254"}}).no_proxy_covers_imds);
}

TEST(ProxyEnvironment, NoProxyEntriesThatMissTheImdsDoNotCoverIt) {
  for (const char* list :
       {"", "localhost,127.0.0.1", "169.254.169.25", "69.254.169.254", "169.254.170.0/24",
        "10.0.0.0/8", "169.254.0.0/40", "bad/x", ".example.com", "4", ":80", ".", ","}) {
    EXPECT_FALSE(with({{"no_proxy", list}}).no_proxy_covers_imds) << list;
  }
}

}  // namespace
}  // namespace imds
