#include "ir/attr.h"

#include "ir/printer.h"
#include "support/error.h"

namespace tg {

AttrKind KindOf(const Attr& attr) { return static_cast<AttrKind>(attr.index()); }

const char* AttrKindName(AttrKind kind) {
  switch (kind) {
    case AttrKind::kInt: return "int";
    case AttrKind::kFloat: return "float";
    case AttrKind::kBool: return "bool";
    case AttrKind::kString: return "string";
    case AttrKind::kInts: return "int list";
    case AttrKind::kFloats: return "float list";
    case AttrKind::kDType: return "dtype";
    case AttrKind::kGraph: return "graph";
  }
  return "?";
}

namespace {
const Attr& Find(const AttrMap& attrs, const std::string& name) {
  auto it = attrs.find(name);
  TG_CHECK(it != attrs.end(), kInternal, "missing attribute '", name, "'");
  return it->second;
}
[[noreturn]] void WrongKind(const std::string& name, const Attr& a, const char* want) {
  Fail(ErrorKind::kInternal, "attribute '", name, "' is a ", AttrKindName(KindOf(a)),
       ", expected ", want);
}
}  // namespace

bool HasAttr(const AttrMap& attrs, const std::string& name) { return attrs.count(name) != 0; }

bool GetFlag(const AttrMap& attrs, const std::string& name) {
  return HasAttr(attrs, name) && GetBool(attrs, name);
}

int64_t GetInt(const AttrMap& attrs, const std::string& name) {
  const Attr& a = Find(attrs, name);
  if (auto* i = std::get_if<int64_t>(&a)) return *i;
  if (auto* b = std::get_if<bool>(&a)) return *b;
  WrongKind(name, a, "int");
}

double GetFloat(const AttrMap& attrs, const std::string& name) {
  const Attr& a = Find(attrs, name);
  if (auto* d = std::get_if<double>(&a)) return *d;
  if (auto* i = std::get_if<int64_t>(&a)) return static_cast<double>(*i);
  WrongKind(name, a, "float");
}

bool GetBool(const AttrMap& attrs, const std::string& name) {
  const Attr& a = Find(attrs, name);
  if (auto* b = std::get_if<bool>(&a)) return *b;
  if (auto* i = std::get_if<int64_t>(&a)) return *i != 0;
  WrongKind(name, a, "bool");
}

const std::string& GetString(const AttrMap& attrs, const std::string& name) {
  const Attr& a = Find(attrs, name);
  if (auto* s = std::get_if<std::string>(&a)) return *s;
  WrongKind(name, a, "string");
}

std::vector<int64_t> GetInts(const AttrMap& attrs, const std::string& name) {
  const Attr& a = Find(attrs, name);
  if (auto* v = std::get_if<std::vector<int64_t>>(&a)) return *v;
  if (auto* v = std::get_if<std::vector<double>>(&a); v && v->empty()) return {};
  WrongKind(name, a, "int list");
}

std::vector<double> GetFloats(const AttrMap& attrs, const std::string& name) {
  const Attr& a = Find(attrs, name);
  if (auto* v = std::get_if<std::vector<double>>(&a)) return *v;
  if (auto* v = std::get_if<std::vector<int64_t>>(&a)) return {v->begin(), v->end()};
  WrongKind(name, a, "float list");
}

DType GetDType(const AttrMap& attrs, const std::string& name) {
  const Attr& a = Find(attrs, name);
  if (auto* d = std::get_if<DType>(&a)) return *d;
  WrongKind(name, a, "dtype");
}

const Graph& GetGraph(const AttrMap& attrs, const std::string& name) {
  const Attr& a = Find(attrs, name);
  if (auto* g = std::get_if<std::shared_ptr<const Graph>>(&a)) return **g;
  WrongKind(name, a, "graph");
}

bool AttrEquals(const Attr& a, const Attr& b) {
  if (a.index() != b.index()) return false;
  if (auto* ga = std::get_if<std::shared_ptr<const Graph>>(&a)) {
    auto* gb = std::get_if<std::shared_ptr<const Graph>>(&b);
    return *ga == *gb || PrintGraph(**ga) == PrintGraph(**gb);
  }
  return a == b;
}

}  // namespace tg
