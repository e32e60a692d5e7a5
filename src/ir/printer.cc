// PrintGraph / PrintAttr: the writing half of the IR text format documented in printer.h.
// Floats are printed as the shortest text that parses back to the same bits (std::to_chars),
// with ".0" appended to integral values so that they read back as floats; constants print
// their full data; names that are not plain identifiers are printed as quoted strings.
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "ir/printer.h"
#include "support/error.h"

namespace tg {
namespace {

// Shortest exact text of a floating value: "0.5", "1.0", "1e-05", "inf", "-inf", "nan".
template <typename T>
std::string FloatText(T v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  std::string s(buf, res.ptr);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '.';
}

// A double-quoted string with \" \\ \n \t and \xHH escapes.
std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      static const char* kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// Value names: bare when made of [A-Za-z0-9_.], quoted otherwise.
std::string ValueRef(const std::string& name) {
  bool plain = !name.empty();
  for (char c : name) plain = plain && IsNameChar(c);
  return "%" + (plain ? name : Quote(name));
}

// Graph and attribute names: bare when an identifier that is not a keyword, quoted otherwise.
std::string Ident(const std::string& name) {
  bool plain = !name.empty() && !(name[0] >= '0' && name[0] <= '9') && name[0] != '.';
  for (char c : name) plain = plain && IsNameChar(c);
  return plain ? name : Quote(name);
}

std::string TypeText(const TensorType& t) { return t.ToString(); }

std::string ElementText(const HostTensor& t, int64_t i) {
  switch (t.type().dtype) {
    case DType::kF32: return FloatText(t.as<float>()[i]);
    case DType::kF64: return FloatText(t.as<double>()[i]);
    case DType::kF16:
    case DType::kBF16: return FloatText(static_cast<float>(t.GetAsDouble(i)));
    case DType::kI64: return std::to_string(t.as<int64_t>()[i]);
    case DType::kI32: return std::to_string(t.as<int32_t>()[i]);
    case DType::kBool: return t.as<uint8_t>()[i] ? "true" : "false";
    case DType::kU8: return std::to_string(t.as<uint8_t>()[i]);
    case DType::kI8: return std::to_string(t.as<int8_t>()[i]);
    case DType::kI16: return std::to_string(t.as<int16_t>()[i]);
  }
  return "?";
}

std::string ConstantText(const HostTensor& t) {
  if (t.type().rank() == 0) return ElementText(t, 0);
  std::string s = "[";
  int64_t n = t.type().numel();
  for (int64_t i = 0; i < n; ++i) {
    if (i) s += ", ";
    s += ElementText(t, i);
  }
  return s + "]";
}

void PrintGraphTo(const Graph& g, int indent, std::string& out);

std::string AttrText(const Attr& attr, int indent) {
  switch (KindOf(attr)) {
    case AttrKind::kInt: return std::to_string(std::get<int64_t>(attr));
    case AttrKind::kFloat: return FloatText(std::get<double>(attr));
    case AttrKind::kBool: return std::get<bool>(attr) ? "true" : "false";
    case AttrKind::kString: return Quote(std::get<std::string>(attr));
    case AttrKind::kInts: {
      std::string s = "[";
      const auto& v = std::get<std::vector<int64_t>>(attr);
      for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
      return s + "]";
    }
    case AttrKind::kFloats: {
      std::string s = "[";
      const auto& v = std::get<std::vector<double>>(attr);
      for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + FloatText(v[i]);
      return s + "]";
    }
    case AttrKind::kDType: return std::string(DTypeName(std::get<DType>(attr)));
    case AttrKind::kGraph: {
      const auto& g = std::get<std::shared_ptr<const Graph>>(attr);
      TG_ASSERT(g != nullptr, "null graph attribute");
      std::string s;
      PrintGraphTo(*g, indent, s);
      return s;
    }
  }
  return "?";
}

void PrintNode(const Node& n, int indent, std::string& out) {
  std::string s(indent, ' ');
  if (n.outputs().empty()) {
    s += "()";
  } else {
    for (size_t i = 0; i < n.outputs().size(); ++i) {
      s += (i ? ", " : "") + ValueRef(n.output(i)->name());
    }
  }
  s += " = " + Ident(n.op()) + "(";
  for (size_t i = 0; i < n.inputs().size(); ++i) {
    Value* in = n.input(i);
    s += (i ? ", " : "") + (in ? ValueRef(in->name()) : std::string("%<null>"));
  }
  s += ")";
  if (!n.attrs().empty()) {
    s += " {";
    bool first = true;
    for (const auto& [name, attr] : n.attrs()) {
      s += (first ? "" : ", ") + Ident(name) + " = " + AttrText(attr, indent);
      first = false;
    }
    s += "}";
  }
  if (!n.outputs().empty()) {
    s += " : ";
    for (size_t i = 0; i < n.outputs().size(); ++i) {
      s += (i ? ", " : "") + TypeText(n.output(i)->type());
    }
  }
  if (n.placement() != 0) s += " @" + std::to_string(n.placement());
  if (!n.source().empty()) s += " loc(" + Quote(n.source()) + ")";
  out += s + "\n";
}

// Prints "graph NAME {\n ... <indent>}" (no trailing newline); body lines at indent + 2.
void PrintGraphTo(const Graph& g, int indent, std::string& out) {
  std::string pad(indent + 2, ' ');
  out += "graph " + Ident(g.name()) + " {\n";
  for (Value* v : g.inputs()) out += pad + "input " + ValueRef(v->name()) + " : " +
                                     TypeText(v->type()) + "\n";
  for (Value* v : g.hyperparams()) {
    out += pad + "hyperparam " + ValueRef(v->name()) + " : " + TypeText(v->type()) + "\n";
  }
  for (Value* v : g.variables()) {
    out += pad + (v->trainable() ? "variable " : "variable(frozen) ") + ValueRef(v->name()) +
           " : " + TypeText(v->type()) + "\n";
  }
  for (Value* v : g.constants()) {
    out += pad + "const " + ValueRef(v->name()) + " : " + TypeText(v->type()) + " = " +
           ConstantText(v->constant()) + "\n";
  }
  for (const auto& n : g.nodes()) PrintNode(*n, indent + 2, out);
  for (Value* v : g.outputs()) out += pad + "output " + ValueRef(v ? v->name() : "<null>") + "\n";
  for (const VariableUpdate& u : g.updates()) {
    out += pad + "update " + ValueRef(u.variable ? u.variable->name() : "<null>") + " = " +
           ValueRef(u.value ? u.value->name() : "<null>") +
           (u.on_optimizer_step ? " on_optimizer_step" : "") + "\n";
  }
  for (const VariableShadow& s : g.shadows()) {
    out += pad + "shadow " + ValueRef(s.shadow->name()) + " = " + ValueRef(s.source->name()) +
           "\n";
  }
  out += std::string(indent, ' ') + "}";
}

}  // namespace

std::string PrintGraph(const Graph& graph) {
  std::string out;
  PrintGraphTo(graph, 0, out);
  return out + "\n";
}

std::string PrintAttr(const Attr& attr) { return AttrText(attr, 0); }

}  // namespace tg
