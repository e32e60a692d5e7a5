// The device seam: devices (devices/device.h), kernel selection by the kind of the device a
// node is placed on, and whole programs giving the same numbers on every device kind.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>

#include "autodiff/optimizer.h"
#include "devices/device.h"
#include "ops/builder.h"
#include "runtime/executable.h"
#include "support/error.h"

namespace tg {
namespace {

TEST(Device, CpuAndReferenceDevicesDescribeThemselvesAndAllocate) {
  for (DeviceKind kind : {DeviceKind::kCpu, DeviceKind::kReference}) {
    std::unique_ptr<Device> d = CreateDevice(kind, DeviceOptions{1});
    EXPECT_EQ(d->kind(), kind);
    EXPECT_EQ(d->threads(), 1);
    EXPECT_NE(d->name().find(DeviceKindName(kind)), std::string::npos);
    DeviceMemory m = d->Allocate(1000);
    ASSERT_NE(m.data(), nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(m.data()) % 64, 0u);
    for (size_t i = 0; i < 1000; ++i) ASSERT_EQ(static_cast<uint8_t*>(m.data())[i], 0);
  }
  std::unique_ptr<Device> cpu = CreateDevice(DeviceKind::kCpu);
  EXPECT_GT(cpu->memory_bytes(), 0u);
  EXPECT_THROW(cpu->Allocate(cpu->memory_bytes() + 1), Error);
}

// An MLP training step (matmul, add, relu, log_softmax, nll_loss, SGD with momentum).
std::unique_ptr<Graph> MlpStep() {
  auto g = std::make_unique<Graph>("mlp");
  Builder b(*g);
  Value* x = g->AddInput("x", {DType::kF32, {4, 6}});
  Value* y = g->AddInput("y", {DType::kI64, {4}});
  Value* w1 = g->AddVariable("w1", {DType::kF32, {6, 8}});
  Value* w2 = g->AddVariable("w2", {DType::kF32, {8, 3}});
  Value* h = b.Op1("relu", {b.Op1("matmul", {x, w1})});
  Value* loss = b.Op1("nll_loss", {b.Op1("log_softmax", {b.Op1("matmul", {h, w2})}), y});
  g->AddOutput(loss);
  ParamGroup group;
  group.params = {w1, w2};
  group.hyper.lr = 0.1;
  group.hyper.momentum = 0.9;
  OptimizerConfig config;
  config.use_momentum = true;
  AddTrainingStep(b, loss, {group}, config);
  return g;
}

TEST(Device, AWholeTrainingProgramGivesTheSameNumbersOnEveryDeviceKind) {
  std::unique_ptr<Graph> g = MlpStep();
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  HostTensor x({DType::kF32, {3, 4, 6}}), y({DType::kI64, {3, 4}});
  for (int64_t i = 0; i < x.type().numel(); ++i) x.as<float>()[i] = normal(rng);
  for (int64_t i = 0; i < y.type().numel(); ++i) y.as<int64_t>()[i] = static_cast<int64_t>(rng() % 3);
  std::map<std::string, HostTensor> weights;
  for (const char* name : {"w1", "w2"}) {
    const TensorType& t = g->FindValue(name)->type();
    HostTensor w(t);
    for (int64_t i = 0; i < t.numel(); ++i) w.as<float>()[i] = 0.3f * normal(rng);
    weights[name] = w;
  }
  std::vector<std::vector<HostTensor>> results;
  for (DeviceKind kind : {DeviceKind::kReference, DeviceKind::kCpu}) {
    CompileOptions options;
    options.device = kind;
    auto exe = Executable::Compile(*g, options);
    EXPECT_EQ(exe->device().kind(), kind);
    exe->SetHyperParam("group0.lr", 0.1);
    exe->SetHyperParam("group0.momentum", 0.9);
    for (auto& [name, w] : weights) exe->WriteVariable(name, {w.data(), w.type()});
    std::vector<HostTensor> r = exe->Run({{x.data(), x.type()}, {y.data(), y.type()}}, 3,
                                         OutputMode::kAll);
    r.push_back(exe->ReadVariable("w1"));
    r.push_back(exe->ReadVariable("w2"));
    results.push_back(std::move(r));
  }
  for (size_t k = 0; k < results[0].size(); ++k) {
    const HostTensor &ref = results[0][k], &cpu = results[1][k];
    ASSERT_EQ(ref.type(), cpu.type());
    for (int64_t i = 0; i < ref.type().numel(); ++i) {
      EXPECT_NEAR(cpu.GetAsDouble(i), ref.GetAsDouble(i), 1e-5 * (1 + std::abs(ref.GetAsDouble(i))))
          << "result " << k << " element " << i;
    }
  }
}

TEST(Device, ANodePlacedOnAMissingDeviceIsAnError) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {2}});
  b.set_placement(1);
  g.AddOutput(b.Op1("relu", {x}));
  EXPECT_NO_THROW(Executable::Compile(g, {}));  // stages = 0: as many as the placements use
  CompileOptions one_device;
  one_device.stages = 1;
  try {
    Executable::Compile(g, one_device);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("placed on device 1, the program has 1 device"),
              std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tg

namespace tg {
namespace {

// Model parallelism: a parameter's gradient, optimizer state update and new value are built
// on the device that uses the parameter (its gradient's producer), not on device 0.
TEST(Device, AParametersUpdateRunsOnItsDevice) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {4, 6}});
  Value* w0 = g.AddVariable("w0", {DType::kF32, {6, 6}});
  Value* w1 = g.AddVariable("w1", {DType::kF32, {6, 6}});
  Value* h = b.Op1("matmul", {x, w0});
  b.set_placement(1);
  Value* loss = b.Op1("mean", {b.Op1("matmul", {h, w1})});
  b.set_placement(0);
  g.AddOutput(loss);
  ParamGroup pg;
  pg.params = {w0, w1};
  OptimizerConfig config;
  config.use_momentum = true;
  config.accumulation_steps = 2;
  AddTrainingStep(b, loss, {pg}, config);
  for (const VariableUpdate& u : g.updates()) {
    const std::string& name = u.variable->name();
    int want = name.rfind("w1", 0) == 0 ? 1 : name.rfind("w0", 0) == 0 ? 0 : -1;
    if (want < 0) continue;  // the shared step counters
    ASSERT_NE(u.value->producer(), nullptr) << name;
    EXPECT_EQ(u.value->producer()->placement(), want) << name;
  }
}

}  // namespace
}  // namespace tg
