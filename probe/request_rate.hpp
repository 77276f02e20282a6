// The bound on the rate of requests sent to the IMDS: a token bucket of request permits
// (nothing to do with IMDS session tokens), shared by every namespace and every cycle.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>

namespace imds {

// `per_second` permits are added continuously, at most `burst` are held. The link-local
// services (IMDS, DNS, NTP) share 1024 packets/s per instance and one request over a fresh
// connection is about 10 packets: 20 requests/s is about a fifth of that limit.
struct RequestRate {
  double per_second = 20.0;
  std::size_t burst = 20;
  bool operator==(const RequestRate&) const = default;
};

// What the bound did, for /metrics. Counters only grow.
struct RequestRateStats {
  RequestRate rate;
  std::uint64_t sent = 0;      // requests sent through the bucket
  std::uint64_t delayed = 0;   // of those, sent later than asked because it was empty
  std::uint64_t deferred = 0;  // namespaces moved to a later cycle: no room in this one
};

// Thread-safe: the agent's worker takes permits, its loop reads the stats.
class RequestBucket {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  // Starts full. `now` is injected for tests.
  explicit RequestBucket(RequestRate rate,
                         Clock now = [] { return std::chrono::steady_clock::now(); });

  // A new rate keeps the permits held (at most the new burst) and the counters.
  void set_rate(RequestRate rate);
  [[nodiscard]] RequestRate rate() const;

  // Takes `n` permits when the bucket holds them now; false (and nothing taken) otherwise.
  bool try_take(std::size_t n);
  // Returns permits taken but not used (a follow-up request that was never sent).
  void give_back(std::size_t n);
  // Permits held now (fractional).
  [[nodiscard]] double available() const;
  // How long until `n` permits are held; zero when they are now; duration::max() when `n`
  // is more than the burst (never).
  [[nodiscard]] std::chrono::microseconds time_until(std::size_t n) const;

  void count_sent(bool delayed);
  void count_deferred(std::size_t namespaces);
  [[nodiscard]] RequestRateStats stats() const;

 private:
  void refill_locked() const;

  mutable std::mutex mutex_;
  Clock now_;
  RequestRate rate_;
  mutable double level_;
  mutable std::chrono::steady_clock::time_point last_;
  RequestRateStats stats_;
};

}  // namespace imds
