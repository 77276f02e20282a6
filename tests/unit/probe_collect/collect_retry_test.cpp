// collect() when a connect gets no answer at all: one quick retry on a fresh connection, and
// what the diagnosis says about it. The lost SYN is real: a listener whose accept queue is
// full drops it without a word (ListenOverflows), as a firewall or a lost packet would.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iomanip>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

#include "collect.hpp"
#include "diagnose.hpp"
#include "emulator_process.hpp"
#include "request_rate.hpp"
#include "words.hpp"

namespace imds {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  [[nodiscard]] int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

sockaddr_in loopback_address(std::uint16_t port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  return address;
}

// Whether a socket of this network namespace is in SYN_SENT towards 127.0.0.1:`port`: a SYN
// went out and nothing answered it (on loopback a SYN-ACK takes microseconds).
bool syn_sent_to(std::uint16_t port) {
  std::ifstream table("/proc/net/tcp");
  std::string line;
  std::getline(table, line);  // header
  std::ostringstream address;
  address << "0100007F:" << std::uppercase << std::hex << std::setw(4) << std::setfill('0') << port;
  const std::string wanted = address.str();
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot;
    std::string local;
    std::string remote;
    std::string state;
    fields >> slot >> local >> remote >> state;
    if (remote == wanted && state == "02") return true;
  }
  return false;
}

