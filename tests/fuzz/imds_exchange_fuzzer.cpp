// Fuzzes the passive caller watch's reading of captured traffic (probe/callers.hpp):
// classify_request, response_status and parse_user_agent on the bytes as they are, then an
// ExchangeTracker fed a stream of packets cut from the same input, with the clock moved on
// between them. Checks the promises of the header: bounded tables, bounded names, every
// request counted at most once.
//
// Input: records of [flags][length (2 bytes, big endian)][packet]; flags bit 0 = outgoing,
// bits 1-2 = interface index 1..4, bits 3-7 = seconds the clock moves on before the packet.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "callers.hpp"
#include "packet_ttl.hpp"

namespace {

imds::SocketName imds_v4() {
  imds::SocketName name;
  name.family = imds::Family::v4;
  name.address = {169, 254, 169, 254};
  name.port = 80;
  return name;
}

imds::SocketName imds_v6() {
  imds::SocketName name;
  name.family = imds::Family::v6;
  name.address = {0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54};
  name.port = 80;
  return name;
}

void check_sdk(const std::optional<imds::Sdk>& sdk) {
  if (!sdk) return;
  if (sdk->product.empty() || sdk->product.size() > 40 || sdk->version.size() > 32) std::abort();
  const auto allowed = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '-' || c == '_';
  };
  // A version may also hold '+' (a Debian-style "1.26.12+dfsg").
  const auto allowed_in_version = [&](char c) { return allowed(c) || c == '+'; };
  if (!std::all_of(sdk->product.begin(), sdk->product.end(), allowed)) std::abort();
  if (!std::all_of(sdk->version.begin(), sdk->version.end(), allowed_in_version)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> all(data, size);

  // The parsers, on the whole input.
  if (const auto start = imds::classify_request(all)) check_sdk(start->sdk);
  if (const auto status = imds::response_status(all)) {
    if (*status < 100 || *status > 599) std::abort();
  }
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  check_sdk(imds::parse_user_agent(text));

  // The tracker, on the input cut into packets; small limits so that they are reached.
  const imds::ExchangeTracker::Limits limits{.max_flows = 8,
                                             .max_pending = 2,
                                             .answer_timeout = std::chrono::seconds(3),
                                             .idle_timeout = std::chrono::seconds(20),
                                             .linger = std::chrono::seconds(5)};
  imds::ExchangeTracker tracker({imds_v4(), imds_v6()}, limits);
  auto now = imds::WatchClock::time_point{} + std::chrono::hours(1);
  std::size_t packets = 0;
  std::uint64_t taken = 0;
  std::size_t at = 0;
  while (at + 3 <= size) {
    const std::uint8_t flags = data[at];
    const std::size_t length = std::min<std::size_t>(
        (static_cast<std::size_t>(data[at + 1]) << 8U) | data[at + 2], size - at - 3);
    const auto packet = all.subspan(at + 3, length);
    at += 3 + length;
    now += std::chrono::seconds(flags >> 3U);
    tracker.take(1 + ((flags >> 1U) & 3U), (flags & 1U) != 0, packet, now);
    ++packets;
    if (tracker.flows() > limits.max_flows) std::abort();
    // Owners found for some new connections (every other one), as the watch does.
    const auto opened = tracker.take_opened();
    if (opened.size() > imds::ExchangeTracker::kMaxOpened) std::abort();
    for (std::size_t i = 0; i < opened.size(); i += 2) {
      tracker.set_process(opened[i].client, opened[i].server, imds::ProcessInfo{7, "x", {}});
    }
    for (const auto& exchange : tracker.take_finished(now)) {
      if (exchange.process && exchange.process->pid != 7) std::abort();
      if (exchange.seen_arriving && !exchange.reached_here) std::abort();
      check_sdk(exchange.request.sdk);
      if (exchange.answered && !exchange.reached_here) std::abort();
      if (exchange.arrival_ttl && (*exchange.arrival_ttl < 0 || *exchange.arrival_ttl > 255)) {
        std::abort();
      }
      ++taken;
    }
  }
  taken += tracker.take_all().size();
  const auto& counters = tracker.counters();
  if (counters.packets != packets) std::abort();
  // Each exchange is handed out once, and none from more requests than packets carried.
  if (counters.exchanges != taken || taken > packets) std::abort();
  if (tracker.flows() != 0) std::abort();
  return 0;
}
