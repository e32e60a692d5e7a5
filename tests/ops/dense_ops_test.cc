// Dense ops (matmul, conv2d, pooling, norms) against values computed by PyTorch
// (dense_ops_expected.py prints the table below), for the CPU kernels in f32 and f64 and
// the reference kernels in f64; plus shape-error messages of the infer functions.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "ops/builder.h"
#include "ops/evaluate.h"
#include "ops/op_test_util.h"
#include "support/error.h"

namespace tg {
namespace {

struct Expected {
  std::string name;
  Shape shape;
  double weighted_sum, first, last;
};

// From dense_ops_expected.py.
const Expected kExpected[] = {
    {"mm_batched_b2d", {2,3,5}, 2.03313305318, -1.3364784028, 1.23600975544},
    {"mm_ta_tb", {2,3,5}, 10.4558909073, 6.00868534273, -0.448408776154},
    {"mm_broadcast", {2,3,3,2}, 6.8440703072, 2.80223592389, 9.02959835354},
    {"mm_a2d_tb", {2,3,5}, 5.23436980265, 7.15049366248, -2.08520039138},
    {"conv_groups", {2,6,4,6}, -44.110018566, -4.48122187148, -12.2996646665},
    {"conv_depthwise", {1,3,3,3}, 26.2127752443, -2.49584879934, -13.0230442458},
    {"max_ceil", {1,2,4,4}, 0.384646172936, 1.04808868337, 1.99678337944},
    {"max_dil", {1,1,6,6}, 0.529455192278, 1.34857582326, -1.09412567065},
    {"max_rect_ceil", {1,2,4,6}, -9.48626925857, 1.92255040595, 0.320904011961},
    {"avg_ceil_nopad", {1,2,4,4}, -0.804066359586, 0.841112622944, 1.81497072323},
    {"avg_ceil_pad", {1,2,4,4}, 0.118058384789, 0.37382783242, 0.453742680808},
    {"avg_div", {1,1,4,4}, 2.06540778361, 1.41297073812, 1.5719470257},
    {"avg_ceil_edge", {1,1,3,3}, 2.14374819039, 0, 1.17896026927},
    {"adaptive_down", {1,2,3,2}, 0.0205620013968, 0.227589890408, -0.276693820742},
    {"adaptive_up", {1,1,4,5}, 10.5197757045, 0, 0.361192535788},
    {"bn_train_y", {2,3,4,4}, 22.1930537956, 1.71935561324, -0.950503245477},
    {"bn_train_mean", {3}, 0.285473510267, 0.0829531081631, 0.104723100054},
    {"bn_train_invstd", {3}, 2.12968887702, 0.710855989707, 0.719310948771},
    {"bn_train_var", {3}, 5.80618643146, 1.97894876799, 1.93269984247},
    {"bn_infer", {2,3,4,4}, -25.4322069525, 1.39506746221, 0.797562240449},
    {"ln2_y", {2,3,4}, 11.7070542065, 0.872391272636, -2.17601485804},
    {"ln2_mean", {2}, 0.782265984405, 0.645361095329, 0.137592277352},
    {"ln2_rstd", {2}, 1.51443911055, 0.871189565722, 0.646479248299},
};

struct In {
  Shape shape;
  bool positive = false;
};

struct Case {
  std::string name, op;
  std::vector<In> inputs;
  AttrMap attrs;
  int output = 0;
};

using Ints = std::vector<int64_t>;

std::vector<Case> Cases() {
  AttrMap max_ceil{{"kernel_size", Ints{3, 3}}, {"stride", Ints{2, 2}}, {"padding", Ints{1, 1}},
                   {"ceil_mode", true}};
  AttrMap avg_ceil = max_ceil;
  AttrMap avg_nopad = avg_ceil;
  avg_nopad["count_include_pad"] = false;
  std::vector<In> bn{{{2, 3, 4, 4}}, {{3}}, {{3}}};
  std::vector<In> ln{{{2, 3, 4}}, {{3, 4}}, {{3, 4}}};
  AttrMap ln_attrs{{"normalized_ndim", int64_t{2}}};
  return {
      {"mm_batched_b2d", "matmul", {{{2, 3, 4}}, {{4, 5}}}, {}},
      {"mm_ta_tb", "matmul", {{{2, 4, 3}}, {{2, 5, 4}}},
       {{"transpose_a", true}, {"transpose_b", true}}},
      {"mm_broadcast", "matmul", {{{2, 1, 3, 4}}, {{3, 4, 2}}}, {}},
      {"mm_a2d_tb", "matmul", {{{3, 4}}, {{2, 5, 4}}}, {{"transpose_b", true}}},
      {"conv_groups", "conv2d", {{{2, 4, 7, 6}}, {{6, 2, 3, 3}}},
       {{"stride", Ints{2, 1}}, {"padding", Ints{1, 2}}, {"dilation", Ints{1, 2}},
        {"groups", int64_t{2}}}},
      {"conv_depthwise", "conv2d", {{{1, 3, 6, 6}}, {{3, 1, 3, 3}}},
       {{"stride", Ints{2, 2}}, {"padding", Ints{1, 1}}, {"groups", int64_t{3}}}},
      {"max_ceil", "max_pool2d", {{{1, 2, 7, 7}}}, max_ceil},
      {"max_dil", "max_pool2d", {{{1, 1, 8, 8}}},
       {{"kernel_size", Ints{2, 2}}, {"stride", Ints{1, 1}}, {"dilation", Ints{2, 2}}}},
      {"max_rect_ceil", "max_pool2d", {{{1, 2, 6, 5}}},
       {{"kernel_size", Ints{3, 2}}, {"stride", Ints{2, 1}}, {"padding", Ints{1, 1}},
        {"ceil_mode", true}}},
      {"avg_ceil_nopad", "avg_pool2d", {{{1, 2, 6, 6}}}, avg_nopad},
      {"avg_ceil_pad", "avg_pool2d", {{{1, 2, 6, 6}}}, avg_ceil},
      {"avg_div", "avg_pool2d", {{{1, 1, 5, 5}}},
       {{"kernel_size", Ints{2, 2}}, {"stride", Ints{1, 1}}, {"divisor_override", int64_t{3}}}},
      {"avg_ceil_edge", "avg_pool2d", {{{1, 1, 5, 5}}},
       {{"kernel_size", Ints{2, 2}}, {"stride", Ints{2, 2}}, {"padding", Ints{1, 1}},
        {"ceil_mode", true}}},
      {"adaptive_down", "adaptive_avg_pool2d", {{{1, 2, 7, 5}}}, {{"output_size", Ints{3, 2}}}},
      {"adaptive_up", "adaptive_avg_pool2d", {{{1, 1, 3, 3}}}, {{"output_size", Ints{4, 5}}}},
      {"bn_train_y", "batch_norm_train", bn, {}, 0},
      {"bn_train_mean", "batch_norm_train", bn, {}, 1},
      {"bn_train_invstd", "batch_norm_train", bn, {}, 2},
      {"bn_train_var", "batch_norm_train", bn, {}, 3},
      {"bn_infer", "batch_norm_inference",
       {{{2, 3, 4, 4}}, {{3}}, {{3}}, {{3}}, {{3}, true}}, {{"eps", 1e-3}}},
      {"ln2_y", "layer_norm", ln, ln_attrs, 0},
      {"ln2_mean", "layer_norm", ln, ln_attrs, 1},
      {"ln2_rstd", "layer_norm", ln, ln_attrs, 2},
  };
}

HostTensor Input(const In& in, int j, DType dtype) {
  HostTensor t(TensorType{dtype, in.shape});
  for (int64_t i = 0; i < t.type().numel(); ++i) {
    double s = std::sin(0.37 * i + j);
    t.SetFromDouble(i, in.positive ? 0.5 + std::fabs(s) : 2 * s);
  }
  return t;
}

void CheckCase(const Case& c, const Expected& e, DType dtype, DeviceKind choice, double tol) {
  std::vector<HostTensor> inputs;
  for (size_t j = 0; j < c.inputs.size(); ++j) inputs.push_back(Input(c.inputs[j], j, dtype));
  Graph g;
  Node* n = testing::BuildSingleOpGraph(g, c.op, inputs, c.attrs);
  std::vector<const HostTensor*> ptrs;
  for (const HostTensor& t : inputs) ptrs.push_back(&t);
  HostTensor out = EvaluateNode(*n, ptrs, choice).at(c.output);
  ASSERT_EQ(out.type().shape, e.shape);
  double sum = 0;
  for (int64_t i = 0; i < out.type().numel(); ++i) sum += out.GetAsDouble(i) * std::cos(0.1 * i);
  EXPECT_NEAR(sum, e.weighted_sum, tol * (1 + std::fabs(e.weighted_sum)));
  EXPECT_NEAR(out.GetAsDouble(0), e.first, tol * (1 + std::fabs(e.first)));
  EXPECT_NEAR(out.GetAsDouble(out.type().numel() - 1), e.last, tol * (1 + std::fabs(e.last)));
}

TEST(DenseOps, MatchPyTorch) {
  std::vector<Case> cases = Cases();
  ASSERT_EQ(cases.size(), std::size(kExpected));
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].name);
    ASSERT_EQ(cases[i].name, kExpected[i].name);
    CheckCase(cases[i], kExpected[i], DType::kF32, DeviceKind::kCpu, 1e-4);
    CheckCase(cases[i], kExpected[i], DType::kF64, DeviceKind::kCpu, 1e-9);
    CheckCase(cases[i], kExpected[i], DType::kF64, DeviceKind::kReference, 1e-9);
  }
}

