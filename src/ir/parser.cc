// ParseGraph: the reading half of the IR text format documented in printer.h. A small lexer
// turns the text into tokens with line:column positions, and a recursive-descent parser builds
// the Graph through its public API. Every malformed input ends in Error(kParse) whose message
// starts with "line:col: "; ops are not looked up (the verifier checks them), so any op name
// parses. `//` starts a comment that runs to the end of the line.
#include <charconv>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "ir/printer.h"
#include "support/error.h"

namespace tg {
namespace {

enum class Tok { kEnd, kIdent, kValue, kNumber, kString, kPunct };

struct Token {
  Tok kind = Tok::kEnd;
  std::string text;  // identifier, value name (without %), number text, unescaped string
  char punct = 0;
  int line = 1, col = 1;
};

bool IsIdentStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsNameChar(char c) { return IsIdentStart(c) || IsDigit(c) || c == '.'; }

[[noreturn]] void ParseFail(int line, int col, const std::string& msg) {
  Fail(ErrorKind::kParse, line, ":", col, ": ", msg);
}

class Lexer {
 public:
  explicit Lexer(std::string_view text) : text_(text) {}

  std::vector<Token> Run() {
    std::vector<Token> tokens;
    for (;;) {
      SkipSpace();
      Token t;
      t.line = line_;
      t.col = col_;
      if (pos_ >= text_.size()) {
        tokens.push_back(t);
        return tokens;
      }
      char c = text_[pos_];
      if (IsIdentStart(c)) {
        t.kind = Tok::kIdent;
        while (pos_ < text_.size() && IsNameChar(text_[pos_])) t.text += Next();
      } else if (c == '%') {
        Next();
        t.kind = Tok::kValue;
        if (pos_ < text_.size() && text_[pos_] == '"') {
          t.text = String();
        } else {
          while (pos_ < text_.size() && IsNameChar(text_[pos_])) t.text += Next();
        }
        if (t.text.empty()) ParseFail(t.line, t.col, "expected a value name after '%'");
      } else if (IsDigit(c) || c == '-' || c == '+') {
        t.kind = Tok::kNumber;
        t.text += Next();
        while (pos_ < text_.size() && (IsNameChar(text_[pos_]) ||
                                       ((text_[pos_] == '-' || text_[pos_] == '+') &&
                                        (text_[pos_ - 1] == 'e' || text_[pos_ - 1] == 'E')))) {
          t.text += Next();
        }
      } else if (c == '"') {
        t.kind = Tok::kString;
        t.text = String();
      } else if (std::string_view("{}()[],:=@").find(c) != std::string_view::npos) {
        t.kind = Tok::kPunct;
        t.punct = Next();
      } else {
        ParseFail(line_, col_, std::string("unexpected character '") +
                                   (c >= 0x20 && c < 0x7f ? std::string(1, c) : "\\x??") + "'");
      }
      tokens.push_back(std::move(t));
    }
  }

 private:
  char Next() {
    char c = text_[pos_++];
    if (c == '\n') {
      ++line_;
      col_ = 1;
    } else {
      ++col_;
    }
    return c;
  }

  void SkipSpace() {
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        Next();
      } else if (c == '/' && pos_ + 1 < text_.size() && text_[pos_ + 1] == '/') {
        while (pos_ < text_.size() && text_[pos_] != '\n') Next();
      } else {
        return;
      }
    }
  }