// A stand-in IMDS on 127.0.0.1 whose accept queue is kept full (backlog 0 and one connection
// nobody accepts), so that SYNs to it are dropped, until open() serves every connection with a
// canned IMDS answer. A test harness, not an HTTP server: it reads a request head and writes
// one of two fixed responses.
class SilentImds {
 public:
  SilentImds() : listener_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in address = loopback_address(0);
    socklen_t length = sizeof address;
    if (listener_.get() < 0 ||
        ::bind(listener_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(listener_.get(), 0) != 0 ||
        ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw std::runtime_error("cannot listen on 127.0.0.1");
    }
    port_ = ntohs(address.sin_port);
    // The one connection the queue holds: from now on every SYN is dropped.
    filler_ = std::make_unique<Fd>(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const sockaddr_in self = loopback_address(port_);
    if (::connect(filler_->get(), reinterpret_cast<const sockaddr*>(&self), sizeof self) != 0) {
      throw std::runtime_error("cannot fill the accept queue");
    }
  }
  SilentImds(const SilentImds&) = delete;
  SilentImds& operator=(const SilentImds&) = delete;
  ~SilentImds() {
    stop_ = true;
    if (server_.joinable()) server_.join();
  }

  [[nodiscard]] std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // Once a SYN has been dropped, empties the queue and answers from then on.
  void open_after_first_lost_syn() {
    server_ = std::thread([this] {
      const auto give_up = Clock::now() + std::chrono::seconds(5);
      while (!syn_sent_to(port_) && Clock::now() < give_up && !stop_) {
        std::this_thread::sleep_for(milliseconds(2));
      }
      serve();
    });
  }

 private:
  void serve() {
    Fd queued(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    queued.reset();
    filler_.reset();
    while (!stop_) {
      pollfd waiting{listener_.get(), POLLIN, 0};
      if (::poll(&waiting, 1, 50) != 1) continue;
      Fd connection(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (connection.get() >= 0) answer(connection.get());
    }
  }

  static void answer(int fd) {
    std::string head;
    std::array<char, 1024> buffer{};
    while (head.find("\r\n\r\n") == std::string::npos && head.size() < 16384) {
      pollfd readable{fd, POLLIN, 0};
      if (::poll(&readable, 1, 2000) != 1) return;
      const ssize_t n = ::read(fd, buffer.data(), buffer.size());
      if (n <= 0) return;
      head.append(buffer.data(), static_cast<std::size_t>(n));
    }
    const bool put = head.starts_with("PUT ");
    const std::string body = put ? std::string(56, 'A') : "i-0123456789abcdef0";
    std::string response = "HTTP/1.1 200 OK\r\nServer: EC2ws\r\nContent-Type: text/plain\r\n";
    if (put) response += "X-aws-ec2-metadata-token-ttl-seconds: 60\r\n";
    response +=
        "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    (void)::send(fd, response.data(), response.size(), MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_WR);
    pollfd closed{fd, POLLIN, 0};
    (void)::poll(&closed, 1, 1000);  // the client's FIN, so the close sends no RST
  }

  Fd listener_;
  std::unique_ptr<Fd> filler_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread server_;
};

CollectConfig just_the_token(const std::string& url) {
  CollectConfig config;
  config.endpoint_v4 = url;
  config.probe_v6 = false;
  config.probe_v1 = false;
  config.probe_listing = false;
  config.probe_identity = false;
  config.packet_ttl = false;
  config.connect_timeout = milliseconds{300};
  config.request_timeout = milliseconds{2000};
  config.deadline = milliseconds{5000};
  return config;
}

const Observation& find(const TargetObservations& target, Step step) {
  for (const Observation& observation : target.observations) {
    if (observation.step == step && observation.family == Family::v4) return observation;
  }
  throw std::runtime_error("no such observation");
}

bool has_finding(const Diagnosis& d, const std::string& id) {
  return std::any_of(d.findings.begin(), d.findings.end(),
                     [&](const Finding& f) { return f.id == id; });
}

TEST(CollectRetry, AConnectWhoseSynGetsNoAnswerIsRetriedOnceAndTheRetryAnswers) {
  SilentImds imds;
  imds.open_after_first_lost_syn();
  const CollectConfig config = just_the_token(imds.url());
  const CollectResult result = collect(config, {test::host_target()});
  const TargetObservations& at_host = result.targets.at(0);

  const HttpResult& put = find(at_host, Step::token_put).result;
  ASSERT_EQ(put.outcome, Outcome::http) << put.error;
  EXPECT_EQ(put.status, 200);
  EXPECT_TRUE(put.connected);
  EXPECT_TRUE(put.retried);
  EXPECT_LT(put.latency, config.connect_timeout) << "the latency is the retry's own";
  const HttpResult& v2 = find(at_host, Step::v2_get).result;
  EXPECT_EQ(v2.status, 200);
  EXPECT_EQ(v2.body, "i-0123456789abcdef0");
  EXPECT_FALSE(v2.retried);
}

TEST(CollectRetry, TheDiagnosisSaysTransientNotFirewalledWhenTheRetryAnswers) {
  SilentImds imds;
  imds.open_after_first_lost_syn();
  const Diagnosis d = diagnose_targets({test::host_target()}, just_the_token(imds.url()), {});
  EXPECT_EQ(d.inference.endpoint, EndpointState::enabled);
  ASSERT_FALSE(d.inference.targets.empty());
  EXPECT_EQ(d.inference.targets[0].v4.reachable, Tristate::yes);
  EXPECT_EQ(d.inference.targets[0].v4.imdsv2, Tristate::yes);
  EXPECT_TRUE(has_finding(d, "transient-no-answer"));
  EXPECT_FALSE(has_finding(d, "endpoint-unreachable"));
  for (const Finding& f : d.findings) {
    if (f.id != "transient-no-answer") continue;
    EXPECT_EQ(f.severity, Severity::info) << "a transient loss is no reason to alarm";
    EXPECT_NE(f.summary.find("transient"), std::string::npos) << f.summary;
  }
}

TEST(CollectRetry, AConnectThatNeverGetsAnAnswerIsTriedTwiceThenFirewalled) {
  SilentImds imds;  // never opened: every SYN is dropped
  const CollectConfig config = just_the_token(imds.url());
  const auto started = Clock::now();
  const Diagnosis d = diagnose_targets({test::host_target()}, config, {});
  const auto took = Clock::now() - started;

  const HttpResult& put = find(d.targets.at(0), Step::token_put).result;
  EXPECT_EQ(put.outcome, Outcome::timeout);
  EXPECT_FALSE(put.connected);
  EXPECT_FALSE(put.cut_by_deadline);
  EXPECT_TRUE(put.retried);
  EXPECT_EQ(result_words(put), "connect timed out, and again when retried");
  EXPECT_GE(took, 2 * config.connect_timeout) << "two connects, each given its full timeout";
  EXPECT_EQ(find(d.targets.at(0), Step::v2_get).result.skip, SkipReason::no_token);
  EXPECT_EQ(d.inference.endpoint, EndpointState::unreachable);
  EXPECT_EQ(d.inference.unreachable_reason, UnreachableReason::firewalled);
  EXPECT_FALSE(has_finding(d, "transient-no-answer"));
}

TEST(CollectRetry, ARetryIsOneMoreRequestUnderTheRequestBound) {
  SilentImds imds;
  imds.open_after_first_lost_syn();
  CollectConfig config = just_the_token(imds.url());
  config.request_bucket = std::make_shared<RequestBucket>(RequestRate{100.0, 14});
  const CollectResult result = collect(config, {test::host_target()});
  EXPECT_TRUE(find(result.targets.at(0), Step::token_put).result.retried);
  EXPECT_EQ(find(result.targets.at(0), Step::v2_get).result.status, 200);
  // The PUT, its retry and the GET with the token; none of the namespace's plan was lost.
  EXPECT_EQ(config.request_bucket->stats().sent, 3U);
}

TEST(CollectRetry, NoRetryWhenTheDeadlineLeavesNoTimeForAWholeConnect) {
  SilentImds imds;
  CollectConfig config = just_the_token(imds.url());
  config.connect_timeout = milliseconds{300};
  config.deadline = milliseconds{500};
  const CollectResult result = collect(config, {test::host_target()});
  const HttpResult& put = find(result.targets.at(0), Step::token_put).result;
  EXPECT_EQ(put.outcome, Outcome::timeout);
  EXPECT_FALSE(put.retried) << "a retry the deadline would cut proves nothing";
}

}  // namespace
}  // namespace imds
