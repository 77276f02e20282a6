// Fuzzes the agent's socket API server (agent/api_server.hpp) with raw bytes from a client:
// one end of a socketpair is served by ApiServer::serve exactly as an accepted connection
// would be, the input is written to the other end and the client half closed; the run ends
// when the server has closed the connection. Requests may be pipelined, malformed,
// oversized, chunked; some are answered at once, some later (as POST /v1/probe is).
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "api_server.hpp"
#include "status_api.hpp"

namespace asio = boost::asio;
using Local = asio::local::stream_protocol;

namespace {

// A stand-in for Agent::handle with the same shapes of answer: JSON at once, an error with
// headers, and an answer that comes later from the loop.
void handle(asio::io_context& io, const imds::agent::ApiRequest& request,
            std::function<void(imds::agent::ApiResponse)> respond) {
  using imds::agent::error_response;
  using imds::agent::json_response;
  if (request.target == "/v1/status" && request.method == "GET") {
    return respond(json_response(200, {{"target", request.target}, {"body", request.body}}));
  }
  if (request.target == "/v1/probe" && request.method == "POST") {
    asio::post(io, [respond = std::move(respond), body = request.body] {
      respond(json_response(200, {{"probed", true}, {"body_bytes", body.size()}}));
    });
    return;
  }
  auto r = error_response(405, "method " + request.method + " not allowed on " + request.target);
  r.headers.emplace_back("Allow", "GET");
  respond(std::move(r));
}

}  // namespace

// SIGPIPE is left at its default, as in the daemon: Asio sends with MSG_NOSIGNAL, and a
// signal from a write to a departed client would end the run as a crash.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  asio::io_context io;
  imds::agent::ApiLimits limits;
  // Short deadlines: the client always half-closes, so only a server bug would wait them out.
  limits.request_timeout = std::chrono::milliseconds(2000);
  limits.write_timeout = std::chrono::milliseconds(2000);
  imds::agent::ApiServer server(
      io, [&io](const auto& request, auto respond) { handle(io, request, std::move(respond)); },
      limits);

  Local::socket served(io);
  Local::socket client(io);
  asio::local::connect_pair(served, client);
  client.non_blocking(true);
  server.serve(std::move(served));

  // Feed the input and drain the answers in turns, so neither side's buffer can fill up.
  std::size_t sent = 0;
  bool half_closed = false;
  bool server_closed = false;
  std::string answers;  // the first bytes of the answers
  char buf[16384];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(8);
  while (!server_closed) {
    if (std::chrono::steady_clock::now() > deadline) {
      std::fputs("the session neither answered nor closed within 8 s\n", stderr);
      std::abort();
    }
    if (sent < size) {
      boost::system::error_code ec;
      sent += client.write_some(asio::buffer(data + sent, size - sent), ec);
      if (ec && ec != asio::error::would_block) sent = size;  // the server closed first
    } else if (!half_closed) {
      boost::system::error_code ec;
      client.shutdown(Local::socket::shutdown_send, ec);
      half_closed = true;
    }
    const std::size_t handlers = io.poll();
    io.restart();
    bool read_any = false;
    for (;;) {
      boost::system::error_code ec;
      const std::size_t n = client.read_some(asio::buffer(buf), ec);
      if (ec == asio::error::would_block) break;
      if (ec) {  // end of stream or reset: the server is done with this connection
        server_closed = true;
        break;
      }
      if (answers.size() < 8) answers.append(buf, std::min(n, 8 - answers.size()));
      read_any = true;
    }
    // Nothing moved: wait (briefly) for the server's timers or answers instead of spinning.
    if (handlers == 0 && !read_any && sent == size) {
      pollfd fd{client.native_handle(), POLLIN, 0};
      (void)::poll(&fd, 1, 1);
    }
  }
  // Whatever came in, something must have been answered (or refused) in HTTP.
  if (size > 0 && !answers.empty() && answers.rfind("HTTP/1.", 0) != 0) std::abort();
  server.close();
  io.restart();
  io.poll();
  return 0;
}
