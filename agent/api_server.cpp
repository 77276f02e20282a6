// The Unix-socket HTTP server; see api_server.hpp for the guarantees.
#include "api_server.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "config.h"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Local = asio::local::stream_protocol;

namespace imds::agent {

class Session;

struct ApiServer::Shared {
  ApiHandler handler;
  ApiLimits limits;
  std::size_t connections = 0;
  std::map<pid_t, std::size_t> per_peer;  // open connections by peer pid
  std::set<Session*> sessions;            // to close them at close()
  bool closed = false;
  bool accept_failing = false;  // log the first EMFILE, not every retry
};

namespace {

// Asio opens sockets without SOCK_CLOEXEC; nothing here execs, but no fd may leak if
// something ever does.
void set_cloexec(int fd) {
  const int flags = ::fcntl(fd, F_GETFD);
  if (flags >= 0) ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

using Stream = beast::basic_stream<Local, asio::any_io_executor, beast::unlimited_rate_policy>;

// The peer's process id (SO_PEERCRED: the process that connected); 0 when unknown.
pid_t peer_pid(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return 0;
  return cred.pid;
}

// A connection refused before it is served: a short 503 sent without waiting (a fresh
// socket's buffer takes it whole, or the client gets the close alone), then close.
void refuse(Local::socket& socket, std::string_view why) {
  http::response<http::string_body> res{http::status::service_unavailable, 11};
  res.set(http::field::server, "imds-agent/" IMDS_VERSION);
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  res.set(http::field::retry_after, "1");
  res.body() = std::string(R"({"error":")") + std::string(why) + "\"}\n";
  res.keep_alive(false);
  res.prepare_payload();
  std::ostringstream out;
  out << res;
  const std::string text = out.str();
  (void)::send(socket.native_handle(), text.data(), text.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  boost::system::error_code ignored;
  socket.shutdown(Local::socket::shutdown_both, ignored);
  socket.close(ignored);
}

}  // namespace

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Local::socket socket, std::shared_ptr<ApiServer::Shared> shared, pid_t peer)
      : stream_(std::move(socket)),
        shared_(std::move(shared)),
        peer_(peer),
        grace_(stream_.get_executor()) {
    ++shared_->connections;
    ++shared_->per_peer[peer_];
    shared_->sessions.insert(this);
  }
  ~Session() {
    --shared_->connections;
    if (auto it = shared_->per_peer.find(peer_);
        it != shared_->per_peer.end() && --it->second == 0) {
      shared_->per_peer.erase(it);
    }
    shared_->sessions.erase(this);
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void start() { read(); }

  // The server closes: a request being read is abandoned; an answer being written gets
  // close_grace to finish; one the handler still owes is written when it comes (the agent
  // answers its waiting callers before it closes the server).
  void server_closing() {
    keep_alive_ = false;
    if (phase_ == Phase::reading) {
      beast::error_code ignored;
      stream_.socket().cancel(ignored);
    } else if (phase_ == Phase::writing) {
      arm_grace();
    }
  }

 private:
  enum class Phase { reading, handling, writing };

  void arm_grace() {
    grace_.expires_after(shared_->limits.close_grace);
    grace_.async_wait([weak = weak_from_this()](beast::error_code ec) {
      if (ec) return;
      if (auto self = weak.lock()) self->shutdown();
    });
  }

  void read() {
    phase_ = Phase::reading;
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(shared_->limits.header_limit));
    parser_->body_limit(shared_->limits.body_limit);
    // One deadline for the whole request: a client trickling bytes (slowloris) is cut off.
    stream_.expires_after(shared_->limits.request_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
        shared_->closed) {
      return shutdown();
    }
    if (ec == http::error::header_limit) return fail(431, "request header too large");
    if (ec == http::error::body_limit) return fail(413, "request body too large");
    if (ec) return fail(400, "malformed request");
    ++requests_;
    auto req = parser_->release();
    keep_alive_ = req.keep_alive() && requests_ < shared_->limits.max_requests_per_connection;
    ApiRequest request{std::string(req.method_string()), std::string(req.target()),
                       std::move(req.body())};
    version_ = req.version();
    // The handler may answer later (probe on demand): no read deadline while it works.
    stream_.expires_never();
    phase_ = Phase::handling;
    auto answered = std::make_shared<bool>(false);
    shared_->handler(request, [self = shared_from_this(), answered](ApiResponse r) {
      if (*answered) return;
      *answered = true;
      self->write(std::move(r));
    });
  }

  void fail(unsigned status, std::string_view why) {
    keep_alive_ = false;
    ApiResponse r;
    r.status = status;
    r.content_type = "application/json";
    r.body = std::string(R"({"error":")") + std::string(why) + "\"}\n";
    write(std::move(r));
  }

  void write(ApiResponse r) {
    phase_ = Phase::writing;
    if (shared_->closed) {  // an answer owed at close: still written, within the grace
      keep_alive_ = false;
      arm_grace();
    }
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(r.status), version_ == 10 ? 10 : 11);
    res->set(http::field::server, "imds-agent/" IMDS_VERSION);
    res->set(http::field::content_type, r.content_type);
    res->set(http::field::cache_control, "no-store");
    for (const auto& [k, v] : r.headers) res->set(k, v);
    res->body() = std::move(r.body);
    res->keep_alive(keep_alive_);
    res->prepare_payload();
    stream_.expires_after(shared_->limits.write_timeout);
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res](beast::error_code ec, std::size_t) {
                        self->grace_.cancel();
                        if (ec || !self->keep_alive_ || self->shared_->closed) {
                          return self->shutdown();
                        }
                        self->read();
                      });
  }

  void shutdown() {
    beast::error_code ignored;
    stream_.socket().shutdown(Local::socket::shutdown_both, ignored);
    stream_.close();
  }

  Stream stream_;
  std::shared_ptr<ApiServer::Shared> shared_;
  pid_t peer_;
  asio::steady_timer grace_;
  Phase phase_ = Phase::reading;
  beast::flat_buffer buffer_{std::size_t{8} * 1024};
  std::optional<http::request_parser<http::string_body>> parser_;
  std::size_t requests_ = 0;
  unsigned version_ = 11;
  bool keep_alive_ = false;
};

