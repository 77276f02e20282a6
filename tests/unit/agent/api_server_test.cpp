// The Unix-socket HTTP server against well-behaved and hostile clients: oversized headers
// and bodies, garbage, slowloris, connection floods. None of it may stall other clients.
#include "api_server.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <string_view>
#include <thread>

namespace imds::agent {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  [[nodiscard]] int get() const { return fd_; }

 private:
  int fd_;
};

class ApiServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (std::filesystem::temp_directory_path() /
             ("imds-agent-api-" + std::to_string(::getpid()) + ".sock"))
                .string();
    limits_.request_timeout = 400ms;
    limits_.write_timeout = 400ms;
    limits_.max_connections = 4;
  }
  void start() {
    server_ = std::make_unique<ApiServer>(
        io_,
        [this](const ApiRequest& r, const std::function<void(ApiResponse)>& respond) {
          ++handled_;
          ApiResponse res;
          res.content_type = "text/plain";
          res.body = r.method + " " + r.target + " " + std::to_string(r.body.size());
          respond(std::move(res));
        },
        limits_);
    auto err = server_->listen(path_, std::nullopt);
    ASSERT_FALSE(err.has_value()) << *err;
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    boost::asio::post(io_, [this] { server_->close(); });
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
    server_.reset();
    std::filesystem::remove(path_);
  }

  Fd connect_client() {
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    return fd;
  }
  static void send_all(const Fd& fd, std::string_view data) {
    while (!data.empty()) {
      auto n = ::send(fd.get(), data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  // Everything until the server closes or `limit` passes; `closed` says which.
  static std::string read_until_close(const Fd& fd, std::chrono::milliseconds limit,
                                      bool* closed = nullptr) {
    std::string out;
    auto deadline = Clock::now() + limit;
    if (closed) *closed = false;
    while (Clock::now() < deadline) {
      pollfd p{fd.get(), POLLIN, 0};
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (::poll(&p, 1, static_cast<int>(std::max<long>(left.count(), 1))) <= 0) continue;
      std::array<char, 4096> buf{};
      auto n = ::recv(fd.get(), buf.data(), buf.size(), 0);
      if (n <= 0) {
        if (closed) *closed = true;
        break;
      }
      out.append(buf.data(), static_cast<std::size_t>(n));
    }
    return out;
  }
  std::string get(const std::string& target) {
    auto fd = connect_client();
    send_all(fd, "GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    return read_until_close(fd, 2s);
  }

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
      io_.get_executor()};
  std::unique_ptr<ApiServer> server_;
  std::thread thread_;
  std::string path_;
  ApiLimits limits_;
  std::atomic<int> handled_{0};
};

TEST_F(ApiServerTest, AWellFormedRequestIsAnsweredAndTheSocketIsMode0660) {
  start();
  auto reply = get("/v1/status");
  EXPECT_EQ(reply.rfind("HTTP/1.1 200 OK\r\n", 0), 0U) << reply;
  EXPECT_NE(reply.find("GET /v1/status 0"), std::string::npos);
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660U);
}

TEST_F(ApiServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  start();
  auto fd = connect_client();
  send_all(
      fd,
      "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  auto reply = read_until_close(fd, 2s);
  EXPECT_NE(reply.find("GET /a 0"), std::string::npos);
  EXPECT_NE(reply.find("GET /b 0"), std::string::npos);
}

TEST_F(ApiServerTest, AnOversizedHeaderIsRefusedWith431AndTheConnectionClosed) {
  start();
  auto fd = connect_client();
  const std::string big(std::size_t{64} * 1024, 'a');
  send_all(fd, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + big + "\r\n\r\n");
  bool closed = false;
  auto reply = read_until_close(fd, 2s, &closed);
  EXPECT_EQ(reply.rfind("HTTP/1.1 431", 0), 0U) << reply.substr(0, 80);
  EXPECT_TRUE(closed);
  EXPECT_EQ(handled_, 0);
}

TEST_F(ApiServerTest, AnOversizedBodyIsRefusedWith413) {
  start();
  auto fd = connect_client();
  send_all(fd, "POST /v1/probe HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" +
                   std::string(10000, 'b'));
  bool closed = false;
  auto reply = read_until_close(fd, 2s, &closed);
  EXPECT_EQ(reply.rfind("HTTP/1.1 413", 0), 0U) << reply.substr(0, 80);
  EXPECT_TRUE(closed);
  EXPECT_EQ(handled_, 0);
}

TEST_F(ApiServerTest, GarbageIsAnsweredWith400AndTheConnectionClosed) {
  start();
  auto fd = connect_client();
  send_all(fd, std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 22));
  bool closed = false;
  auto reply = read_until_close(fd, 2s, &closed);
  EXPECT_EQ(reply.rfind("HTTP/1.1 400", 0), 0U) << reply.substr(0, 80);
  EXPECT_TRUE(closed);
}

TEST_F(ApiServerTest, ASlowlorisClientIsCutOffAndDoesNotDelayOthers) {
  start();
  auto slow = connect_client();
  send_all(slow, "GET /v1/status HTTP/1.1\r\nHost: x\r\n");
  // Meanwhile another client is served at once.
  auto t0 = Clock::now();
  auto reply = get("/metrics");
  EXPECT_LT(Clock::now() - t0, 300ms);
  EXPECT_NE(reply.find("GET /metrics 0"), std::string::npos);
  // The slow one keeps trickling header bytes, but the deadline covers the whole request.
  bool closed = false;
  for (int i = 0; i < 10 && !closed; ++i) {
    send_all(slow, "X-Slow: 1\r\n");
    read_until_close(slow, 100ms, &closed);
  }
  EXPECT_TRUE(closed) << "the server kept a trickling client beyond its request deadline";
  EXPECT_LT(Clock::now() - t0, 1500ms);
}

TEST_F(ApiServerTest, ConnectionsBeyondTheCapAreClosedAndServiceResumesAfterIdleOnesTimeOut) {
  start();
  std::vector<Fd> idle;
  for (std::size_t i = 0; i < limits_.max_connections; ++i) idle.push_back(connect_client());
  std::this_thread::sleep_for(50ms);  // let the server accept them
  auto extra = connect_client();
  bool closed = false;
  read_until_close(extra, 300ms, &closed);
  EXPECT_TRUE(closed) << "a connection over the cap was kept";
  // The idle ones never send a request: they are dropped at the request deadline.
  std::this_thread::sleep_for(limits_.request_timeout + 200ms);
  auto reply = get("/after");
  EXPECT_NE(reply.find("GET /after 0"), std::string::npos);
}

TEST_F(ApiServerTest, RunningOutOfDescriptorsPausesAcceptingInsteadOfSpinning) {
  start();
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old), 0);
  rlimit low = old;
  low.rlim_cur = 64;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<Fd> hog;
  for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) hog.emplace_back(fd);
  hog.pop_back();  // room for the client's own socket, none for the server's accept()
  auto client = connect_client();
  send_all(client, "GET /starved HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  rusage before{};
  ::getrusage(RUSAGE_SELF, &before);
  std::this_thread::sleep_for(500ms);
  rusage after{};
  ::getrusage(RUSAGE_SELF, &after);
  auto cpu_ms = [](const rusage& r) {
    return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1000.0 +
           static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1000.0;
  };
  hog.clear();
  ::setrlimit(RLIMIT_NOFILE, &old);
  EXPECT_LT(cpu_ms(after) - cpu_ms(before), 150.0) << "the accept loop spun on EMFILE";
  auto reply = read_until_close(client, 2s);
  EXPECT_NE(reply.find("GET /starved 0"), std::string::npos) << "not served after recovery";
}

