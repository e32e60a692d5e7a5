// The C++ Session API: steps per call, output modes, variables, hyperparameters (no
// recompilation), and call-time input checking that leaves the executable usable.
#include <gtest/gtest.h>

#include "ops/builder.h"
#include "runtime/executable.h"
#include "support/error.h"

namespace tg {
namespace {

// acc <- acc + x each step; outputs acc + x (the new value) and x * w.
std::unique_ptr<Executable> Accumulator(CompileOptions opts = {}) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {2}});
  Value* acc = g.AddVariable("acc", {DType::kF32, {2}}, false);
  Value* w = g.AddHyperParam("w", {DType::kF32, {}});
  Value* next = b.Add(acc, x);
  g.SetUpdate(acc, next);
  g.AddOutput(next);
  g.AddOutput(b.Mul(x, w));
  return Executable::Compile(g, opts);
}

HostTensor Steps(int64_t steps) {
  HostTensor t({DType::kF32, {steps, 2}});
  for (int64_t i = 0; i < steps * 2; ++i) t.as<float>()[i] = static_cast<float>(i + 1);
  return t;
}

TEST(Executable, OutputModes) {
  HostTensor in = Steps(4);  // rows (1,2) (3,4) (5,6) (7,8)
  TensorView view{in.data(), in.type()};
  {
    auto exe = Accumulator();
    exe->SetHyperParam("w", 2.0);
    auto out = exe->Run({view}, 4, OutputMode::kAll);
    ASSERT_EQ(out[0].type().shape, (Shape{4, 2}));
    EXPECT_FLOAT_EQ(out[0].as<float>()[6], 1 + 3 + 5 + 7);
    EXPECT_FLOAT_EQ(out[1].as<float>()[7], 16);
  }
  {
    auto exe = Accumulator();
    auto out = exe->Run({view}, 4, OutputMode::kFinal);
    ASSERT_EQ(out[0].type().shape, (Shape{2}));
    EXPECT_FLOAT_EQ(out[0].as<float>()[1], 2 + 4 + 6 + 8);
  }
  {
    auto exe = Accumulator();
    auto out = exe->Run({view}, 4, OutputMode::kSum);
    EXPECT_FLOAT_EQ(out[0].as<float>()[0], 1 + 4 + 9 + 16);  // 1, 1+3, 1+3+5, 1+3+5+7
  }
  {
    auto exe = Accumulator();
    auto out = exe->Run({view}, 4, OutputMode::kEveryN, 2);
    ASSERT_EQ(out[0].type().shape, (Shape{2, 2}));
    EXPECT_FLOAT_EQ(out[0].as<float>()[0], 1 + 3);
    EXPECT_FLOAT_EQ(out[0].as<float>()[2], 1 + 3 + 5 + 7);
  }
}

TEST(Executable, StatePersistsAcrossCallsAndCanBeWritten) {
  auto exe = Accumulator();
  HostTensor in = Steps(1);
  exe->Run({{in.data(), in.type()}}, 1);
  exe->Run({{in.data(), in.type()}}, 1);
  EXPECT_FLOAT_EQ(exe->ReadVariable("acc").as<float>()[1], 4);
  HostTensor zero({DType::kF32, {2}});
  exe->WriteVariable("acc", {zero.data(), zero.type()});
  EXPECT_FLOAT_EQ(exe->ReadVariable("acc").as<float>()[1], 0);
  EXPECT_EQ(exe->step(), 2u);
}

TEST(Executable, HyperParamChangesNeedNoRecompile) {
  auto exe = Accumulator();
  HostTensor in = Steps(1);
  exe->SetHyperParam("w", 3.0);
  EXPECT_FLOAT_EQ(exe->Run({{in.data(), in.type()}}, 1)[1].as<float>()[1], 6);
  exe->SetHyperParam("w", -1.0);
  EXPECT_FLOAT_EQ(exe->Run({{in.data(), in.type()}}, 1)[1].as<float>()[1], -2);
}

TEST(Executable, BadFeedsAreRejectedBeforeRunning) {
  auto exe = Accumulator();
  HostTensor bad_shape({DType::kF32, {4, 3}});
  try {
    exe->Run({{bad_shape.data(), bad_shape.type()}}, 4);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    EXPECT_NE(std::string(e.what()).find("expected shape [4,2]"), std::string::npos) << e.what();
  }
  HostTensor bad_dtype({DType::kF64, {4, 2}});
  EXPECT_THROW(exe->Run({{bad_dtype.data(), bad_dtype.type()}}, 4), Error);
  EXPECT_THROW(exe->Run({}, 4), Error);
  EXPECT_FLOAT_EQ(exe->ReadVariable("acc").as<float>()[0], 0) << "a rejected call ran a step";
  HostTensor good = Steps(4);
  auto out = exe->Run({{good.data(), good.type()}}, 4, OutputMode::kFinal);
  EXPECT_FLOAT_EQ(out[0].as<float>()[0], 16);
  EXPECT_THROW(exe->SetHyperParam("nope", 1.0), Error);
  EXPECT_THROW(exe->ReadVariable("nope"), Error);
}

}  // namespace
}  // namespace tg