  static int Hex(char c) {
    if (IsDigit(c)) return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // A double-quoted string starting at pos_; returns its unescaped contents.
  std::string String() {
    int line = line_, col = col_;
    Next();  // opening quote
    std::string s;
    for (;;) {
      if (pos_ >= text_.size() || text_[pos_] == '\n') {
        ParseFail(line, col, "unterminated string");
      }
      char c = Next();
      if (c == '"') return s;
      if (c != '\\') {
        s += c;
        continue;
      }
      if (pos_ >= text_.size()) ParseFail(line, col, "unterminated string");
      int eline = line_, ecol = col_;
      char e = Next();
      switch (e) {
        case '"': s += '"'; break;
        case '\\': s += '\\'; break;
        case 'n': s += '\n'; break;
        case 't': s += '\t'; break;
        case 'x': {
          int hi = pos_ < text_.size() ? Hex(text_[pos_]) : -1;
          int lo = pos_ + 1 < text_.size() ? Hex(text_[pos_ + 1]) : -1;
          if (hi < 0 || lo < 0) ParseFail(eline, ecol, "bad \\x escape (two hex digits expected)");
          Next();
          Next();
          s += static_cast<char>(hi * 16 + lo);
          break;
        }
        default: ParseFail(eline, ecol - 1, std::string("unknown escape '\\") + e + "'");
      }
    }
  }

  std::string_view text_;
  size_t pos_ = 0;
  int line_ = 1, col_ = 1;
};

constexpr int kMaxGraphDepth = 64;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  std::unique_ptr<Graph> ParseTop() {
    if (Peek().kind == Tok::kEnd) Error(Peek(), "empty input: expected 'graph NAME { ... }'");
    std::unique_ptr<Graph> g = ParseGraphBody(0);
    if (Peek().kind != Tok::kEnd) Error(Peek(), "unexpected " + Describe(Peek()) + " after graph");
    return g;
  }

 private:
  const Token& Peek(size_t ahead = 0) const {
    size_t i = std::min(pos_ + ahead, tokens_.size() - 1);
    return tokens_[i];
  }
  const Token& Take() {
    const Token& t = tokens_[pos_];
    if (pos_ + 1 < tokens_.size()) ++pos_;
    return t;
  }
  [[noreturn]] void Error(const Token& t, const std::string& msg) const {
    ParseFail(t.line, t.col, msg);
  }
  static std::string Describe(const Token& t) {
    switch (t.kind) {
      case Tok::kEnd: return "end of input";
      case Tok::kIdent: return "'" + t.text + "'";
      case Tok::kValue: return "'%" + t.text + "'";
      case Tok::kNumber: return "number '" + t.text + "'";
      case Tok::kString: return "string";
      case Tok::kPunct: return std::string("'") + t.punct + "'";
    }
    return "?";
  }
  bool IsPunct(char c, size_t ahead = 0) const {
    return Peek(ahead).kind == Tok::kPunct && Peek(ahead).punct == c;
  }
  bool IsIdent(const char* word) const {
    return Peek().kind == Tok::kIdent && Peek().text == word;
  }
  void Expect(char c) {
    if (!IsPunct(c)) Error(Peek(), std::string("expected '") + c + "', got " + Describe(Peek()));
    Take();
  }
  void ExpectWord(const char* word) {
    if (!IsIdent(word)) {
      Error(Peek(), std::string("expected '") + word + "', got " + Describe(Peek()));
    }
    Take();
  }
  // An identifier or a quoted string (graph, op and attribute names).
  std::string Name(const char* what) {
    if (Peek().kind != Tok::kIdent && Peek().kind != Tok::kString) {
      Error(Peek(), std::string("expected ") + what + ", got " + Describe(Peek()));
    }
    return Take().text;
  }

  int64_t Int(const Token& t) {
    if (t.kind != Tok::kNumber) Error(t, "expected an integer, got " + Describe(t));
    const char* b = t.text.data();
    const char* e = b + t.text.size();
    if (*b == '+') ++b;
    int64_t v = 0;
    auto res = std::from_chars(b, e, v);
    if (res.ec == std::errc::result_out_of_range) Error(t, "integer out of range: " + t.text);
    if (res.ec != std::errc() || res.ptr != e) Error(t, "bad integer '" + t.text + "'");
    return v;
  }
  static bool LooksFloat(const Token& t) {
    return t.kind == Tok::kIdent ? (t.text == "inf" || t.text == "nan")
                                 : t.text.find_first_of(".eEni") != std::string::npos;
  }
  template <typename T>
  T Float(const Token& t) {
    bool ok_kind = t.kind == Tok::kNumber || (t.kind == Tok::kIdent && LooksFloat(t));
    if (!ok_kind) Error(t, "expected a number, got " + Describe(t));
    const char* b = t.text.data();
    const char* e = b + t.text.size();
    if (*b == '+') ++b;
    T v{};
    auto res = std::from_chars(b, e, v);
    if (res.ec == std::errc::result_out_of_range) Error(t, "number out of range: " + t.text);
    if (res.ec != std::errc() || res.ptr != e) Error(t, "bad number '" + t.text + "'");
    return v;
  }

