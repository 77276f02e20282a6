// imds-emulator: Boost.Beast HTTP/1.1 server around the rules (rules.hpp) and the control
// API (control.hpp), on one io_context thread. What only real sockets can do lives here:
// the hop limit as the IP TTL of token PUT responses, RSTs, hangs, raw garbage.
#include <fcntl.h>
#include <netinet/in.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cli.hpp"
#include "control.hpp"
#include "rules.hpp"

namespace imds::emu {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using unix_stream = asio::local::stream_protocol;
using namespace std::chrono_literals;

// After a response: how long the client has to close first (it was told Connection: close),
// reading and discarding what it still sends, before the server closes.
constexpr auto kLingerDrain = 2s;
constexpr auto kHangLimit = 60s;               // "hang" faults end after this at the latest
constexpr auto kResetAfterDroppedPut = 100ms;  // below Linux's 200 ms minimum RTO
constexpr auto kStartupBindRetry = 3s;         // a fresh IPv6 address may still be tentative
constexpr std::uint32_t kHeaderLimit = 16 * 1024;
// A token PUT body is ignored, but bounded.
constexpr std::uint64_t kBodyLimit = std::uint64_t{64} * 1024;
constexpr std::uint64_t kControlBodyLimit = std::uint64_t{1024} * 1024;

// Descriptors Asio creates lack O_CLOEXEC; the emulator never executes anything, but
// keep the project rule anyway.
void set_cloexec(int fd) { ::fcntl(fd, F_SETFD, FD_CLOEXEC); }

std::string printable(std::string_view s, std::size_t limit = 200) {
  std::string out;
  for (char c : s.substr(0, limit)) out += (c >= ' ' && c < 127) ? c : '?';
  return out;
}

// IP TTL (IPv4) or unicast hop limit (IPv6) of the packets this socket sends from now
// on; -1 restores the system default.
bool set_ttl(int fd, Family family, int ttl) {
  const int rc = family == Family::v4
                     ? ::setsockopt(fd, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl)
                     : ::setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &ttl, sizeof ttl);
  if (rc != 0) {
    spdlog::error("cannot set the {} of a connection to {}: {}",
                  family == Family::v4 ? "IP_TTL" : "IPV6_UNICAST_HOPS", ttl, std::strerror(errno));
    return false;
  }
  return true;
}

class Emulator;

// One IMDS connection: read one request, answer it (or misbehave as the faults say), close.
class ImdsConnection : public std::enable_shared_from_this<ImdsConnection> {
 public:
  ImdsConnection(tcp::socket socket, Emulator& emulator, std::shared_ptr<int> live);
  ImdsConnection(const ImdsConnection&) = delete;
  ImdsConnection& operator=(const ImdsConnection&) = delete;
  ~ImdsConnection();
  void start();

 private:
  void on_header(beast::error_code ec);
  void on_body(beast::error_code ec);
  void dispatch();
  void perform();
  void on_written(beast::error_code ec);
  void trickle_next();
  void reject_unparsable();
  void linger_then_close(std::chrono::steady_clock::duration limit);
  void drain();
  void reset();
  int fd() { return stream_.socket().native_handle(); }

  Emulator& emulator_;
  std::shared_ptr<int> live_;  // connection count, shared: may outlive the Emulator
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request_parser<http::string_body> parser_;
  asio::steady_timer timer_;
  Family family_ = Family::v4;
  std::string peer_;
  std::uint16_t port_ = 0;
  Response response_;
  http::response<http::string_body> message_;
  std::string trickled_;  // the serialised response, for the trickle fault
  std::size_t trickled_pos_ = 0;
  std::array<char, 4096> scratch_{};
};

