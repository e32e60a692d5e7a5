#include "fuzz/ir_fuzz_target.h"

#include "autodiff/optimizer.h"
#include "ir/printer.h"
#include "ops/builder.h"
#include "passes/verifier.h"
#include "runtime/executable.h"
#include "support/error.h"

namespace tg::fuzz {
namespace {

// Graphs whose values add up to more than this are parsed and verified but not compiled:
// the fuzzer looks for crashes, not for the machine's memory limit.
constexpr int64_t kMaxCompiledBytes = int64_t{256} << 20;
constexpr int64_t kMaxRunBytes = int64_t{16} << 20;

int64_t TotalValueBytes(const Graph& g) {
  int64_t total = 0;
  auto add = [&](const std::vector<Value*>& values) {
    for (Value* v : values) total += static_cast<int64_t>(v->type().bytes());
  };
  add(g.inputs());
  add(g.hyperparams());
  add(g.variables());
  for (const auto& n : g.nodes()) add(n->outputs());
  return total;
}

Value* FloatScalarOutput(const Graph& g) {
  for (Value* v : g.outputs()) {
    DType d = v->type().dtype;
    if (v->type().rank() == 0 && (d == DType::kF32 || d == DType::kF64)) return v;
  }
  return nullptr;
}

std::vector<Value*> TrainableVariables(const Graph& g) {
  std::vector<Value*> out;
  for (Value* v : g.variables()) {
    DType d = v->type().dtype;
    if (v->trainable() && (d == DType::kF32 || d == DType::kF64)) out.push_back(v);
  }
  return out;
}

}  // namespace

Outcome RunIrText(std::string_view text) {
  Outcome o;
  try {
    o.stage = "parse";
    std::unique_ptr<Graph> g = ParseGraph(text);
    o.stage = "verify";
    Verify(*g, &OpRegistry::Global());
    if (TotalValueBytes(*g) > kMaxCompiledBytes) {
      o.stage = "done (too large to compile)";
      o.ok = true;
      return o;
    }
    bool training = !g->updates().empty();
    Value* loss = FloatScalarOutput(*g);
    std::vector<Value*> params = TrainableVariables(*g);
    if (loss != nullptr && !params.empty() && g->updates().empty()) {
      o.stage = "autodiff";
      Builder b(*g);
      ParamGroup group;
      group.params = params;
      OptimizerConfig config;
      config.use_momentum = true;
      AddTrainingStep(b, loss, {group}, config);
      training = true;
    }
    o.stage = "compile";
    CompileOptions options;
    options.pipeline = training ? PipelineKind::kTraining : PipelineKind::kInference;
    options.verify_each = true;
    std::unique_ptr<Executable> exe = Executable::Compile(*g, options);
    int64_t run_bytes = static_cast<int64_t>(exe->memory_stats().arena_bytes);
    for (Value* v : exe->inputs()) run_bytes += static_cast<int64_t>(v->type().bytes());
    if (run_bytes <= kMaxRunBytes) {
      o.stage = "run";
      std::vector<HostTensor> feeds;
      std::vector<TensorView> views;
      for (Value* v : exe->inputs()) {
        TensorType t = v->type();
        t.shape.insert(t.shape.begin(), 1);
        feeds.emplace_back(t);  // zeros: in range for every index and length input
      }
      for (HostTensor& f : feeds) views.push_back({f.data(), f.type()});
      exe->Run(views, 1);
    }
    o.stage = "done";
    o.ok = true;
  } catch (const Error& e) {
    o.error = e.what();
  }
  return o;
}

namespace {

std::string OneOpGraph(const OpDef& def, const OpSample& sample, bool as_constants) {
  Graph g(def.name);
  Builder b(g);
  std::vector<Value*> ins;
  for (size_t i = 0; i < sample.inputs.size(); ++i) {
    const TensorType& t = sample.inputs[i];
    ins.push_back(as_constants ? g.AddConstant(HostTensor(t), "c" + std::to_string(i))
                               : g.AddInput("x" + std::to_string(i), t));
  }
  for (Value* out : b.Op(def.name, ins, sample.attrs)) g.AddOutput(out);
  return PrintGraph(g);
}

// An MLP (matmul, add, relu, log_softmax, nll_loss) or a conv net (conv2d, relu, mean)
// with its training step; the optimized program's IR (fused kernels, nested graphs) too.
std::vector<std::string> TrainingGraphs() {
  std::vector<std::string> out;
  for (int conv = 0; conv < 2; ++conv) {
    Graph g(conv ? "convnet" : "mlp");
    Builder b(g);
    Value* loss = nullptr;
    std::vector<Value*> params;
    if (conv) {
      Value* x = g.AddInput("x", {DType::kF32, {2, 3, 6, 6}});
      Value* w = g.AddVariable("w", {DType::kF32, {4, 3, 3, 3}}, true);
      Value* h = b.Op1("relu", {b.Op1("conv2d", {x, w}, {{"padding", std::vector<int64_t>{1, 1}}})});
      loss = b.Op1("mean", {h});
      params = {w};
    } else {
      Value* x = g.AddInput("x", {DType::kF32, {4, 8}});
      Value* y = g.AddInput("y", {DType::kI64, {4}});
      Value* w1 = g.AddVariable("w1", {DType::kF32, {8, 16}}, true);
      Value* b1 = g.AddVariable("b1", {DType::kF32, {16}}, true);
      Value* w2 = g.AddVariable("w2", {DType::kF32, {16, 3}}, true);
      Value* h = b.Op1("relu", {b.Add(b.Op1("matmul", {x, w1}), b1)});
      Value* logp = b.Op1("log_softmax", {b.Op1("matmul", {h, w2})});
      loss = b.Op1("nll_loss", {logp, y});
      params = {w1, b1, w2};
    }
    g.AddOutput(loss);
    out.push_back(PrintGraph(g));
    ParamGroup group;
    group.params = params;
    OptimizerConfig config;
    config.kind = conv ? OptimizerKind::kAdam : OptimizerKind::kSGD;
    config.use_momentum = !conv;
    AddTrainingStep(b, loss, {group}, config);
    out.push_back(PrintGraph(g));
    CompileOptions options;
    out.push_back(PrintGraph(Executable::Compile(g, options)->optimized_graph()));
  }
  return out;
}

}  // namespace

std::vector<std::string> SeedCorpus() {
  std::vector<std::string> seeds = TrainingGraphs();
  for (const OpDef* def : OpRegistry::Global().All()) {
    for (const OpSample& sample : def->samples) {
      for (bool constants : {false, true}) {
        try {
          seeds.push_back(OneOpGraph(*def, sample, constants));
        } catch (const Error&) {
          // A sample whose attributes need inputs of a kind the zero constants lack: skip.
        }
      }
    }
  }
  return seeds;
}

}  // namespace tg::fuzz