// Infer errors are Shape errors that name the offending shapes.
void ExpectShapeError(const std::string& op, std::vector<TensorType> ins, AttrMap attrs,
                      const std::string& needle) {
  Graph g;
  Builder b(g);
  std::vector<Value*> values;
  for (size_t i = 0; i < ins.size(); ++i) {
    values.push_back(g.AddInput("x" + std::to_string(i), ins[i]));
  }
  try {
    b.Op(op, values, attrs);
    ADD_FAILURE() << op << ": no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kShape) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(DenseOps, ShapeErrors) {
  auto f32 = [](Shape s) { return TensorType{DType::kF32, s}; };
  ExpectShapeError("matmul", {f32({2, 3}), f32({4, 5})}, {}, "f32[4,5]");
  ExpectShapeError("matmul", {f32({2, 2, 3}), f32({3, 3, 5})}, {}, "do not broadcast");
  ExpectShapeError("conv2d", {f32({1, 4, 5, 5}), f32({2, 3, 3, 3})}, {}, "[2,3,3,3]");
  ExpectShapeError("conv2d", {f32({1, 4, 2, 2}), f32({2, 4, 3, 3})}, {}, "padded");
  ExpectShapeError("max_pool2d", {f32({1, 1, 4, 4})},
                   {{"kernel_size", Ints{2, 2}}, {"padding", Ints{2, 2}}}, "padding");
  ExpectShapeError("batch_norm_train", {f32({2, 3}), f32({4}), f32({3})}, {}, "f32[4]");
  ExpectShapeError("layer_norm", {f32({2, 3}), f32({2}), f32({3})}, {}, "f32[2]");
}

}  // namespace
}  // namespace tg