// One --listen address. IPv6 listeners open and close with the ipv6 option.
class Listener {
 public:
  Listener(asio::io_context& io, tcp::endpoint endpoint, Emulator& emulator)
      : io_(io), endpoint_(std::move(endpoint)), emulator_(emulator), backoff_(io) {}
  [[nodiscard]] bool is_v6() const { return endpoint_.address().is_v6(); }
  [[nodiscard]] bool is_open() const { return acceptor_.has_value(); }
  [[nodiscard]] std::string name() const {
    return is_v6() ? "[" + endpoint_.address().to_string() + "]:" + std::to_string(endpoint_.port())
                   : endpoint_.address().to_string() + ":" + std::to_string(endpoint_.port());
  }
  // Empty on success, else the reason.
  std::string open(std::chrono::steady_clock::duration retry_for) {
    const auto deadline = std::chrono::steady_clock::now() + retry_for;
    for (;;) {
      std::string err = try_open();
      if (err.empty() || std::chrono::steady_clock::now() >= deadline ||
          err.find("Cannot assign requested address") == std::string::npos) {
        return err;
      }
      std::this_thread::sleep_for(50ms);
    }
  }
  void close() {
    if (!acceptor_) return;
    backoff_.cancel();
    beast::error_code ec;
    acceptor_->close(ec);
    acceptor_.reset();
    spdlog::info("closed the listener on {}", name());
  }

 private:
  std::string try_open() {
    const int domain = is_v6() ? AF_INET6 : AF_INET;
    const int fd = ::socket(domain, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::strerror(errno);
    tcp::acceptor acceptor(io_);
    beast::error_code ec;
    acceptor.assign(endpoint_.protocol(), fd, ec);
    if (ec) {
      ::close(fd);
      return ec.message();
    }
    acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec && is_v6()) acceptor.set_option(asio::ip::v6_only(true), ec);
    if (!ec) acceptor.bind(endpoint_, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return ec.message();
    acceptor_.emplace(std::move(acceptor));
    accept();
    return {};
  }
  void accept();

  asio::io_context& io_;
  tcp::endpoint endpoint_;
  Emulator& emulator_;
  std::optional<tcp::acceptor> acceptor_;
  asio::steady_timer backoff_;  // after a failed accept (EMFILE...), instead of spinning
};

class ControlConnection : public std::enable_shared_from_this<ControlConnection> {
 public:
  ControlConnection(unix_stream::socket socket, Emulator& emulator)
      : emulator_(emulator), socket_(std::move(socket)), timer_(socket_.get_executor()) {}
  void start();

 private:
  Emulator& emulator_;
  unix_stream::socket socket_;
  asio::steady_timer timer_;
  beast::flat_buffer buffer_;
  http::request_parser<http::string_body> parser_;
  http::response<http::string_body> message_;
};

class Emulator {
 public:
  Emulator(asio::io_context& io, Config config)
      : io_(io), config_(std::move(config)), state_(config_.options), pending_timer_(io) {}

  State& state() { return state_; }
  bool verbose() const { return config_.verbose; }
  // Idle or slow clients cannot pin a connection longer than this.
  std::chrono::milliseconds read_timeout() const { return config_.read_timeout; }

  // Opens every listener the options call for and the control socket; false (after
  // logging why) when one cannot be set up.
  bool start() {
    for (const auto& a : config_.listen) {
      listeners_.push_back(std::make_unique<Listener>(
          io_, tcp::endpoint(asio::ip::make_address(a), config_.port), *this));
    }
    const bool v6 = state_.in_force(std::chrono::steady_clock::now()).ipv6_enabled;
    for (auto& l : listeners_) {
      if (l->is_v6() && !v6) continue;
      if (auto err = l->open(kStartupBindRetry); !err.empty()) {
        spdlog::error(
            "cannot listen on {}: {} (is the address configured on an interface, "
            "with nodad for IPv6, and is the port free?)",
            l->name(), err);
        return false;
      }
      spdlog::info("IMDS listening on {}", l->name());
    }
    if (config_.control) return open_control(*config_.control);
    return true;
  }

  void stop() {
    for (auto& l : listeners_) l->close();
    if (control_) {
      beast::error_code ec;
      control_->close(ec);
      ::unlink(config_.control->c_str());
    }
  }

  // IPv6 listeners follow the ipv6 option in force; re-armed for a pending change.
  void sync_listeners() {
    const auto now = std::chrono::steady_clock::now();
    const bool v6 = state_.in_force(now).ipv6_enabled;
    for (auto& l : listeners_) {
      if (!l->is_v6()) continue;
      if (v6 && !l->is_open()) {
        if (auto err = l->open(0s); !err.empty()) {
          spdlog::error("cannot listen on {}: {}", l->name(), err);
        } else {
          spdlog::info("IMDS listening on {}", l->name());
        }
      } else if (!v6 && l->is_open()) {
        l->close();
      }
    }
    pending_timer_.cancel();
    if (const auto until = state_.pending_until()) {
      pending_timer_.expires_at(*until);
      pending_timer_.async_wait([this](beast::error_code ec) {
        if (!ec) sync_listeners();
      });
    }
  }