TEST_F(ApiServerTest, AStaleSocketFileIsReplacedButAnythingElseIsNot) {
  {
    std::ofstream(path_) << "not a socket";
    ApiServer s(io_, [](const ApiRequest&, const std::function<void(ApiResponse)>& r) { r({}); });
    auto err = s.listen(path_, std::nullopt);
    ASSERT_TRUE(err.has_value());
    EXPECT_NE(err->find("is not a socket"), std::string::npos);
    std::filesystem::remove(path_);
  }
  {
    ApiServer first(io_,
                    [](const ApiRequest&, const std::function<void(ApiResponse)>& r) { r({}); });
    ASSERT_FALSE(first.listen(path_, std::nullopt).has_value());
  }  // closed and unlinked; a crash would leave the file: simulate it
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(fd);
  start();
  EXPECT_NE(get("/x").find("GET /x 0"), std::string::npos);
}

TEST_F(ApiServerTest, OneClientCannotTakeEverySlotAndOthersAreStillServed) {
  limits_.max_connections = 6;
  limits_.max_connections_per_peer = 2;
  limits_.request_timeout = 3s;
  start();
  std::vector<Fd> mine;
  mine.reserve(2);
  for (int i = 0; i < 2; ++i) mine.push_back(connect_client());
  std::this_thread::sleep_for(50ms);
  // A third connection from this process is refused with a 503 that says why.
  auto third = connect_client();
  bool closed = false;
  auto refused = read_until_close(third, 1s, &closed);
  EXPECT_EQ(refused.rfind("HTTP/1.1 503", 0), 0U) << refused;
  EXPECT_NE(refused.find("too many connections from this process"), std::string::npos);
  EXPECT_TRUE(closed);
  // Another process (another peer pid) is served although this one is at its share.
  std::array<int, 2> out{};
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, out.data()), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(out[0]);
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ::_exit(1);
    constexpr std::string_view req = "GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size()))
      ::_exit(1);
    std::array<char, 1024> buf{};
    ssize_t n = 0;
    while ((n = ::recv(fd, buf.data(), buf.size(), 0)) > 0) {
      if (::write(out[1], buf.data(), static_cast<std::size_t>(n)) != n) ::_exit(1);
    }
    ::_exit(0);
  }
  ::close(out[1]);
  Fd reader(out[0]);
  auto answer = read_until_close(reader, 3s);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_NE(answer.find("GET /other 0"), std::string::npos) << answer;
  // Once one of its connections is gone, this process gets a slot again.
  mine.pop_back();
  std::this_thread::sleep_for(50ms);
  EXPECT_NE(get("/again").find("GET /again 0"), std::string::npos);
}