  TensorType Type() {
    const Token& t = Peek();
    if (t.kind != Tok::kIdent) Error(t, "expected a type like f32[2,3], got " + Describe(t));
    std::optional<DType> dtype = ParseDType(t.text);
    if (!dtype) Error(t, "unknown dtype '" + t.text + "'");
    Take();
    TensorType type{*dtype, {}};
    Expect('[');
    while (!IsPunct(']')) {
      if (!type.shape.empty()) Expect(',');
      const Token& d = Take();
      int64_t dim = Int(d);
      if (dim < 0) Error(d, "negative dimension " + d.text);
      type.shape.push_back(dim);
    }
    Take();
    try {
      type.CheckSize();
    } catch (const tg::Error& e) {
      Error(t, e.message());
    }
    return type;
  }

  // One element of constant data, written into t at i.
  void Element(const Token& tok, HostTensor& t, int64_t i) {
    switch (t.type().dtype) {
      case DType::kF32: t.as<float>()[i] = Float<float>(tok); break;
      case DType::kF64: t.as<double>()[i] = Float<double>(tok); break;
      case DType::kF16:
      case DType::kBF16: t.SetFromDouble(i, Float<float>(tok)); break;
      case DType::kI64: t.as<int64_t>()[i] = Int(tok); break;
      case DType::kI32: {
        int64_t v = Int(tok);
        if (v < INT32_MIN || v > INT32_MAX) Error(tok, "value out of range for i32: " + tok.text);
        t.as<int32_t>()[i] = static_cast<int32_t>(v);
        break;
      }
      case DType::kU8:
      case DType::kI8:
      case DType::kI16: {
        int64_t v = Int(tok);
        const DType d = t.type().dtype;
        const int64_t lo = d == DType::kU8 ? 0 : d == DType::kI8 ? INT8_MIN : INT16_MIN;
        const int64_t hi = d == DType::kU8 ? UINT8_MAX : d == DType::kI8 ? INT8_MAX : INT16_MAX;
        if (v < lo || v > hi) {
          Error(tok, "value out of range for " + std::string(DTypeName(d)) + ": " + tok.text);
        }
        t.SetFromDouble(i, static_cast<double>(v));
        break;
      }
      case DType::kBool:
        if (tok.kind == Tok::kIdent && (tok.text == "true" || tok.text == "false")) {
          t.as<uint8_t>()[i] = tok.text == "true";
        } else {
          int64_t v = Int(tok);
          if (v != 0 && v != 1) Error(tok, "expected true, false, 0 or 1 for bool data");
          t.as<uint8_t>()[i] = static_cast<uint8_t>(v);
        }
        break;
    }
  }

  HostTensor ConstantData(const TensorType& type) {
    int64_t n = type.numel();
    const Token& start = Peek();
    // Every element is a token of the text: a type claiming more than the text holds is
    // refused before its buffer is allocated.
    if (n > static_cast<int64_t>(tokens_.size() - pos_)) {
      Error(start, "expected " + std::to_string(n) + " elements for " + type.ToString() +
                       ", the text holds fewer");
    }
    HostTensor t(type);
    if (!IsPunct('[')) {
      if (n != 1) Error(start, "expected " + std::to_string(n) + " elements in a [...] list");
      Element(Take(), t, 0);
      return t;
    }
    Take();
    int64_t count = 0;
    while (!IsPunct(']')) {
      if (Peek().kind == Tok::kEnd) Error(Peek(), "unterminated list");
      if (count > 0) Expect(',');
      const Token& tok = Take();
      if (count >= n) Error(tok, "too many elements: " + type.ToString() + " holds " +
                                     std::to_string(n));
      Element(tok, t, count++);
    }
    if (count != n) {
      Error(Peek(), "expected " + std::to_string(n) + " elements for " + type.ToString() +
                        ", got " + std::to_string(count));
    }
    Take();
    return t;
  }

