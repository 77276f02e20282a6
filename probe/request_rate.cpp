// The request-rate bucket; see request_rate.hpp.
#include "request_rate.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <utility>

namespace imds {

namespace {

void check(const RequestRate& rate) {
  if (!(rate.per_second > 0.0) || rate.burst == 0) {
    throw std::invalid_argument("a request rate needs a positive rate and burst");
  }
}

}  // namespace

RequestBucket::RequestBucket(RequestRate rate, Clock now)
    : now_(std::move(now)), rate_(rate), level_(static_cast<double>(rate.burst)), last_(now_()) {
  check(rate);
  stats_.rate = rate;
}

void RequestBucket::refill_locked() const {
  const auto now = now_();
  if (now <= last_) return;  // a clock that does not move forward adds nothing
  const std::chrono::duration<double> elapsed = now - last_;
  level_ = std::min(static_cast<double>(rate_.burst), level_ + elapsed.count() * rate_.per_second);
  last_ = now;
}

void RequestBucket::set_rate(RequestRate rate) {
  check(rate);
  std::lock_guard lock(mutex_);
  refill_locked();
  rate_ = rate;
  stats_.rate = rate;
  level_ = std::min(level_, static_cast<double>(rate.burst));
}

RequestRate RequestBucket::rate() const {
  std::lock_guard lock(mutex_);
  return rate_;
}

bool RequestBucket::try_take(std::size_t n) {
  std::lock_guard lock(mutex_);
  refill_locked();
  const auto wanted = static_cast<double>(n);
  if (level_ < wanted) return false;
  level_ -= wanted;
  return true;
}

void RequestBucket::give_back(std::size_t n) {
  std::lock_guard lock(mutex_);
  refill_locked();
  level_ = std::min(static_cast<double>(rate_.burst), level_ + static_cast<double>(n));
}

double RequestBucket::available() const {
  std::lock_guard lock(mutex_);
  refill_locked();
  return level_;
}

std::chrono::microseconds RequestBucket::time_until(std::size_t n) const {
  std::lock_guard lock(mutex_);
  refill_locked();
  if (n > rate_.burst) return std::chrono::microseconds::max();
  const double missing = static_cast<double>(n) - level_;
  if (missing <= 0.0) return std::chrono::microseconds{0};
  // Rounded up: after this long the permits are there, not one microsecond short of it.
  return std::chrono::microseconds{
      static_cast<std::int64_t>(std::ceil(missing / rate_.per_second * 1e6))};
}

void RequestBucket::count_sent(bool delayed) {
  std::lock_guard lock(mutex_);
  ++stats_.sent;
  if (delayed) ++stats_.delayed;
}

void RequestBucket::count_deferred(std::size_t namespaces) {
  std::lock_guard lock(mutex_);
  stats_.deferred += namespaces;
}

RequestRateStats RequestBucket::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace imds