  // A counter for a new connection, or null when there are too many.
  std::shared_ptr<int> admit() {
    if (*connections_ >= config_.max_connections) return nullptr;
    ++*connections_;
    return connections_;
  }

 private:
  bool open_control(const std::string& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        spdlog::error("--control {}: exists and is not a socket; not replacing it", path);
        return false;
      }
      ::unlink(path.c_str());
    }
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      spdlog::error("--control {}: socket: {}", path, std::strerror(errno));
      return false;
    }
    control_.emplace(io_);
    beast::error_code ec;
    control_->assign(unix_stream(), fd, ec);
    if (!ec) control_->bind(unix_stream::endpoint(path), ec);
    if (!ec) control_->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      spdlog::error("--control {}: {}", path, ec.message());
      return false;
    }
    spdlog::info("control API on {}", path);
    accept_control();
    return true;
  }

  void accept_control() {
    control_->async_accept([this](beast::error_code ec, unix_stream::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) {
        set_cloexec(socket.native_handle());
        std::make_shared<ControlConnection>(std::move(socket), *this)->start();
      }
      accept_control();
    });
  }

  asio::io_context& io_;
  Config config_;
  State state_;
  asio::steady_timer pending_timer_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::optional<unix_stream::acceptor> control_;
  std::shared_ptr<int> connections_ = std::make_shared<int>(0);
};

void Listener::accept() {
  acceptor_->async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_) return;
    if (ec) {
      spdlog::warn("accept on {} failed: {}; retrying in 100 ms", name(), ec.message());
      backoff_.expires_after(100ms);
      backoff_.async_wait([this](beast::error_code e) {
        if (!e && acceptor_) accept();
      });
      return;
    }
    set_cloexec(socket.native_handle());
    if (auto live = emulator_.admit()) {
      std::make_shared<ImdsConnection>(std::move(socket), emulator_, std::move(live))->start();
    } else {
      spdlog::warn("too many connections; closing one from {}",
                   socket.remote_endpoint(ec).address().to_string());
    }
    accept();
  });
}

ImdsConnection::ImdsConnection(tcp::socket socket, Emulator& emulator, std::shared_ptr<int> live)
    : emulator_(emulator),
      live_(std::move(live)),
      stream_(std::move(socket)),
      timer_(stream_.get_executor()) {
  beast::error_code ec;
  const auto remote = stream_.socket().remote_endpoint(ec);
  if (!ec) {
    family_ = remote.address().is_v6() ? Family::v6 : Family::v4;
    peer_ = remote.address().to_string();
    port_ = remote.port();
  }
  parser_.header_limit(kHeaderLimit);
  parser_.body_limit(kBodyLimit);
}

ImdsConnection::~ImdsConnection() { --*live_; }

void ImdsConnection::start() {
  stream_.expires_after(emulator_.read_timeout());
  http::async_read_header(
      stream_, buffer_, parser_,
      [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
}

void ImdsConnection::on_header(beast::error_code ec) {
  if (ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::connection_reset || ec == asio::error::eof) {
      return;  // the client left or idled out: nothing to answer
    }
    reject_unparsable();
    return;
  }
  // 417 must come before the body: the client waits for "100 Continue" before sending it.
  Request probe;
  for (const auto& f : parser_.get()) {
    if (beast::iequals(f.name_string(), "Expect")) {
      probe.headers.push_back({"Expect", std::string(f.value())});
    }
  }
  if (has_expectation(probe) || parser_.is_done()) {
    dispatch();
    return;
  }
  http::async_read(
      stream_, buffer_, parser_,
      [self = shared_from_this()](beast::error_code e, std::size_t) { self->on_body(e); });
}

void ImdsConnection::on_body(beast::error_code ec) {
  if (ec == http::error::body_limit) {
    reject_unparsable();
    return;
  }
  if (ec) return;
  dispatch();
}

void ImdsConnection::reject_unparsable() {
  // Not a request the rules can judge (bad syntax, header or body too large).
  stream_.expires_after(emulator_.read_timeout());
  message_ = {};
  message_.version(11);
  message_.result(http::status::bad_request);
  message_.set(http::field::server, "EC2ws");
  message_.set(http::field::connection, "close");
  message_.prepare_payload();
  http::async_write(stream_, message_, [self = shared_from_this()](beast::error_code, std::size_t) {
    beast::error_code ignored;
    self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    self->linger_then_close(kLingerDrain);
  });
}

void ImdsConnection::dispatch() {
  stream_.expires_never();
  const auto& req = parser_.get();
  Request request;
  request.method = std::string(req.method_string());
  request.target = std::string(req.target());
  for (const auto& f : req) {
    request.headers.push_back({std::string(f.name_string()), std::string(f.value())});
  }
  request.peer = peer_;
  request.port = port_;
  request.family = family_;
  response_ = handle(request, emulator_.state(), Now::current());
  if (emulator_.verbose()) {
    spdlog::info("#{} {} {} {} -> {}{}", response_.seq, peer_, printable(request.method),
                 printable(request.target), response_.status,
                 response_.hop_limit ? " (TTL " + std::to_string(*response_.hop_limit) + ")" : "");
  }
  if (response_.delay.count() > 0) {
    timer_.expires_after(response_.delay);
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->perform();
    });
    return;
  }
  perform();
}