  Attr ListAttr() {
    Take();  // '['
    std::vector<Token> items;
    while (!IsPunct(']')) {
      if (Peek().kind == Tok::kEnd) Error(Peek(), "unterminated list");
      if (!items.empty()) Expect(',');
      items.push_back(Take());
    }
    Take();
    bool any_float = false;
    for (const Token& t : items) any_float = any_float || LooksFloat(t);
    if (any_float) {
      std::vector<double> v;
      for (const Token& t : items) v.push_back(Float<double>(t));
      return v;
    }
    std::vector<int64_t> v;
    for (const Token& t : items) v.push_back(Int(t));
    return v;
  }

  Attr AttrValue(int depth) {
    const Token& t = Peek();
    if (IsPunct('[')) return ListAttr();
    if (t.kind == Tok::kString) return Take().text;
    if (t.kind == Tok::kNumber) {
      if (LooksFloat(t)) return Float<double>(Take());
      return Int(Take());
    }
    if (t.kind == Tok::kIdent) {
      if (t.text == "true" || t.text == "false") return Take().text == "true";
      if (t.text == "inf" || t.text == "nan") return Float<double>(Take());
      if (t.text == "graph") {
        return std::shared_ptr<const Graph>(ParseGraphBody(depth + 1));
      }
      if (std::optional<DType> d = ParseDType(t.text)) {
        Take();
        return *d;
      }
    }
    Error(t, "expected an attribute value, got " + Describe(t));
  }

  // `graph NAME { statements }`
  std::unique_ptr<Graph> ParseGraphBody(int depth) {
    if (depth > kMaxGraphDepth) Error(Peek(), "graphs nested too deeply");
    ExpectWord("graph");
    auto g = std::make_unique<Graph>(Name("a graph name"));
    Expect('{');
    std::unordered_map<std::string, Value*> scope;
    while (!IsPunct('}')) {
      if (Peek().kind == Tok::kEnd) Error(Peek(), "missing '}' at end of graph " + g->name());
      Statement(*g, scope, depth);
    }
    Take();
    return g;
  }

  // A value being defined: checks the name is new in this graph.
  std::string NewName(const std::unordered_map<std::string, Value*>& scope) {
    const Token& t = Peek();
    if (t.kind != Tok::kValue) Error(t, "expected a value name like %x, got " + Describe(t));
    if (scope.count(t.text)) Error(t, "value %" + t.text + " is defined twice");
    return Take().text;
  }
  Value* Use(const std::unordered_map<std::string, Value*>& scope) {
    const Token& t = Peek();
    if (t.kind != Tok::kValue) Error(t, "expected a value like %x, got " + Describe(t));
    auto it = scope.find(t.text);
    if (it == scope.end()) Error(t, "unknown value %" + t.text);
    Take();
    return it->second;
  }

  void Define(Graph& g, std::unordered_map<std::string, Value*>& scope, const Token& at,
              Value* v, const std::string& name) {
    if (g.RenameValue(v, name) != name) Error(at, "cannot give value the name %" + name);
    scope[name] = v;
  }

  void Statement(Graph& g, std::unordered_map<std::string, Value*>& scope, int depth) {
    const Token& head = Peek();
    if (head.kind == Tok::kIdent) {
      std::string word = head.text;
      if (word == "input" || word == "hyperparam" || word == "variable" || word == "const") {
        Take();
        bool trainable = true;
        if (word == "variable" && IsPunct('(')) {
          Take();
          ExpectWord("frozen");
          Expect(')');
          trainable = false;
        }
        const Token& name_tok = Peek();
        std::string name = NewName(scope);
        Expect(':');
        TensorType type = Type();
        Value* v = nullptr;
        if (word == "input") {
          v = g.AddInput(name, type);
        } else if (word == "hyperparam") {
          v = g.AddHyperParam(name, type);
        } else if (word == "variable") {
          v = g.AddVariable(name, type, trainable);
        } else {
          Expect('=');
          v = g.AddConstant(ConstantData(type), name);
        }
        Define(g, scope, name_tok, v, name);
        return;
      }
      if (word == "output") {
        Take();
        g.AddOutput(Use(scope));
        return;
      }
      if (word == "update") {
        Take();
        const Token& var_tok = Peek();
        Value* var = Use(scope);
        if (var->kind() != ValueKind::kVariable) {
          Error(var_tok, "update target %" + var->name() + " is not a variable");
        }
        for (const VariableUpdate& u : g.updates()) {
          if (u.variable == var) Error(var_tok, "variable %" + var->name() + " updated twice");
        }
        Expect('=');
        Value* value = Use(scope);
        bool on_optimizer_step = IsIdent("on_optimizer_step");
        if (on_optimizer_step) Take();
        g.SetUpdate(var, value, on_optimizer_step);
        return;
      }
      if (word == "shadow") {
        Take();
        const Token& shadow_tok = Peek();
        Value* shadow = Use(scope);
        Expect('=');
        const Token& source_tok = Peek();
        Value* source = Use(scope);
        if (shadow->kind() != ValueKind::kVariable) {
          Error(shadow_tok, "shadow %" + shadow->name() + " is not a variable");
        }
        if (source->kind() != ValueKind::kVariable) {
          Error(source_tok, "shadow source %" + source->name() + " is not a variable");
        }
        g.AddShadow(shadow, source);
        return;
      }
      Error(head, "expected a statement (input, hyperparam, variable, const, %x = op(...), "
                  "output, update, shadow), got " + Describe(head));
    }
    if (head.kind == Tok::kValue || IsPunct('(')) {
      NodeStatement(g, scope, depth);
      return;
    }
    Error(head, "expected a statement, got " + Describe(head));
  }

