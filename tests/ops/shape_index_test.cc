// Hand-checked values for the reduce, softmax, shape, index and loss op families: small
// inputs whose outputs were computed by hand (or with PyTorch), checked through both the CPU
// and the reference kernels, plus the errors the ops promise (shape errors naming the shapes,
// out-of-range indices raising Runtime errors).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "autodiff/autodiff.h"
#include "ops/builder.h"
#include "ops/evaluate.h"
#include "ops/op_test_util.h"
#include "support/error.h"

namespace tg {
namespace {

HostTensor Tensor(DType dtype, Shape shape, const std::vector<double>& values) {
  HostTensor t(TensorType{dtype, std::move(shape)});
  EXPECT_EQ(static_cast<int64_t>(values.size()), t.type().numel());
  for (size_t i = 0; i < values.size(); ++i) t.SetFromDouble(static_cast<int64_t>(i), values[i]);
  return t;
}
HostTensor F32(Shape shape, const std::vector<double>& v) { return Tensor(DType::kF32, shape, v); }
HostTensor I64(Shape shape, const std::vector<double>& v) { return Tensor(DType::kI64, shape, v); }

std::vector<double> Values(const HostTensor& t) {
  std::vector<double> v;
  for (int64_t i = 0; i < t.type().numel(); ++i) v.push_back(t.GetAsDouble(i));
  return v;
}

// Runs `op` on the inputs with one kernel choice; returns output 0.
HostTensor RunWith(const std::string& op, const std::vector<HostTensor>& inputs,
                   const AttrMap& attrs, DeviceKind choice) {
  Graph g;
  Node* n = testing::BuildSingleOpGraph(g, op, inputs, attrs);
  std::vector<const HostTensor*> ptrs;
  for (const HostTensor& t : inputs) ptrs.push_back(&t);
  return EvaluateNode(*n, ptrs, choice)[0];
}

// Checks type and values of `op` through both kernels.
void Expect(const std::string& op, const std::vector<HostTensor>& inputs, const AttrMap& attrs,
            const TensorType& type, const std::vector<double>& want, double tol = 1e-6) {
  for (DeviceKind choice : {DeviceKind::kCpu, DeviceKind::kReference}) {
    SCOPED_TRACE(op + (choice == DeviceKind::kCpu ? " (cpu)" : " (reference)"));
    HostTensor out = RunWith(op, inputs, attrs, choice);
    EXPECT_EQ(out.type().ToString(), type.ToString());
    std::vector<double> got = Values(out);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      if (std::isnan(want[i])) EXPECT_TRUE(std::isnan(got[i])) << "element " << i;
      else EXPECT_NEAR(got[i], want[i], tol * (1 + std::fabs(want[i]))) << "element " << i;
    }
  }
}

TensorType T(DType d, Shape s) { return {d, std::move(s)}; }
const DType kF = DType::kF32;
using Ints = std::vector<int64_t>;

// Expects building `op` to throw an error of `kind` whose message contains `text`.
void ExpectBuildError(const std::string& op, const std::vector<TensorType>& types,
                      const AttrMap& attrs, ErrorKind kind, const std::string& text) {
  Graph g;
  Builder b(g);
  std::vector<Value*> ins;
  for (size_t i = 0; i < types.size(); ++i) {
    ins.push_back(g.AddInput("x" + std::to_string(i), types[i]));
  }
  try {
    b.OpNode(op, ins, attrs);
    ADD_FAILURE() << op << ": expected an error containing '" << text << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(e.message().find(text), std::string::npos) << e.message();
  }
}

// ---- reduce ----------------------------------------------------------------------------

TEST(Reduce, SumMeanAmaxVar) {
  HostTensor x = F32({2, 3}, {1, 2, 3, 4, 5, 6});
  Expect("sum", {x}, {}, T(kF, {}), {21});
  Expect("sum", {x}, {{"axes", Ints{0}}}, T(kF, {3}), {5, 7, 9});
  Expect("sum", {x}, {{"axes", Ints{-1}}, {"keepdim", true}}, T(kF, {2, 1}), {6, 15});
  Expect("mean", {x}, {{"axes", Ints{1}}}, T(kF, {2}), {2, 5});
  Expect("amax", {x}, {{"axes", Ints{0}}}, T(kF, {3}), {4, 5, 6});
  Expect("var", {x}, {{"axes", Ints{1}}}, T(kF, {2}), {1, 1});
  Expect("var", {x}, {{"correction", 0.0}}, T(kF, {}), {35.0 / 12.0});
  Expect("argmax", {F32({2, 3}, {1, 7, 7, 9, 2, 9})}, {{"axis", int64_t{1}}},
         T(DType::kI64, {2}), {1, 0});
  Expect("argmax", {F32({2, 3}, {1, 7, 7, 9, 2, 9})}, {{"axis", int64_t{0}}, {"keepdim", true}},
         T(DType::kI64, {1, 3}), {1, 0, 1});
}

TEST(Reduce, NonContiguousAxesAndIntegers) {
  // x[a,b,c] = a*100 + b*10 + c over [2,3,2]; sum over axes {0,2}.
  std::vector<double> v;
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 3; ++b)
      for (int c = 0; c < 2; ++c) v.push_back(a * 100 + b * 10 + c);
  Expect("sum", {F32({2, 3, 2}, v)}, {{"axes", Ints{0, -1}}}, T(kF, {3}), {202, 242, 282});
  Expect("amax", {F32({2, 3, 2}, v)}, {{"axes", Ints{2, 0}}, {"keepdim", true}},
         T(kF, {1, 3, 1}), {101, 111, 121});
  Expect("sum", {I64({2, 2}, {1, 2, 3, 4})}, {{"axes", Ints{1}}}, T(DType::kI64, {2}), {3, 7});
}

