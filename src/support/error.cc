#include "support/error.h"

namespace tg {

const char* ErrorKindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidInput: return "InvalidInput";
    case ErrorKind::kShape: return "Shape";
    case ErrorKind::kUnsupported: return "Unsupported";
    case ErrorKind::kInternal: return "Internal";
    case ErrorKind::kRuntime: return "Runtime";
    case ErrorKind::kParse: return "Parse";
    case ErrorKind::kInterrupted: return "Interrupted";
  }
  return "?";
}

Error::Error(ErrorKind kind, std::string message) : kind_(kind), message_(std::move(message)) {
  Render();
}

Error& Error::AddContext(std::string line) {
  context_.push_back(std::move(line));
  Render();
  return *this;
}

const char* Error::what() const noexcept { return rendered_.c_str(); }

void Error::Render() {
  rendered_ = std::string(ErrorKindName(kind_)) + " error: " + message_;
  for (const std::string& line : context_) rendered_ += "\n  " + line;
}

}  // namespace tg