  // `%a, %b = op(%x, ...) {attrs} : T1, T2 @N loc("...")`, or `() = op(...)` with no outputs.
  void NodeStatement(Graph& g, std::unordered_map<std::string, Value*>& scope, int depth) {
    std::vector<std::pair<Token, std::string>> outs;
    if (IsPunct('(')) {
      Take();
      Expect(')');
    } else {
      for (;;) {
        const Token& t = Peek();
        std::string name = NewName(scope);
        for (const auto& [tok, prev] : outs) {
          if (prev == name) Error(t, "value %" + name + " is defined twice");
        }
        outs.emplace_back(t, name);
        if (!IsPunct(',')) break;
        Take();
      }
    }
    Expect('=');
    std::string op = Name("an op name");
    Expect('(');
    std::vector<Value*> inputs;
    while (!IsPunct(')')) {
      if (!inputs.empty()) Expect(',');
      inputs.push_back(Use(scope));
    }
    Take();
    AttrMap attrs;
    if (IsPunct('{')) {
      Take();
      while (!IsPunct('}')) {
        if (!attrs.empty()) Expect(',');
        const Token& key_tok = Peek();
        std::string key = Name("an attribute name");
        if (attrs.count(key)) Error(key_tok, "attribute '" + key + "' given twice");
        Expect('=');
        attrs[key] = AttrValue(depth);
      }
      Take();
    }
    std::vector<TensorType> types;
    if (!outs.empty()) {
      const Token& colon = Peek();
      Expect(':');
      for (;;) {
        types.push_back(Type());
        if (!IsPunct(',')) break;
        Take();
      }
      if (types.size() != outs.size()) {
        Error(colon, "node has " + std::to_string(outs.size()) + " outputs but " +
                         std::to_string(types.size()) + " types");
      }
    }
    int placement = 0;
    if (IsPunct('@')) {
      Take();
      const Token& p = Take();
      int64_t v = Int(p);
      if (v < INT32_MIN || v > INT32_MAX) Error(p, "placement out of range");
      placement = static_cast<int>(v);
    }
    std::string source;
    if (IsIdent("loc")) {
      Take();
      Expect('(');
      if (Peek().kind != Tok::kString) Error(Peek(), "expected a string in loc(...)");
      source = Take().text;
      Expect(')');
    }
    Node* n = g.AddNode(op, std::move(inputs), std::move(types), std::move(attrs));
    n->set_placement(placement);
    n->set_source(std::move(source));
    // Move auto-names out of the way first so that sibling outputs cannot collide.
    for (Value* v : n->outputs()) g.RenameValue(v, "\x01tmp" + std::to_string(v->id()));
    for (size_t i = 0; i < outs.size(); ++i) {
      Define(g, scope, outs[i].first, n->output(i), outs[i].second);
    }
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
};

}  // namespace

std::unique_ptr<Graph> ParseGraph(std::string_view text) {
  Parser parser(Lexer(text).Run());
  return parser.ParseTop();
}

}  // namespace tg
