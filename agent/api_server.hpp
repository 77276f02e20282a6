// HTTP/1.1 over a Unix socket (Boost.Beast), built so that slow or hostile clients cannot
// stall the daemon: everything is asynchronous on the main loop, each request must arrive
// within a deadline, headers and bodies are size-capped, connections are counted, and no one
// client (peer process, SO_PEERCRED) may hold more than its share of them.
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace imds::agent {

struct ApiRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // "/v1/status"
  std::string body;
};

struct ApiResponse {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // e.g. Allow, Retry-After
};

// Calls `respond` exactly once, now or later (a probe on demand answers when it ends).
using ApiHandler = std::function<void(const ApiRequest&, std::function<void(ApiResponse)> respond)>;

struct ApiLimits {
  std::chrono::milliseconds request_timeout{5000};  // whole request, first byte to last
  std::chrono::milliseconds write_timeout{5000};
  std::size_t header_limit = std::size_t{8} * 1024;
  std::size_t body_limit = std::size_t{4} * 1024;
  std::size_t max_connections = 32;
  std::size_t max_connections_per_peer = 8;  // per peer pid: one client cannot take every slot
  // At close(), an answer still being written gets this long before its connection is cut.
  std::chrono::milliseconds close_grace{500};
  std::size_t max_requests_per_connection = 100;
};

class ApiServer {
 public:
  ApiServer(boost::asio::io_context& io, ApiHandler handler, ApiLimits limits = {});
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Binds `path` (replacing a stale socket file), mode 0660, group `gid` when given
  // (nullopt: the process's own group). Returns an error message on failure.
  std::optional<std::string> listen(const std::string& path, std::optional<gid_t> gid);
  // Stops accepting, closes idle connections and those still sending a request, lets the
  // answers already being written finish (each within close_grace), then closes those too.
  void close();
  [[nodiscard]] std::size_t connections() const;
  // Serves one already-connected socket as if it had just been accepted (the same caps and
  // per-peer share apply). accept() hands every connection here; the fuzzer
  // (tests/fuzz/api_request_fuzzer.cpp) feeds it one end of a socketpair.
  void serve(boost::asio::local::stream_protocol::socket socket);

  struct Shared;

 private:
  void accept();
  boost::asio::io_context& io_;
  std::shared_ptr<Shared> shared_;
  std::unique_ptr<boost::asio::local::stream_protocol::acceptor> acceptor_;
  boost::asio::steady_timer retry_;
  std::string path_;
};

}  // namespace imds::agent
