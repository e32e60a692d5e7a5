#include "fuzz/ir_mutator.h"

#include <cctype>
#include <sstream>

#include "ir/dtype.h"
#include "ops/registry.h"

namespace tg::fuzz {
namespace {

const std::vector<std::string> kNumbers = {
    "0", "-1", "1", "2", "3", "4", "8", "16", "-2", "255", "65536", "2147483648", "4611686018427387904",
    "7905747460161236407", "9223372036854775807", "-9223372036854775808",
    "99999999999999999999", "1e308", "-1e308", "1e-320", "nan", "inf", "-inf", "0.5"};
const std::vector<std::string> kDTypes = {"f32", "f64", "f16", "bf16", "i64", "i32", "bool",
                                          "u8", "i8", "u4", "f"};

bool IsNumber(const std::string& t) {
  return !t.empty() && (std::isdigit(static_cast<unsigned char>(t[0])) || t[0] == '-');
}
bool IsDType(const std::string& t) {
  return ParseDType(t).has_value();
}
bool IsValueRef(const std::string& t) { return t.size() > 1 && t[0] == '%'; }

// Tokens: maximal runs of name characters (letters, digits, _ . - + %) or single others.
std::vector<std::pair<size_t, size_t>> Tokens(const std::string& s) {
  std::vector<std::pair<size_t, size_t>> out;
  auto name = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-' ||
           c == '+' || c == '%';
  };
  for (size_t i = 0; i < s.size();) {
    size_t j = i + 1;
    if (name(s[i])) {
      while (j < s.size() && name(s[j])) ++j;
    }
    out.push_back({i, j - i});
    i = j;
  }
  return out;
}

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> lines;
  std::stringstream ss(s);
  for (std::string line; std::getline(ss, line);) lines.push_back(line);
  return lines;
}

std::string Join(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& l : lines) out += l + "\n";
  return out;
}

}  // namespace

IrMutator::IrMutator(std::vector<std::string> seeds, uint64_t rng_seed)
    : seeds_(std::move(seeds)), rng_(rng_seed) {
  for (const OpDef* d : OpRegistry::Global().All()) op_names_.push_back(d->name);
}

std::string IrMutator::Next() {
  std::string text = seeds_[rng_() % seeds_.size()];
  int edits = 1 + static_cast<int>(rng_() % 3);
  for (int i = 0; i < edits; ++i) text = Mutate(std::move(text));
  return text;
}

std::string IrMutator::ReplaceToken(const std::string& text, bool (*is_kind)(const std::string&),
                                    const std::vector<std::string>& choices) {
  std::vector<std::pair<size_t, size_t>> candidates;
  for (auto [pos, len] : Tokens(text)) {
    if (is_kind(text.substr(pos, len))) candidates.push_back({pos, len});
  }
  if (candidates.empty() || choices.empty()) return text;
  auto [pos, len] = candidates[rng_() % candidates.size()];
  return text.substr(0, pos) + choices[rng_() % choices.size()] + text.substr(pos + len);
}

std::string IrMutator::Mutate(std::string text) {
  std::vector<std::string> lines = Lines(text);
  size_t nl = lines.size();
  switch (rng_() % 12) {
    case 0:
    case 1:
    case 9:
    case 10: return ReplaceToken(text, IsNumber, kNumbers);
    case 2: {  // an op name: an identifier right before '('
      std::vector<std::pair<size_t, size_t>> ops;
      for (auto [pos, len] : Tokens(text)) {
        if (pos + len < text.size() && text[pos + len] == '(' && std::isalpha(
                static_cast<unsigned char>(text[pos]))) {
          ops.push_back({pos, len});
        }
      }
      if (ops.empty()) return text;
      auto [pos, len] = ops[rng_() % ops.size()];
      return text.substr(0, pos) + op_names_[rng_() % op_names_.size()] + text.substr(pos + len);
    }
    case 3: return ReplaceToken(text, IsDType, kDTypes);
    case 4: {
      std::vector<std::string> refs;
      for (auto [pos, len] : Tokens(text)) {
        if (IsValueRef(text.substr(pos, len))) refs.push_back(text.substr(pos, len));
      }
      return ReplaceToken(text, IsValueRef, refs);
    }
    case 5:
      if (nl > 2) lines.erase(lines.begin() + 1 + static_cast<long>(rng_() % (nl - 2)));
      return Join(lines);
    case 6:
      if (nl > 2) {
        size_t i = 1 + rng_() % (nl - 2);
        lines.insert(lines.begin() + static_cast<long>(i), lines[i]);
      }
      return Join(lines);
    case 7:
      if (nl > 3) std::swap(lines[1 + rng_() % (nl - 2)], lines[1 + rng_() % (nl - 2)]);
      return Join(lines);
    case 8: {
      std::vector<std::string> other = Lines(seeds_[rng_() % seeds_.size()]);
      if (nl > 2 && other.size() > 2) {
        lines.insert(lines.begin() + 1 + static_cast<long>(rng_() % (nl - 2)),
                     other[1 + rng_() % (other.size() - 2)]);
      }
      return Join(lines);
    }
    default: {
      if (text.empty()) return text;
      size_t at = rng_() % text.size();
      switch (rng_() % 3) {
        case 0: text[at] = static_cast<char>(rng_() % 256); break;
        case 1: text.insert(at, 1, "[](){},:=%@\"0-"[rng_() % 14]); break;
        default: text.erase(at, 1 + rng_() % 8); break;
      }
      return text;
    }
  }
}

}  // namespace tg::fuzz