TEST(Reduce, SumOfManyFloatsIsAccurate) {
  // 1e6 copies of 0.1f: a float accumulator drifts by ~1e-3 relative, double does not.
  std::vector<double> v(1000000, 0.1);
  HostTensor x = F32({1000000}, v);
  double exact = 1000000.0 * static_cast<double>(0.1f);
  Expect("sum", {x}, {}, T(kF, {}), {exact}, 1e-7);
}

// The gradient of amax is split evenly among ties (PyTorch semantics): d amax([1,3,3]) =
// [0, 0.5, 0.5]; the gradient of var(correction=1) of [1,2,3] is 2(x-2)/2 = [-1, 0, 1].
TEST(Reduce, GradientsOfAmaxTiesAndVar) {
  for (const char* op : {"amax", "var"}) {
    SCOPED_TRACE(op);
    Graph g;
    Builder b(g);
    HostTensor x = F32({3}, std::string(op) == "amax" ? std::vector<double>{1, 3, 3}
                                                       : std::vector<double>{1, 2, 3});
    Value* in = g.AddInput("x", x.type());
    Value* y = b.Op1(op, {in});
    std::vector<Value*> grads = BuildGradients(b, y, {in});
    g.AddOutput(grads[0]);
    for (DeviceKind choice : {DeviceKind::kCpu, DeviceKind::kReference}) {
      std::vector<double> got = Values(EvaluateGraph(g, {{"x", x}}, choice).outputs[0]);
      std::vector<double> want = std::string(op) == "amax" ? std::vector<double>{0, 0.5, 0.5}
                                                           : std::vector<double>{-1, 0, 1};
      for (int i = 0; i < 3; ++i) EXPECT_NEAR(got[i], want[i], 1e-6);
    }
  }
}

TEST(Reduce, Errors) {
  ExpectBuildError("sum", {T(kF, {2, 3})}, {{"axes", Ints{2}}}, ErrorKind::kShape,
                   "expected axes in [-2, 2), got 2");
  ExpectBuildError("mean", {T(DType::kI64, {2})}, {}, ErrorKind::kShape,
                   "expected an f32 or f64 input, got i64[2]");
}

// ---- softmax ----------------------------------------------------------------------------

TEST(Softmax, ValuesAndStability) {
  double e1 = std::exp(1.0), e2 = std::exp(2.0), s = 1 + e1 + e2;
  HostTensor x = F32({1, 3}, {0, 1, 2});
  Expect("softmax", {x}, {}, T(kF, {1, 3}), {1 / s, e1 / s, e2 / s});
  Expect("log_softmax", {x}, {}, T(kF, {1, 3}),
         {-std::log(s), 1 - std::log(s), 2 - std::log(s)});
  // Large logits do not overflow.
  Expect("softmax", {F32({2}, {1000, 1000})}, {{"axis", int64_t{0}}}, T(kF, {2}), {0.5, 0.5});
  // Along axis 0 of a [2,2].
  Expect("softmax", {F32({2, 2}, {0, 5, 0, 5})}, {{"axis", int64_t{0}}}, T(kF, {2, 2}),
         {0.5, 0.5, 0.5, 0.5});
  // softmax_backward: y = [0.5, 0.5], go = [1, 0] -> y*(go - 0.5) = [0.25, -0.25].
  Expect("softmax_backward", {F32({2}, {1, 0}), F32({2}, {0.5, 0.5})}, {}, T(kF, {2}),
         {0.25, -0.25});
  Expect("log_softmax_backward", {F32({2}, {1, 0}), F32({2}, {std::log(0.5), std::log(0.5)})},
         {}, T(kF, {2}), {0.5, -0.5});
}

// ---- shape ------------------------------------------------------------------------------

