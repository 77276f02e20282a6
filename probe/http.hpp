// libcurl ownership types and the small pure pieces of HTTP handling the collector needs:
// mapping curl's results to Outcomes and validating header values from the IMDS.
#pragma once

#include <curl/curl.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "model.hpp"

namespace imds {

struct CurlEasyDeleter {
  void operator()(CURL* easy) const noexcept { curl_easy_cleanup(easy); }
};
struct CurlMultiDeleter {
  void operator()(CURLM* multi) const noexcept { curl_multi_cleanup(multi); }
};
// Header lists may hold the token: their strings are wiped before they are freed.
struct CurlSlistDeleter {
  void operator()(curl_slist* list) const noexcept;
};
struct CurlUrlDeleter {
  void operator()(CURLU* url) const noexcept { curl_url_cleanup(url); }
};

using CurlEasy = std::unique_ptr<CURL, CurlEasyDeleter>;
using CurlMulti = std::unique_ptr<CURLM, CurlMultiDeleter>;
using CurlSlist = std::unique_ptr<curl_slist, CurlSlistDeleter>;
using CurlUrl = std::unique_ptr<CURLU, CurlUrlDeleter>;

// Appends one header line; throws std::bad_alloc when curl cannot allocate.
void append_header(CurlSlist& list, const std::string& line);

// curl_global_init exactly once per process.
void ensure_curl_initialised();

// How a finished transfer ended. `os_errno` is CURLINFO_OS_ERRNO; `error_text` curl's
// error buffer (used when curl did not record an errno, e.g. for some receive errors).
Outcome outcome_from_curl(CURLcode code, long os_errno, std::string_view error_text);

// X-aws-ec2-metadata-token-ttl-seconds: a decimal 0..21600 (a token's remaining life).
std::optional<long> parse_token_ttl(std::string_view value);

// A token as the IMDS issues it: 1..4096 visible ASCII characters (it goes into a header).
bool plausible_token(std::string_view token);

// Zeroes memory that held a token, in a way the compiler cannot drop.
void wipe(std::string& secret) noexcept;

}  // namespace imds
