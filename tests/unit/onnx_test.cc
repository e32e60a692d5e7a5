// The ONNX front end in C++: models made with OnnxBuilder, imported and run by the sessions;
// import-time folding of shape arithmetic; errors for unsupported ops (all listed), bad bytes
// and contradicting stated types; one SGD step checked by hand.
#include <gtest/gtest.h>

#include <string>

#include "onnx/import.h"
#include "onnx/model_file.h"
#include "onnx/onnx_builder.h"
#include "onnx/session.h"
#include "support/error.h"

namespace tg {
namespace {

HostTensor Values(const Shape& shape, std::vector<double> v, DType d = DType::kF32) {
  HostTensor t({d, shape});
  for (size_t i = 0; i < v.size(); ++i) t.SetFromDouble(static_cast<int64_t>(i), v[i]);
  return t;
}

ErrorKind KindOf(const std::function<void()>& fn, std::string* message = nullptr) {
  try {
    fn();
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.kind();
  }
  ADD_FAILURE() << "no error";
  return ErrorKind::kInternal;
}

TEST(OnnxImport, LinearReluMatchesHandComputation) {
  OnnxBuilder ob;
  std::string x = ob.AddInput("x", {DType::kF32, {2, 3}});
  std::string w = ob.AddInitializer("w", Values({3, 2}, {1, -1, 2, 0, -3, 1}));
  std::string b = ob.AddInitializer("b", Values({2}, {0.5, -0.5}));
  ob.AddOutput(ob.Op("Relu", {ob.Op("Add", {ob.Op("MatMul", {x, w}), b})}));
  InferenceSession s(ob.Build());
  ASSERT_EQ(s.input_names(), std::vector<std::string>{"x"});
  HostTensor in = Values({1, 2, 3}, {1, 2, 3, -1, 0, 1});  // [steps=1, 2, 3]
  HostTensor y = s.Run({{in.data(), in.type()}}).at(0);
  // row 0: [1+4-9, -1+0+3] + b = [-3.5, 1.5] -> relu [0, 1.5]; row 1: [-1-3, 1+1] + b = [-3.5, 1.5]
  ASSERT_EQ(y.type().shape, (Shape{1, 2, 2}));
  EXPECT_FLOAT_EQ(y.as<float>()[0], 0.0f);
  EXPECT_FLOAT_EQ(y.as<float>()[1], 1.5f);
  EXPECT_FLOAT_EQ(y.as<float>()[2], 0.0f);
  EXPECT_FLOAT_EQ(y.as<float>()[3], 1.5f);
  EXPECT_EQ(s.weight_names(), (std::vector<std::string>{"w", "b"}));
}

TEST(OnnxImport, ShapeArithmeticIsFoldedAtImport) {
  // Reshape(x, Concat(Gather(Shape(x), 0), [-1])): the target shape is computed in the graph.
  OnnxBuilder ob;
  std::string x = ob.AddInput("x", {DType::kF32, {4, 2, 3}});
  std::string batch = ob.Op("Gather", {ob.Op("Shape", {x}), ob.Ints({0})}, {{"axis", int64_t{0}}});
  std::string shape = ob.Op("Concat", {batch, ob.Ints({-1})}, {{"axis", int64_t{0}}});
  ob.AddOutput(ob.Op("Reshape", {x, shape}));
  OnnxImport imp = ImportOnnx(ob.Build());
  ASSERT_EQ(imp.graph->outputs().size(), 1u);
  EXPECT_EQ(imp.graph->outputs()[0]->type().shape, (Shape{4, 6}));
  for (const auto& node : imp.graph->nodes())
    if (node->op() == "reshape") EXPECT_EQ(node->input(0)->kind(), ValueKind::kInput);
}

TEST(OnnxImport, EveryUnsupportedOpIsListed) {
  OnnxBuilder ob;
  std::string x = ob.AddInput("x", {DType::kF32, {4}});
  std::string a = ob.Op("Unique", {x});
  ob.AddOutput(ob.Op("NotAnOnnxOp", {a}));
  std::string msg;
  EXPECT_EQ(KindOf([&] { ImportOnnx(ob.Build()); }, &msg), ErrorKind::kUnsupported);
  EXPECT_NE(msg.find("2 ONNX node(s)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'Unique_0' (Unique)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'NotAnOnnxOp_1' (NotAnOnnxOp)"), std::string::npos) << msg;
}

TEST(OnnxImport, MalformedBytesAreParseErrors) {
  OnnxBuilder ob;
  std::string x = ob.AddInput("x", {DType::kF32, {4}});
  ob.AddOutput(ob.Op("Relu", {x}));
  std::string bytes = ob.Build().SerializeAsString();
  for (size_t cut : {size_t{1}, bytes.size() / 3, bytes.size() - 1}) {
    EXPECT_EQ(KindOf([&] { ImportOnnx(ParseOnnxModel(bytes.data(), cut)); }), ErrorKind::kParse)
        << "cut at " << cut;
  }
  const char junk[] = "\x0a\xff\xff\xff\xff\x0f";
  EXPECT_EQ(KindOf([&] { ParseOnnxModel(junk, sizeof(junk) - 1); }), ErrorKind::kParse);
}

TEST(OnnxImport, InitializerDataOfTheWrongSizeIsAParseError) {
  OnnxBuilder ob;
  std::string x = ob.AddInput("x", {DType::kF32, {2}});
  std::string w = ob.AddInitializer("w", Values({2}, {1, 2}));
  ob.AddOutput(ob.Op("Mul", {x, w}));
  onnx::ModelProto m = ob.Build();
  m.mutable_graph()->mutable_initializer(0)->add_dims(5);  // [2, 5] with 2 values' bytes
  std::string msg;
  EXPECT_EQ(KindOf([&] { ImportOnnx(m); }, &msg), ErrorKind::kParse);
  EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;
}

TEST(OnnxImport, StatedTypesAreChecked) {
  OnnxBuilder ob;
  std::string x = ob.AddInput("x", {DType::kF32, {2, 3}});
  std::string y = ob.Op("Transpose", {x});
  ob.AddOutput(y);
  onnx::ModelProto m = ob.Build();
  auto* out = m.mutable_graph()->mutable_output(0);
  auto* tt = out->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  tt->mutable_shape()->add_dim()->set_dim_value(2);  // wrong: the transpose is [3, 2]
  tt->mutable_shape()->add_dim()->set_dim_value(3);
  std::string msg;
  EXPECT_EQ(KindOf([&] { ImportOnnx(m); }, &msg), ErrorKind::kShape);
  EXPECT_NE(msg.find("f32[2,3]"), std::string::npos) << msg;
}

TEST(OnnxTraining, OneSgdStepByHand) {
  // loss = sum(x * w); d loss / d w = x; w' = w - lr * x.
  OnnxBuilder ob;
  std::string x = ob.AddInput("x", {DType::kF32, {3}});
  std::string w = ob.AddInitializer("w", Values({3}, {1, 2, 3}));
  std::string loss = ob.Op("ReduceSum", {ob.Op("Mul", {x, w})}, {{"keepdims", int64_t{0}}});
  ob.AddOutput(loss);
  DataFlow flow;
  flow.mode = OutputMode::kFinal;
  TrainingSession s(ob.Build(), loss, Sgd(0.5), flow);
  HostTensor in = Values({1, 3}, {1, -2, 4});
  HostTensor l = s.Run({{in.data(), in.type()}}).at(0);
  EXPECT_FLOAT_EQ(l.as<float>()[0], 1 - 4 + 12);
  HostTensor w1 = s.ReadWeight("w");
  EXPECT_FLOAT_EQ(w1.as<float>()[0], 0.5f);
  EXPECT_FLOAT_EQ(w1.as<float>()[1], 3.0f);
  EXPECT_FLOAT_EQ(w1.as<float>()[2], 1.0f);
  // The saved model carries the trained weight.
  onnx::ModelProto saved = s.ModelWithWeights();
  HostTensor stored = TensorFromProto(saved.graph().initializer(0));
  EXPECT_FLOAT_EQ(stored.as<float>()[1], 3.0f);
  EXPECT_EQ(KindOf([&] { TrainingSession(ob.Build(), "x", Sgd(0.1)); }), ErrorKind::kInvalidInput);
}

TEST(OnnxTraining, MixedPrecisionAndAutomaticLossScalingFromCpp) {
  // loss = sum(x @ W) with the matmul in bf16 (SessionOptions::mixed_precision): it reads
  // bf16-rounded x and W, its result is rounded to bf16; W stays an f32 master weight and its
  // gradient (x in bf16, through the casts) updates it in f32. Automatic loss scaling on.
  OnnxBuilder ob;
  std::string x = ob.AddInput("x", {DType::kF32, {1, 3}});
  std::vector<double> w0 = {1.001, 0.5, 2.0, 1.001, 3.0, -1.0};
  std::string w = ob.AddInitializer("w", Values({3, 2}, w0));
  std::string loss = ob.Op("ReduceSum", {ob.Op("MatMul", {x, w})}, {{"keepdims", int64_t{0}}});
  ob.AddOutput(loss);
  SessionOptions options;
  // bf16 matmul / conv / attention, whatever their size (this graph is small)
  options.mixed_precision = MixedPrecisionPolicy{.min_rows = 0, .min_depth = 0};
  OptimizerSpec sgd = Sgd(0.5);
  sgd.config.automatic_loss_scaling = true;
  DataFlow flow;
  flow.mode = OutputMode::kFinal;
  TrainingSession s(ob.Build(), loss, sgd, flow, options);
  std::vector<double> xv = {1.001, 2.003, -0.5};
  HostTensor in = Values({1, 1, 3}, xv);
  float got = s.Run({{in.data(), in.type()}}).at(0).as<float>()[0];
  auto bf = [](double v) { return static_cast<double>(BFloat16ToFloat(FloatToBFloat16(v))); };
  double want = 0;
  for (int j = 0; j < 2; ++j) {
    float dot = 0;
    for (int i = 0; i < 3; ++i) dot += static_cast<float>(bf(xv[i]) * bf(w0[i * 2 + j]));
    want += bf(dot);
  }
  EXPECT_FLOAT_EQ(got, static_cast<float>(want));
  HostTensor w1 = s.ReadWeight("w");
  EXPECT_EQ(w1.type().dtype, DType::kF32);  // the master weight
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 2; ++j) {
      EXPECT_FLOAT_EQ(w1.as<float>()[i * 2 + j], static_cast<float>(w0[i * 2 + j]) -
                                                     0.5f * static_cast<float>(bf(xv[i])));
    }
  }
}

}  // namespace
}  // namespace tg