TEST(Shape, ReshapePermuteExpand) {
  HostTensor x = F32({2, 3}, {0, 1, 2, 3, 4, 5});
  Expect("reshape", {x}, {{"shape", Ints{3, -1}}}, T(kF, {3, 2}), {0, 1, 2, 3, 4, 5});
  Expect("permute", {x}, {{"perm", Ints{1, 0}}}, T(kF, {3, 2}), {0, 3, 1, 4, 2, 5});
  Expect("expand", {F32({2, 1}, {7, 8})}, {{"shape", Ints{2, 3}}}, T(kF, {2, 3}),
         {7, 7, 7, 8, 8, 8});
  Expect("expand", {F32({3}, {1, 2, 3})}, {{"shape", Ints{2, 3}}}, T(kF, {2, 3}),
         {1, 2, 3, 1, 2, 3});
  // Byte-generic: permute an i64 and a bool tensor.
  Expect("permute", {I64({2, 2}, {1, 2, 3, 4})}, {{"perm", Ints{1, 0}}}, T(DType::kI64, {2, 2}),
         {1, 3, 2, 4});
  Expect("permute", {Tensor(DType::kBool, {1, 2}, {1, 0})}, {{"perm", Ints{1, 0}}},
         T(DType::kBool, {2, 1}), {1, 0});
}