void ImdsConnection::perform() {
  auto done = [self = shared_from_this()](beast::error_code ec, std::size_t) {
    self->on_written(ec);
  };
  switch (response_.action) {
    case Action::hang:
      linger_then_close(kHangLimit);
      return;
    case Action::reset:
      reset();
      return;
    case Action::malformed:
      if (response_.hop_limit) set_ttl(fd(), family_, *response_.hop_limit);
      stream_.expires_after(emulator_.read_timeout());
      asio::async_write(stream_, asio::buffer(response_.body), done);
      return;
    case Action::respond:
      break;
  }
  message_ = {};
  message_.version(parser_.get().version() == 10 ? 10 : 11);
  message_.result(static_cast<unsigned>(response_.status));
  for (const auto& h : response_.headers) message_.insert(h.name, h.value);
  if (response_.head_only) {
    message_.content_length(response_.body.size());
  } else {
    message_.body() = std::move(response_.body);
    message_.prepare_payload();
  }
  if (response_.hop_limit) set_ttl(fd(), family_, *response_.hop_limit);
  if (response_.trickle.count() > 0) {
    std::ostringstream bytes;
    bytes << message_;
    trickled_ = std::move(bytes).str();
    trickled_pos_ = 0;
    trickle_next();
    return;
  }
  stream_.expires_after(emulator_.read_timeout());
  http::async_write(stream_, message_, done);
}

// One byte, a pause, the next byte: until the response is out or the client leaves.
void ImdsConnection::trickle_next() {
  if (trickled_pos_ >= trickled_.size()) {
    on_written({});
    return;
  }
  stream_.expires_after(emulator_.read_timeout());
  asio::async_write(stream_, asio::buffer(&trickled_[trickled_pos_], 1),
                    [self = shared_from_this()](beast::error_code ec, std::size_t) {
                      if (ec) return;
                      ++self->trickled_pos_;
                      self->timer_.expires_after(self->response_.trickle);
                      self->timer_.async_wait([self](beast::error_code e) {
                        if (!e) self->trickle_next();
                      });
                    });
}

void ImdsConnection::on_written(beast::error_code ec) {
  if (ec) return;
  if (response_.hop_limit && response_.after_dropped_put == AfterDroppedPut::hang) {
    // Keep the connection (and its low TTL) open: a client whose response was dropped
    // waits for its own timeout, retransmissions keep dying on the way.
    linger_then_close(kHangLimit);
    return;
  }
  if (response_.hop_limit && response_.after_dropped_put == AfterDroppedPut::reset) {
    timer_.expires_after(kResetAfterDroppedPut);
    timer_.async_wait([self = shared_from_this()](beast::error_code e) {
      if (e) return;
      // The RST must reach the client, so it leaves with the default TTL.
      set_ttl(self->fd(), self->family_, -1);
      self->reset();
    });
    return;
  }
  if (response_.action == Action::malformed) {
    // No framing: the client reads until the end of the stream.
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }
  // Every answer says Connection: close and has a length, so the client closes first and the
  // TIME_WAIT stays on its side. Were the server the first to close, it would hold every
  // (client address, port) pair in TIME_WAIT for 60 s. Behind the lab's NAT the host and all
  // containers are one client address: the NAT or the host's connect() hands out a port the
  // server still holds, its PAWS check drops the new SYN (TcpExtPAWSTimewait), and in a busy
  // lab about one connection in a thousand got no answer at all.
  linger_then_close(kLingerDrain);
}

