// The `imds-probe status` client; see status_client.hpp.
#include "status_client.hpp"

#include <curl/curl.h>

#include <cstddef>
#include <iostream>
#include <memory>
#include <new>
#include <nlohmann/json.hpp>
#include <string>

#include "callers_watch.hpp"
#include "render.hpp"
#include "result.hpp"

namespace imds {
namespace {

constexpr std::size_t kMaxStatusBytes = std::size_t{8} * 1024 * 1024;

// The agent's answer for people: its state, the options it sees, one line per container,
// the findings. Values come from the agent (JSON): printed through printable().
std::string printable(const nlohmann::json& v) {
  std::string s = v.is_string() ? v.get<std::string>() : v.is_null() ? "-" : v.dump();
  if (s.size() > 200) s = s.substr(0, 200) + "...";
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return s;
}

std::string agent_status_text(const nlohmann::json& doc) {
  auto get = [](const nlohmann::json& j, const char* key) -> nlohmann::json {
    if (!j.is_object()) return nullptr;
    const auto it = j.find(key);
    return it == j.end() ? nlohmann::json(nullptr) : *it;
  };
  std::string out;
  const auto agent = get(doc, "agent");
  out += "imds-agent " + printable(get(agent, "version")) + " (pid " +
         printable(get(agent, "pid")) + "): " + printable(get(agent, "status")) + "\n";
  out += "last probe: " + printable(get(agent, "last_probe")) +
         ", next: " + printable(get(agent, "next_probe")) + "\n";
  const auto options = get(agent, "options");
  if (options.is_object()) {
    out += "options: HttpTokens=" + printable(get(options, "http_tokens")) +
           ", hop limit=" + printable(get(options, "hop_limit")) +
           ", endpoint=" + printable(get(options, "http_endpoint")) +
           ", IPv6=" + printable(get(options, "ipv6")) +
           ", tags=" + printable(get(options, "tags")) + "\n";
  }
  const auto containers = get(agent, "containers");
  if (containers.is_array() && !containers.empty()) {
    out += "containers:\n";
    std::size_t n = 0;
    for (const auto& c : containers) {
      if (++n > 500) {
        out += "  ...\n";
        break;
      }
      out += "  " + printable(get(c, "name")) + "  IMDSv2 " + printable(get(c, "imdsv2")) + "  " +
             printable(get(c, "verdict")) + "\n";
    }
  }
  const auto findings = get(doc, "findings");
  if (findings.is_array()) {
    out += findings.empty() ? "findings: none\n" : "findings:\n";
    for (const auto& f : findings) {
      out += "  [" + printable(get(f, "severity")) + "] " + printable(get(f, "id")) + ": " +
             printable(get(f, "summary")) + "\n";
    }
  }
  return out;
}

}  // namespace

namespace {

// GET `path` from the agent's socket: its JSON object, or what went wrong (said for people).
Result<nlohmann::json> fetch_agent(const std::string& socket_path, const char* path,
                                   const char* what) {
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) throw std::bad_alloc();
  std::string body;
  bool too_big = false;
  struct Sink {
    std::string* body;
    bool* too_big;
  } sink{&body, &too_big};
  auto write = +[](char* data, size_t size, size_t n, void* user) -> size_t {
    auto* s = static_cast<Sink*>(user);
    if (s->body->size() + size * n > kMaxStatusBytes) {
      *s->too_big = true;
      return 0;
    }
    s->body->append(data, size * n);
    return size * n;
  };
  const std::string url = std::string("http://localhost") + path;
  curl_easy_setopt(curl.get(), CURLOPT_UNIX_SOCKET_PATH, socket_path.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_PROXY, "");
  curl_easy_setopt(curl.get(), CURLOPT_NOPROXY, "*");
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, 5000L);
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, write);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &sink);
  const CURLcode rc = curl_easy_perform(curl.get());
  if (rc != CURLE_OK) {
    return Error{std::string("cannot read the agent's ") + what + " from " + socket_path + ": " +
                 (too_big ? "answer larger than 8 MiB" : curl_easy_strerror(rc)) +
                 " (is imds-agent running? `systemctl status imds-agent`)"};
  }
  long status = 0;
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);
  auto doc = nlohmann::json::parse(body, nullptr, false);
  if (status != 200 || doc.is_discarded() || !doc.is_object()) {
    std::string message = "the agent at " + socket_path + " answered HTTP " + std::to_string(status);
    if (doc.is_discarded()) {
      message += " with a body that is not JSON";
    } else if (const auto e = doc.find("error"); e != doc.end() && e->is_string()) {
      message += ": " + printable(*e);
    }
    return Error{message};
  }
  return doc;
}

}  // namespace

int agent_status(const std::string& socket_path, StatusOutput output) {
  const auto doc = fetch_agent(socket_path, "/v1/status", "status");
  if (!doc) {
    std::cerr << "imds-probe: " << doc.error().message << '\n';
    return kExitUsage;
  }
  if (output.json) {
    std::cout << (output.pretty ? doc->dump(2) : doc->dump()) << '\n';
  } else {
    std::cout << agent_status_text(*doc);
  }
  // The diagnosis part carries the exit status the probe would have given.
  const auto code = doc->find("exit_code");
  if (code != doc->end() && code->is_number_integer()) {
    const int c = code->get<int>();
    if (c >= 0 && c <= 3) return c;
  }
  return 0;
}

int agent_callers(const std::string& socket_path, StatusOutput output) {
  const auto doc = fetch_agent(socket_path, "/v1/callers", "record of callers");
  if (!doc) {
    std::cerr << "imds-probe: " << doc.error().message << '\n';
    return kExitUsage;
  }
  if (output.json) {
    std::cout << (output.pretty ? doc->dump(2) : doc->dump()) << '\n';
    return 0;
  }
  try {
    std::cout << render_callers_text(*doc);
  } catch (const nlohmann::json::exception& e) {
    std::cerr << "imds-probe: the agent at " << socket_path
              << " answered a document that is not a record of callers: " << e.what() << '\n';
    return kExitUsage;
  }
  return 0;
}

}  // namespace imds
