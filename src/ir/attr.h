// Attr: a typed node attribute (int, float, bool, string, int list, float list, dtype, or a
// nested graph used by fused ops). AttrMap keeps attributes sorted by name so that printing
// and CSE hashing are deterministic.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "ir/dtype.h"

namespace tg {

class Graph;

using Attr = std::variant<int64_t, double, bool, std::string, std::vector<int64_t>,
                          std::vector<double>, DType, std::shared_ptr<const Graph>>;

enum class AttrKind { kInt, kFloat, kBool, kString, kInts, kFloats, kDType, kGraph };

AttrKind KindOf(const Attr& attr);
const char* AttrKindName(AttrKind kind);

using AttrMap = std::map<std::string, Attr>;

// Typed accessors: throw an Internal error if the attribute is missing or of another kind.
// Int and float are interchangeable where a number is asked for.
int64_t GetInt(const AttrMap& attrs, const std::string& name);
double GetFloat(const AttrMap& attrs, const std::string& name);
bool GetBool(const AttrMap& attrs, const std::string& name);
const std::string& GetString(const AttrMap& attrs, const std::string& name);
std::vector<int64_t> GetInts(const AttrMap& attrs, const std::string& name);
std::vector<double> GetFloats(const AttrMap& attrs, const std::string& name);
DType GetDType(const AttrMap& attrs, const std::string& name);
const Graph& GetGraph(const AttrMap& attrs, const std::string& name);
bool HasAttr(const AttrMap& attrs, const std::string& name);
// An optional flag: GetBool where present, false where absent (layout attributes a pass sets
// on some nodes only, nodes made before an attribute existed).
bool GetFlag(const AttrMap& attrs, const std::string& name);

// Structural equality (graphs compare by printed text).
bool AttrEquals(const Attr& a, const Attr& b);

}  // namespace tg
