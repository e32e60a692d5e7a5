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

// x [1, 8, 4, 4] -> conv2d 1x1 with the variable w [8, 8, 1, 1]; w + 1 each step when
// `updating`. oneDNN runs it in a blocked layout, so the kernel holds a reordered copy of w.
std::unique_ptr<Executable> Conv1x1(bool updating) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {1, 8, 4, 4}});
  Value* w = g.AddVariable("w", {DType::kF32, {8, 8, 1, 1}});
  g.AddOutput(b.Op1("conv2d", {x, w}));
  if (updating) {
    HostTensor one({DType::kF32, {}});
    one.as<float>()[0] = 1;
    g.SetUpdate(w, b.Add(w, g.AddConstant(one)));
  }
  return Executable::Compile(g, {});
}

HostTensor Filled(TensorType t, float scale) {
  HostTensor h(t);
  for (int64_t i = 0; i < t.numel(); ++i) h.as<float>()[i] = scale * static_cast<float>(i % 7 - 3);
  return h;
}

// y[o, p] = sum_c w[o, c] x[c, p] for the 1x1 convolution.
float Expected(const HostTensor& x, const HostTensor& w, int64_t o, int64_t p) {
  double sum = 0;
  for (int64_t c = 0; c < 8; ++c) sum += w.as<float>()[o * 8 + c] * x.as<float>()[c * 16 + p];
  return static_cast<float>(sum);
}

// The prepacked (reordered once) weight must follow every change of the variable: writes
// from the host between calls, and the program's own updates between steps.
TEST(Executable, PrepackedConvWeightFollowsWrites) {
  HostTensor x = Filled({DType::kF32, {1, 1, 8, 4, 4}}, 0.5f);  // one step
  TensorView xv{x.data(), x.type()};
  HostTensor x1 = Filled({DType::kF32, {1, 8, 4, 4}}, 0.5f);
  auto exe = Conv1x1(false);
  for (float scale : {1.0f, -2.0f}) {
    HostTensor w = Filled({DType::kF32, {8, 8, 1, 1}}, scale);
    exe->WriteVariable("w", {w.data(), w.type()});
    for (int call = 0; call < 2; ++call) {
      HostTensor y = exe->Run({xv}, 1)[0];
      for (int64_t o = 0; o < 8; ++o) {
        for (int64_t p = 0; p < 16; ++p) {
          ASSERT_FLOAT_EQ(y.as<float>()[o * 16 + p], Expected(x1, w, o, p)) << scale;
        }
      }
    }
  }
}

TEST(Executable, PrepackedConvWeightFollowsTheProgramsUpdates) {
  HostTensor x1 = Filled({DType::kF32, {1, 8, 4, 4}}, 0.5f);
  HostTensor x({DType::kF32, {3, 1, 8, 4, 4}});  // the same input in each of 3 steps
  for (int64_t i = 0; i < 3 * 128; ++i) x.as<float>()[i] = x1.as<float>()[i % 128];
  auto exe = Conv1x1(true);
  HostTensor w = Filled({DType::kF32, {8, 8, 1, 1}}, 1.0f);
  exe->WriteVariable("w", {w.data(), w.type()});
  HostTensor y = exe->Run({{x.data(), x.type()}}, 3, OutputMode::kAll)[0];
  for (int64_t step = 0; step < 3; ++step) {
    for (int64_t o = 0; o < 8; ++o) {
      ASSERT_FLOAT_EQ(y.as<float>()[step * 128 + o * 16 + 5], Expected(x1, w, o, 5)) << step;
    }
    for (int64_t i = 0; i < 64; ++i) w.as<float>()[i] += 1;  // the program's update
  }
}

}  // namespace
}  // namespace tg