// Reads and discards until the client closes or `limit` passes, then closes. Closing with
// unread data pending would make the kernel send an RST instead of a FIN.
void ImdsConnection::linger_then_close(std::chrono::steady_clock::duration limit) {
  stream_.expires_after(limit);
  drain();
}

void ImdsConnection::drain() {
  stream_.async_read_some(asio::buffer(scratch_),
                          [self = shared_from_this()](beast::error_code ec, std::size_t) {
                            if (ec) {
                              beast::error_code ignored;
                              self->stream_.socket().close(ignored);
                              return;
                            }
                            self->drain();
                          });
}

void ImdsConnection::reset() {
  beast::error_code ignored;
  stream_.socket().set_option(asio::socket_base::linger(true, 0), ignored);
  stream_.socket().close(ignored);
}

void ControlConnection::start() {
  parser_.header_limit(kHeaderLimit);
  parser_.body_limit(kControlBodyLimit);
  timer_.expires_after(emulator_.read_timeout());
  timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (!ec) {
      beast::error_code ignored;
      self->socket_.close(ignored);
    }
  });
  http::async_read(
      socket_, buffer_, parser_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
        auto& m = self->message_;
        m.version(11);
        m.set(http::field::content_type, "application/json");
        m.set(http::field::connection, "close");
        if (ec) {
          if (ec == asio::error::operation_aborted || ec == asio::error::eof ||
              ec == http::error::end_of_stream) {
            return;
          }
          m.result(http::status::bad_request);
          m.body() = R"({"error":"unreadable HTTP request: )" + printable(ec.message()) + "\"}\n";
        } else {
          const auto& req = self->parser_.get();
          const auto reply = handle_control(
              std::string_view(req.method_string().data(), req.method_string().size()),
              std::string_view(req.target().data(), req.target().size()), req.body(),
              self->emulator_.state(), Now::current());
          m.result(static_cast<unsigned>(reply.status));
          m.body() = reply.body;
          if (req.method() == http::verb::post) self->emulator_.sync_listeners();
        }
        m.prepare_payload();
        http::async_write(self->socket_, m, [self](beast::error_code, std::size_t) {
          beast::error_code ignored;
          self->socket_.shutdown(unix_stream::socket::shutdown_send, ignored);
          self->timer_.cancel();
          self->socket_.close(ignored);
        });
      });
}

bool write_ready(int fd) {
  constexpr std::string_view kReady = "ready\n";
  std::size_t off = 0;
  while (off < kReady.size()) {
    const ssize_t n = ::write(fd, kReady.data() + off, kReady.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("--ready-fd {}: {}", fd, std::strerror(errno));
      return false;
    }
    off += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return true;
}

int run(Config config) {
  if (config.ready_fd && ::fcntl(*config.ready_fd, F_GETFD) < 0) {
    spdlog::error("--ready-fd {}: not an open file descriptor", *config.ready_fd);
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  asio::io_context io(1);
  const auto ready_fd = config.ready_fd;
  Emulator emulator(io, std::move(config));
  if (!emulator.start()) {
    emulator.stop();
    return 1;
  }
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](beast::error_code ec, int signo) {
    if (ec) return;
    spdlog::info("signal {}: stopping", signo);
    emulator.stop();
    io.stop();
  });
  if (ready_fd && !write_ready(*ready_fd)) {
    emulator.stop();
    return 1;
  }
  io.run();
  return 0;
}

}  // namespace
}  // namespace imds::emu

int main(int argc, char** argv) {
  auto cli = imds::emu::parse_command_line(argc, argv);
  std::cout << cli.out << std::flush;
  std::cerr << cli.err << std::flush;
  if (!cli.config) return cli.exit_code;
  auto logger = spdlog::stderr_color_mt("imds-emulator");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e imds-emulator: %v");
  spdlog::set_default_logger(logger);
  try {
    return imds::emu::run(std::move(*cli.config));
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
}
