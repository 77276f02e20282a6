// curl ownership helpers, outcome mapping, header validation; see http.hpp.
#include "http.hpp"

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>

#include "collect.hpp"

namespace imds {

void CurlSlistDeleter::operator()(curl_slist* list) const noexcept {
  for (curl_slist* item = list; item != nullptr; item = item->next) {
    if (item->data != nullptr) explicit_bzero(item->data, std::strlen(item->data));
  }
  curl_slist_free_all(list);
}

void append_header(CurlSlist& list, const std::string& line) {
  curl_slist* extended = curl_slist_append(list.get(), line.c_str());
  if (extended == nullptr) throw std::bad_alloc();
  (void)list.release();
  list.reset(extended);
}

void ensure_curl_initialised() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      throw std::runtime_error("libcurl could not be initialised");
    }
  });
}

Outcome outcome_from_curl(CURLcode code, long os_errno, std::string_view error_text) {
  const auto text_says = [&](std::string_view what) {
    return error_text.find(what) != std::string_view::npos;
  };
  switch (code) {
    case CURLE_OK:
      return Outcome::http;
    case CURLE_OPERATION_TIMEDOUT:
      return Outcome::timeout;
    case CURLE_COULDNT_CONNECT:
      switch (os_errno) {
        case ECONNREFUSED:
          return Outcome::refused;
        case ENETUNREACH:
        case EHOSTUNREACH:
          return Outcome::unreachable;
        case EACCES:  // "prohibit" route
        case EINVAL:  // "blackhole" route: the kernel refuses the destination outright
        case EPERM:   // a local firewall rule dropped the SYN
          return Outcome::blocked;
        case ETIMEDOUT:
          return Outcome::timeout;
        case ECONNRESET:
          return Outcome::reset;
        default:
          return text_says("refused") ? Outcome::refused : Outcome::error;
      }
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
      if (os_errno == ECONNRESET || text_says("reset by peer")) return Outcome::reset;
      return Outcome::error;
    default:
      return Outcome::error;
  }
}

std::optional<long> parse_token_ttl(std::string_view value) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (value.empty() || value.size() > 5) return std::nullopt;
  long seconds = 0;
  const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), seconds);
  if (error != std::errc() || end != value.data() + value.size()) return std::nullopt;
  if (seconds < 0 || seconds > 21600) return std::nullopt;
  return seconds;
}

bool plausible_token(std::string_view token) {
  if (token.empty() || token.size() > 4096) return false;
  for (const char c : token) {
    if (c <= ' ' || c > '~') return false;
  }
  return true;
}

void wipe(std::string& secret) noexcept {
  if (!secret.empty()) explicit_bzero(secret.data(), secret.size());
  secret.clear();
}

bool is_forbidden_path(std::string_view path) {
  // Matched anywhere and case-insensitively, so "/latest//meta-data/IAM/./security-credentials"
  // or a percent-encoded spelling cannot slip through. All of iam/ is refused: the probe has no
  // use for it, and a prefix is harder to get wrong than a list of its secret children.
  std::string lowered(path);
  for (char& c : lowered) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lowered.find('%') != std::string::npos) return true;  // no encoded paths at all
  for (const std::string_view secret : {"iam/", "identity-credentials", "user-data"}) {
    if (lowered.find(secret) != std::string::npos) return true;
  }
  return false;
}

}  // namespace imds
