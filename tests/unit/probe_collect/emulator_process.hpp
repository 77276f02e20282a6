// Runs tests/emulator/imds-emulator on loopback for a test and talks to its control socket.
#pragma once

#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "model.hpp"

namespace imds::test {

// The thread's own namespace as the collector's host target.
inline NetnsTarget host_target() {
  NetnsTarget target;
  target.name = "host";
  target.path = "/proc/self/ns/net";
  target.source = TargetSource::host;
  target.is_host = true;
  return target;
}

// A TCP port free on both 127.0.0.1 and ::1 right now.
inline std::uint16_t free_loopback_port() {
  for (int attempt = 0; attempt < 50; ++attempt) {
    const int v4 = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a4{};
    a4.sin_family = AF_INET;
    a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof a4;
    if (::bind(v4, reinterpret_cast<sockaddr*>(&a4), sizeof a4) != 0 ||
        ::getsockname(v4, reinterpret_cast<sockaddr*>(&a4), &length) != 0) {
      ::close(v4);
      continue;
    }
    const int v6 = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in6 a6{};
    a6.sin6_family = AF_INET6;
    a6.sin6_addr = in6addr_loopback;
    a6.sin6_port = a4.sin_port;
    const bool both = ::bind(v6, reinterpret_cast<sockaddr*>(&a6), sizeof a6) == 0;
    ::close(v6);
    ::close(v4);
    if (both) return ntohs(a4.sin_port);
  }
  throw std::runtime_error("no free loopback port");
}

class Emulator {
 public:
  // Starts the emulator on 127.0.0.1 and ::1; throws when it does not come up in 10 s.
  explicit Emulator(const std::vector<std::string>& extra_args = {}) {
    const char* binary = std::getenv("IMDS_EMULATOR");
    if (binary == nullptr) throw std::runtime_error("IMDS_EMULATOR is not set");
    std::string dir_template = "/tmp/imds-collect-test-XXXXXX";
    if (::mkdtemp(dir_template.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = dir_template;
    control_ = dir_ + "/control.sock";
    port_ = free_loopback_port();
    std::array<int, 2> ready{};
    if (::pipe2(ready.data(), O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    std::vector<std::string> args = {
        binary,      "--listen", "127.0.0.1",  "--listen", "::1", "--port", std::to_string(port_),
        "--control", control_,   "--ready-fd", "3"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      // The emulator must not outlive a crashed test.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      ::dup2(ready[1], 3);  // dup2 clears FD_CLOEXEC
      ::execv(binary, argv.data());
      ::_exit(127);
    }
    ::close(ready[1]);
    if (pid_ < 0) {
      ::close(ready[0]);
      throw std::runtime_error("cannot start " + std::string(binary));
    }
    pollfd waiting{ready[0], POLLIN, 0};
    std::array<char, 16> buffer{};
    const bool up =
        ::poll(&waiting, 1, 10000) == 1 && ::read(ready[0], buffer.data(), buffer.size()) > 0;
    ::close(ready[0]);
    if (!up) {
      stop();
      throw std::runtime_error("the emulator did not become ready");
    }
  }
  Emulator(const Emulator&) = delete;
  Emulator& operator=(const Emulator&) = delete;
  ~Emulator() {
    stop();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] std::string v4_url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] std::string v6_url() const { return "http://[::1]:" + std::to_string(port_); }

  // One control request; returns the status and fills `body`.
  long control(const std::string& method, const std::string& path, const std::string& json,
               std::string* body = nullptr) const {
    std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> easy(curl_easy_init(), curl_easy_cleanup);
    std::string answer;
    const std::string url = "http://emulator" + path;
    curl_easy_setopt(easy.get(), CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy.get(), CURLOPT_UNIX_SOCKET_PATH, control_.c_str());
    curl_easy_setopt(easy.get(), CURLOPT_CUSTOMREQUEST, method.c_str());
    curl_easy_setopt(easy.get(), CURLOPT_TIMEOUT_MS, 5000L);
    curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
    curl_easy_setopt(easy.get(), CURLOPT_HTTPHEADER, headers);
    if (method == "POST") curl_easy_setopt(easy.get(), CURLOPT_POSTFIELDS, json.c_str());
    using WriteFn = size_t (*)(char*, size_t, size_t, void*);
    const WriteFn append = [](char* data, size_t size, size_t count, void* user) -> size_t {
      static_cast<std::string*>(user)->append(data, size * count);
      return size * count;
    };
    curl_easy_setopt(easy.get(), CURLOPT_WRITEFUNCTION, append);
    curl_easy_setopt(easy.get(), CURLOPT_WRITEDATA, &answer);
    const CURLcode code = curl_easy_perform(easy.get());
    curl_slist_free_all(headers);
    long status = 0;
    curl_easy_getinfo(easy.get(), CURLINFO_RESPONSE_CODE, &status);
    if (code != CURLE_OK) throw std::runtime_error("control request failed: " + path);
    if (body != nullptr) *body = std::move(answer);
    return status;
  }

 private:
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  std::string dir_;
  std::string control_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace imds::test