TEST_F(ApiServerTest, CloseEndsIdleConnectionsAtOnceAndFinishesAnAnswerOwed) {
  limits_.request_timeout = 5s;
  std::function<void(ApiResponse)> owed;
  server_ = std::make_unique<ApiServer>(
      io_,
      [&](const ApiRequest&, std::function<void(ApiResponse)> respond) {
        owed = std::move(respond);  // answered later, as POST /v1/probe is
      },
      limits_);
  ASSERT_FALSE(server_->listen(path_, std::nullopt).has_value());
  thread_ = std::thread([this] { io_.run(); });
  auto idle = connect_client();
  auto waiting = connect_client();
  send_all(waiting, "POST /v1/probe HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
  std::this_thread::sleep_for(100ms);
  const auto t0 = Clock::now();
  boost::asio::post(io_, [&] {
    ApiResponse r;
    r.status = 503;
    r.body = "stopping";
    owed(std::move(r));  // the answer first, then close, as Agent::stop does
    owed = nullptr;
    server_->close();
  });
  bool closed = false;
  auto reply = read_until_close(waiting, 2s, &closed);
  EXPECT_EQ(reply.rfind("HTTP/1.1 503", 0), 0U) << reply;
  EXPECT_NE(reply.find("stopping"), std::string::npos);
  EXPECT_TRUE(closed);
  read_until_close(idle, 2s, &closed);
  EXPECT_TRUE(closed);
  EXPECT_LT(Clock::now() - t0, 1s) << "an idle connection was kept until its request deadline";
  std::this_thread::sleep_for(50ms);
  std::promise<std::size_t> left;
  boost::asio::post(io_, [&] { left.set_value(server_->connections()); });
  EXPECT_EQ(left.get_future().get(), 0U);
}

}  // namespace
}  // namespace imds::agent
