// Elementwise op family: registration entry point and the helpers shared by the sub-family
// files (elementwise_unary.cc, elementwise_activation_backward.cc, elementwise_binary.cc,
// elementwise_compare.cc, elementwise_bitwise.cc, elementwise_math.cc,
// elementwise_where_cast.cc).
#include "ops/elementwise_common.h"
#include "ops/families.h"

namespace tg {
namespace ew {

bool DTypeAllowed(DType d, unsigned allowed) {
  switch (d) {
    case DType::kF32: case DType::kF64: return allowed & kFloats;
    case DType::kI64: case DType::kI32: return allowed & kInts;
    case DType::kBool: return allowed & kBool;
    default: return false;
  }
}

std::string AllowedNames(unsigned allowed) {
  std::string s;
  auto add = [&](const char* n) { s += (s.empty() ? "" : ", ") + std::string(n); };
  if (allowed & kFloats) add("f32"), add("f64");
  if (allowed & kInts) add("i64"), add("i32");
  if (allowed & kBool) add("bool");
  return s;
}

int64_t BroadcastOffset(const Shape& out, const Shape& in, int64_t i) {
  int64_t offset = 0, stride = 1;
  size_t lead = out.size() - in.size();
  for (size_t d = out.size(); d-- > 0;) {
    int64_t idx = i % out[d];
    i /= out[d];
    if (d < lead) continue;
    int64_t extent = in[d - lead];
    if (extent != 1) offset += idx * stride;
    stride *= extent;
  }
  return offset;
}

InferFn UnaryInfer(const std::string& op, unsigned allowed, std::optional<DType> out) {
  return [op, allowed, out](const InferContext& c) {
    const TensorType& x = c.in(0);
    TG_CHECK(DTypeAllowed(x.dtype, allowed), kShape, op, ": expected an input of dtype ",
             AllowedNames(allowed), ", got ", x.ToString());
    return std::vector<TensorType>{{out.value_or(x.dtype), x.shape}};
  };
}

InferFn BroadcastInfer(const std::string& op, unsigned allowed, std::optional<DType> out) {
  return [op, allowed, out](const InferContext& c) {
    const TensorType& a = c.in(0);
    TG_CHECK(DTypeAllowed(a.dtype, allowed), kShape, op, ": expected operands of dtype ",
             AllowedNames(allowed), ", got ", a.ToString());
    Shape shape = a.shape;
    for (size_t i = 1; i < c.inputs.size(); ++i) {
      TG_CHECK(c.in(i).dtype == a.dtype, kShape, op, ": expected operands of one dtype, got ",
               a.ToString(), " and ", c.in(i).ToString());
      shape = BroadcastShapes(shape, c.in(i).shape);
    }
    return std::vector<TensorType>{{out.value_or(a.dtype), shape}};
  };
}

std::vector<OpSample> UnarySamples(InputInit init, AttrMap attrs, DType dtype) {
  std::vector<OpSample> s;
  for (Shape shape : {Shape{3, 4}, Shape{}, Shape{2, 3, 5}}) {
    s.push_back(OpSample{{{dtype, shape}}, attrs, {init}});
  }
  OpSample large{{{dtype, {300, 256}}}, attrs, {init}};
  large.skip_grad_check = true;
  s.push_back(large);
  return s;
}

std::vector<OpSample> BinarySamples(InputInit a, InputInit b, AttrMap attrs, DType dtype) {
  std::vector<OpSample> s;
  const std::pair<Shape, Shape> pairs[] = {
      {{3, 4}, {3, 4}}, {{3, 4}, {4}}, {{4}, {3, 4}}, {{3, 1}, {1, 4}}, {{2, 1, 4}, {3, 1}},
      {{3, 4}, {}},     {{}, {3, 4}},  {{}, {}}};
  for (const auto& [sa, sb] : pairs) {
    s.push_back(OpSample{{{dtype, sa}, {dtype, sb}}, attrs, {a, b}});
  }
  for (const auto& [sa, sb] : {std::pair<Shape, Shape>{{300, 256}, {256}},
                               std::pair<Shape, Shape>{{300, 256}, {300, 256}},
                               std::pair<Shape, Shape>{{64, 1, 130}, {1, 40, 130}}}) {
    OpSample large{{{dtype, sa}, {dtype, sb}}, attrs, {a, b}};
    large.skip_grad_check = true;
    s.push_back(large);
  }
  return s;
}

}  // namespace ew

void RegisterElementwiseOps(OpRegistry& r) {
  ew::RegisterUnaryOps(r);
  ew::RegisterActivationOps(r);
  ew::RegisterActivationBackwardOps(r);
  ew::RegisterBinaryOps(r);
  ew::RegisterCompareOps(r);
  ew::RegisterBitwiseOps(r);
  ew::RegisterMathOps(r);
  ew::RegisterSpecialOps(r);
  ew::RegisterWhereCastOps(r);
}

}  // namespace tg