TEST(Shape, SliceAndBackward) {
  HostTensor x = F32({10}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  auto slice = [](int64_t start, int64_t end, int64_t step) {
    return AttrMap{{"axis", int64_t{0}}, {"start", start}, {"end", end}, {"step", step}};
  };
  Expect("slice", {x}, slice(1, 8, 3), T(kF, {3}), {1, 4, 7});
  Expect("slice", {x}, slice(-3, std::numeric_limits<int64_t>::max(), 1), T(kF, {3}), {7, 8, 9});
  Expect("slice", {x}, slice(-100, 2, 1), T(kF, {2}), {0, 1});
  Expect("slice", {x}, slice(5, 2, 1), T(kF, {0}), {});
  AttrMap back = slice(1, 8, 3);
  back["input_shape"] = Ints{10};
  Expect("slice_backward", {F32({3}, {1, 2, 3})}, back, T(kF, {10}),
         {0, 1, 0, 0, 2, 0, 0, 3, 0, 0});
  Expect("slice", {F32({2, 3}, {0, 1, 2, 3, 4, 5})},
         {{"axis", int64_t{-1}}, {"start", int64_t{1}}, {"end", int64_t{3}}}, T(kF, {2, 2}),
         {1, 2, 4, 5});
}

TEST(Shape, CatAndFull) {
  Expect("cat", {F32({1, 2}, {1, 2}), F32({2, 2}, {3, 4, 5, 6}), F32({1, 2}, {7, 8})}, {},
         T(kF, {4, 2}), {1, 2, 3, 4, 5, 6, 7, 8});
  Expect("cat", {F32({2, 1}, {1, 2}), F32({2, 2}, {3, 4, 5, 6})}, {{"axis", int64_t{1}}},
         T(kF, {2, 3}), {1, 3, 4, 2, 5, 6});
  Expect("full", {}, {{"shape", Ints{2}}, {"value", 2.5}}, T(kF, {2}), {2.5, 2.5});
  Expect("full", {}, {{"shape", Ints{3}}, {"value", 7.0}, {"dtype", DType::kI32}},
         T(DType::kI32, {3}), {7, 7, 7});
}

TEST(Shape, Errors) {
  ExpectBuildError("reshape", {T(kF, {2, 3})}, {{"shape", Ints{4, 2}}}, ErrorKind::kShape,
                   "expected a shape with 6 elements (input f32[2,3]), got [4,2]");
  ExpectBuildError("expand", {T(kF, {2, 3})}, {{"shape", Ints{4, 3}}}, ErrorKind::kShape,
                   "expected input dims to be 1 or match [4,3], got [2,3]");
  ExpectBuildError("permute", {T(kF, {2, 3})}, {{"perm", Ints{0, 0}}}, ErrorKind::kShape,
                   "repeated axis");
  ExpectBuildError("cat", {T(kF, {2, 3}), T(kF, {2, 4})}, {}, ErrorKind::kShape,
                   "expected inputs like f32[2,3] except along axis 0, got f32[2,4]");
}

// ---- index ------------------------------------------------------------------------------

TEST(Index, GatherScatterAdd) {
  HostTensor x = F32({2, 3}, {1, 2, 3, 4, 5, 6});
  // torch.gather(x, 1, [[2,0],[1,1]]) = [[3,1],[5,5]]
  Expect("gather", {x, I64({2, 2}, {2, 0, 1, 1})}, {{"axis", int64_t{1}}}, T(kF, {2, 2}),
         {3, 1, 5, 5});
  // torch.gather(x, 0, [[1,0,1]]) = [[4,2,6]]
  Expect("gather", {x, I64({1, 3}, {1, 0, 1})}, {{"axis", int64_t{0}}}, T(kF, {1, 3}),
         {4, 2, 6});
  // scatter_add of ones at [[2,0],[1,1]] onto zeros: duplicates accumulate.
  Expect("scatter_add",
         {F32({2, 3}, {0, 0, 0, 0, 0, 0}), I64({2, 2}, {2, 0, 1, 1}), F32({2, 2}, {1, 1, 1, 1})},
         {{"axis", int64_t{1}}}, T(kF, {2, 3}), {1, 0, 1, 0, 2, 0});
}

TEST(Index, IndexSelectIndexAddEmbedding) {
  HostTensor x = F32({3, 2}, {1, 2, 3, 4, 5, 6});
  Expect("index_select", {x, I64({3}, {2, 0, 2})}, {{"axis", int64_t{0}}}, T(kF, {3, 2}),
         {5, 6, 1, 2, 5, 6});
  Expect("index_select", {x, Tensor(DType::kI32, {1}, {1})}, {{"axis", int64_t{1}}},
         T(kF, {3, 1}), {2, 4, 6});
  Expect("index_add", {F32({3, 2}, {0, 0, 0, 0, 0, 0}), I64({3}, {2, 0, 2}), x},
         {{"axis", int64_t{0}}}, T(kF, {3, 2}), {3, 4, 0, 0, 6, 8});
  Expect("embedding", {x, I64({2, 2}, {0, 2, 2, 1})}, {}, T(kF, {2, 2, 2}),
         {1, 2, 5, 6, 5, 6, 3, 4});
  // Rows of padding_idx (2) get no gradient; duplicates of row 0 accumulate.
  Expect("embedding_backward", {F32({4, 2}, {1, 1, 2, 2, 3, 3, 4, 4}), I64({4}, {0, 2, 0, 1})},
         {{"num_weights", int64_t{3}}, {"padding_idx", int64_t{2}}}, T(kF, {3, 2}),
         {4, 4, 4, 4, 0, 0});
}

TEST(Index, OutOfRangeIndicesRaiseRuntimeErrors) {
  HostTensor x = F32({5, 2}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  for (DeviceKind choice : {DeviceKind::kCpu, DeviceKind::kReference}) {
    try {
      RunWith("index_select", {x, I64({2}, {1, 7})}, {{"axis", int64_t{0}}}, choice);
      ADD_FAILURE() << "expected a Runtime error";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kRuntime);
      EXPECT_NE(e.message().find("index 7 out of range [0, 5)"), std::string::npos)
          << e.message();
    }
    EXPECT_THROW(RunWith("embedding", {x, I64({1}, {-1})}, {}, choice), Error);
    EXPECT_THROW(RunWith("gather", {x, I64({1, 1}, {2})}, {{"axis", int64_t{1}}}, choice), Error);
  }
  ExpectBuildError("gather", {T(kF, {2, 3}), T(kF, {2, 3})}, {{"axis", int64_t{1}}},
                   ErrorKind::kShape, "expected index of dtype i64 or i32, got f32[2,3]");
}

// ---- loss -------------------------------------------------------------------------------

TEST(Loss, NllLossReductionsAndIgnoreIndex) {
  HostTensor logp = F32({3, 2}, {-1, -2, -3, -4, -5, -6});
  HostTensor target = I64({3}, {1, 0, 1});
  auto attrs = [](const char* r, int64_t ignore) {
    return AttrMap{{"reduction", std::string(r)}, {"ignore_index", ignore}};
  };
  Expect("nll_loss", {logp, target}, attrs("none", -100), T(kF, {3}), {2, 3, 6});
  Expect("nll_loss", {logp, target}, attrs("sum", -100), T(kF, {}), {11});
  Expect("nll_loss", {logp, target}, attrs("mean", -100), T(kF, {}), {11.0 / 3});
  // ignore_index 0 drops the middle target: mean over the two remaining.
  Expect("nll_loss", {logp, target}, attrs("mean", 0), T(kF, {}), {4});
  Expect("nll_loss", {logp, target}, attrs("none", 0), T(kF, {3}), {2, 0, 6});
  AttrMap back = attrs("mean", 0);
  back["num_classes"] = int64_t{2};
  Expect("nll_loss_backward", {F32({}, {1}), target}, back, T(kF, {3, 2}),
         {0, -0.5, 0, 0, 0, -0.5});
  EXPECT_THROW(RunWith("nll_loss", {logp, I64({3}, {1, 2, 0})}, attrs("mean", -100),
                       DeviceKind::kCpu),
               Error);
}

}  // namespace
}  // namespace tg
