// Result: a value or an error, for failures that are expected (bad input, no such namespace,
// no privileges). They are values, never exceptions; exceptions are for programming errors.
#pragma once

#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

namespace imds {

// What failed, for people: says what was wrong with what, and what to do.
struct Error {
  std::string message;
};

// A T or an E. Both convert implicitly, so a function returns either `value` or
// `Error{"..."}`; `failure(message)` says the same where the type is spelled out.
template <typename T, typename E = Error>
class [[nodiscard]] Result {
  static_assert(!std::is_same_v<std::remove_cvref_t<T>, E>, "a value and an error of one type");

 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT(*-explicit-*)
  Result(E error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT(*-explicit-*)
  static Result failure(std::string message) { return Result(E{std::move(message)}); }

  [[nodiscard]] bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  // Reading the side that is not there is a programming error: std::bad_variant_access.
  [[nodiscard]] T& value() & { return std::get<0>(v_); }
  [[nodiscard]] const T& value() const& { return std::get<0>(v_); }
  [[nodiscard]] T&& value() && { return std::get<0>(std::move(v_)); }
  [[nodiscard]] T& operator*() & { return value(); }
  [[nodiscard]] const T& operator*() const& { return value(); }
  [[nodiscard]] T* operator->() { return &value(); }
  [[nodiscard]] const T* operator->() const { return &value(); }
  [[nodiscard]] const E& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, E> v_;
};

// Success without a value, or an E: `return {};` or `return Error{"..."};`.
template <typename E>
class [[nodiscard]] Result<void, E> {
 public:
  Result() = default;
  Result(E error) : error_(std::move(error)) {}  // NOLINT(*-explicit-*)
  static Result failure(std::string message) { return Result(E{std::move(message)}); }

  [[nodiscard]] bool ok() const { return !error_.has_value(); }
  explicit operator bool() const { return ok(); }
  // Reading the error of a success is a programming error: std::bad_optional_access.
  [[nodiscard]] const E& error() const {
    if (!error_) throw std::bad_optional_access();
    return *error_;
  }

 private:
  std::optional<E> error_;
};

// For checks and setters that either succeed or say why not.
using Status = Result<void>;

}  // namespace imds
