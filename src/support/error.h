// Error: the one exception type of tilegraph. It carries a kind (mapped to a Python
// exception class by the bindings), a message and a context stack that grows as the
// error travels outward (pass -> node -> op -> user's source line).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace tg {

// kInterrupted: a run stopped at a step boundary because its caller asked (Ctrl-C).
enum class ErrorKind {
  kInvalidInput, kShape, kUnsupported, kInternal, kRuntime, kParse, kInterrupted
};

const char* ErrorKindName(ErrorKind kind);

class Error : public std::exception {
 public:
  Error(ErrorKind kind, std::string message);

  ErrorKind kind() const { return kind_; }
  const std::string& message() const { return message_; }
  const std::vector<std::string>& context() const { return context_; }

  // Adds one line of context ("in node %h = matmul(...)"); innermost first.
  Error& AddContext(std::string line);
  const char* what() const noexcept override;

 private:
  void Render();
  ErrorKind kind_;
  std::string message_;
  std::vector<std::string> context_;
  std::string rendered_;
};

namespace detail {
// Concatenates any streamable arguments into one string.
template <typename... Args>
std::string StrCat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

template <typename... Args>
[[noreturn]] void Fail(ErrorKind kind, const Args&... args) {
  throw Error(kind, detail::StrCat(args...));
}

// Runs fn(); an exception from a library (oneDNN's dnnl::error, std::bad_alloc, ...) is
// rethrown as Error(kind, what + ": " + its message), so that only tg::Error crosses
// tilegraph's API. tg::Error passes through unchanged.
template <typename Fn>
decltype(auto) AsTgError(ErrorKind kind, const char* what, Fn&& fn) {
  try {
    return fn();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(kind, std::string(what) + ": " + e.what());
  }
}

}  // namespace tg

// TG_CHECK(cond, kind, message parts...): throws tg::Error when cond is false.
#define TG_CHECK(cond, kind, ...)                          \
  do {                                                     \
    if (!(cond)) ::tg::Fail(::tg::ErrorKind::kind, __VA_ARGS__); \
  } while (0)

// Internal invariant: a failure here is a tilegraph bug, not a user error.
#define TG_ASSERT(cond, ...) TG_CHECK(cond, kInternal, "internal: ", #cond, " ", ##__VA_ARGS__)