ApiServer::ApiServer(asio::io_context& io, ApiHandler handler, ApiLimits limits)
    : io_(io), shared_(std::make_shared<Shared>()), retry_(io) {
  shared_->handler = std::move(handler);
  shared_->limits = limits;
}

ApiServer::~ApiServer() {
  try {
    close();
  } catch (const std::exception& e) {  // timer cancel can only fail on a broken reactor
    spdlog::error("closing the API socket: {}", e.what());
  }
}

std::optional<std::string> ApiServer::listen(const std::string& path, std::optional<gid_t> gid) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path p(path);
  if (p.has_parent_path() && !fs::exists(p.parent_path(), ec)) {
    fs::create_directories(p.parent_path(), ec);
    if (ec) return "cannot create " + p.parent_path().string() + ": " + ec.message();
  }
  // Only a stale socket is replaced; anything else at that path is an error.
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return path + " exists and is not a socket";
    ::unlink(path.c_str());
  }
  auto acceptor = std::make_unique<Local::acceptor>(io_);
  boost::system::error_code bec;
  acceptor->open(Local(), bec);
  if (bec) return "socket(AF_UNIX): " + bec.message();
  set_cloexec(acceptor->native_handle());
  // Bind with a umask that leaves no window in which others could connect.
  const mode_t old_mask = ::umask(0117);
  acceptor->bind(Local::endpoint(path), bec);
  ::umask(old_mask);
  if (bec) return "cannot bind " + path + ": " + bec.message();
  if (::chmod(path.c_str(), 0660) != 0) {
    return "chmod 0660 " + path + ": " + std::strerror(errno);
  }
  // Only chown when the group differs: under the packaged unit the socket already has the
  // daemon's own group, and its seccomp filter (~@privileged) refuses chown(2) outright.
  struct stat sock_st {};
  const bool group_ok = ::stat(path.c_str(), &sock_st) == 0 && gid && sock_st.st_gid == *gid;
  if (gid && !group_ok && ::chown(path.c_str(), static_cast<uid_t>(-1), *gid) != 0) {
    return "chown " + path + " to group " + std::to_string(*gid) + ": " + std::strerror(errno);
  }
  // The kernel's backlog is not a slot: a flood of connects must not fill it so that a
  // well-formed client gets EAGAIN before the server can accept and refuse the flood
  // (the slots and the per-peer share are enforced after accept). Bounded by somaxconn.
  acceptor->listen(asio::socket_base::max_listen_connections, bec);
  if (bec) return "listen on " + path + ": " + bec.message();
  acceptor_ = std::move(acceptor);
  path_ = path;
  shared_->closed = false;
  accept();
  return std::nullopt;
}

void ApiServer::accept() {
  acceptor_->async_accept(
      [this, shared = shared_](boost::system::error_code ec, Local::socket socket) {
        if (shared->closed || ec == asio::error::operation_aborted) return;
        if (ec) {
          // EMFILE and friends complete at once: pause instead of spinning on them.
          if (!shared->accept_failing) {
            spdlog::warn("accept on {}: {}; retrying every 100ms", path_, ec.message());
          }
          shared->accept_failing = true;
          retry_.expires_after(std::chrono::milliseconds(100));
          retry_.async_wait([this, shared](boost::system::error_code e) {
            if (!e && !shared->closed) accept();
          });
          return;
        }
        if (shared->accept_failing) spdlog::info("accepting API connections again");
        shared->accept_failing = false;
        serve(std::move(socket));
        accept();
      });
}

void ApiServer::serve(Local::socket socket) {
  set_cloexec(socket.native_handle());
  const pid_t peer = peer_pid(socket.native_handle());
  const auto held = shared_->per_peer.find(peer);
  // Over a cap: refuse at once rather than queue.
  if (shared_->connections >= shared_->limits.max_connections) {
    refuse(socket, "too many connections to imds-agent; retry later");
  } else if (held != shared_->per_peer.end() &&
             held->second >= shared_->limits.max_connections_per_peer) {
    refuse(socket, "too many connections from this process (at most " +
                       std::to_string(shared_->limits.max_connections_per_peer) +
                       "); close some and retry");
  } else {
    std::make_shared<Session>(std::move(socket), shared_, peer)->start();
  }
}

void ApiServer::close() {
  const bool was_closed = shared_->closed;
  shared_->closed = true;
  retry_.cancel();
  if (!was_closed) {
    // Copy first: a session may end (and leave the set) while being told.
    const std::vector<Session*> open(shared_->sessions.begin(), shared_->sessions.end());
    for (Session* s : open) {
      if (shared_->sessions.contains(s)) s->server_closing();
    }
  }
  if (acceptor_) {
    boost::system::error_code ignored;
    acceptor_->close(ignored);
    acceptor_.reset();
    ::unlink(path_.c_str());
  }
}

std::size_t ApiServer::connections() const { return shared_->connections; }

}  // namespace imds::agent
