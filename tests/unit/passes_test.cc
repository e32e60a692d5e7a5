// Pass tests as before/after IR text: parse a small graph, run one pass (with the verifier
// after it), compare the printed result. Real registered ops for the common cases; a local
// registry with made-up ops for traits (random, side effects) and edge cases.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>

#include <sstream>

#include "ir/printer.h"
#include "passes/passes.h"
#include "passes/verifier.h"
#include "support/error.h"

namespace tg {
namespace {

// Ops with the traits the passes care about; kernels copy input 0 (or fill f32 with 7).
const OpRegistry& TraitRegistry() {
  static OpRegistry* r = [] {
    auto* reg = new OpRegistry();
    auto copy = [](const Node& n) {
      size_t bytes = n.outputs().empty() ? 0 : n.output()->type().bytes();
      bool has_input = !n.inputs().empty() && n.input(0)->type().bytes() == bytes;
      return Kernel([=](const KernelArgs& a) {
        if (bytes == 0) return;
        if (has_input) {
          std::memcpy(a.outputs[0], a.inputs[0], bytes);
        } else {
          for (size_t i = 0; i < bytes / 4; ++i) static_cast<float*>(a.outputs[0])[i] = 7.0f;
        }
      });
    };
    auto same = [](const InferContext& c) { return std::vector<TensorType>{c.in(0)}; };
    auto from_shape = [](const InferContext& c) {
      return std::vector<TensorType>{{DType::kF32, GetInts(c.attrs, "shape")}};
    };
    auto add = [&](std::string name, int inputs, int outputs, std::vector<AttrSpec> attrs,
                   InferFn infer, OpTraits traits) {
      OpDef d;
      d.name = std::move(name);
      d.num_inputs = inputs;
      d.num_outputs = outputs;
      d.attrs = std::move(attrs);
      d.infer = std::move(infer);
      d.traits = traits;
      d.not_differentiable = true;
      d.kernels[DeviceKind::kCpu] = d.kernels[DeviceKind::kReference] = copy;
      reg->Register(std::move(d));
    };
    add("plain", 1, 1, {}, same, {});
    add("rand", 0, 1, {{"shape", std::nullopt}}, from_shape, {.random = true});
    add("print", 1, 0, {}, [](const InferContext&) { return std::vector<TensorType>{}; },
        {.side_effects = true});
    add("wrap", 1, 1, {{"body", std::nullopt}}, same, {});
    add("grow", 1, 1, {{"shape", std::nullopt}}, from_shape, {});
    return reg;
  }();
  return *r;
}

// Parses `before`, runs the named passes with the verifier after each, returns the IR text.
std::string RunPasses(const std::string& before, const std::vector<std::string>& passes,
                const OpRegistry& registry = OpRegistry::Global(),
                std::vector<std::string>* log = nullptr) {
  auto g = ParseGraph(before);
  PassManager pm;
  for (const std::string& p : passes) pm.Add(CreatePass(p), "test");
  PassContext ctx;
  ctx.registry = &registry;
  ctx.verify_each = true;
  pm.Run(*g, ctx);
  if (log != nullptr) *log = ctx.log;
  return PrintGraph(*g);
}

// ---- dce ---------------------------------------------------------------------------------

TEST(Dce, RemovesDeadChainsAndUnusedConstants) {
  std::vector<std::string> log;
  EXPECT_EQ(RunPasses(R"(graph g {
  input %x : f32[2]
  variable %w : f32[2]
  const %c : f32[2] = [1.0, 2.0]
  const %unused : f32[] = 3.0
  %a = add(%x, %c) : f32[2]
  %dead1 = neg(%a) : f32[2]
  %dead2 = exp(%dead1) : f32[2]
  %b = mul(%a, %a) : f32[2]
  %w_new = add(%w, %x) : f32[2]
  %dead3 = mul(%w_new, %c) : f32[2]
  output %b
  update %w = %w_new
}
)",
                {"dce"}, OpRegistry::Global(), &log),
            R"(graph g {
  input %x : f32[2]
  variable %w : f32[2]
  const %c : f32[2] = [1.0, 2.0]
  %a = add(%x, %c) : f32[2]
  %b = mul(%a, %a) : f32[2]
  %w_new = add(%w, %x) : f32[2]
  output %b
  update %w = %w_new
}
)");
  EXPECT_EQ(log, std::vector<std::string>{"dce: changed"});
}

TEST(Dce, UnchangedWhenEverythingIsUsed) {
  const std::string text = R"(graph g {
  input %x : f32[2]
  %a = neg(%x) : f32[2]
  output %a
}
)";
  std::vector<std::string> log;
  EXPECT_EQ(RunPasses(text, {"dce"}, OpRegistry::Global(), &log), text);
  EXPECT_EQ(log, std::vector<std::string>{"dce: unchanged"});
}

TEST(Dce, KeepsSideEffectsButNotRandomOps) {
  EXPECT_EQ(RunPasses(R"(graph g {
  input %x : f32[2]
  %r = rand() {shape = [2]} : f32[2]
  %p = plain(%x) : f32[2]
  () = print(%p)
  %q = plain(%r) : f32[2]
}
)",
                {"dce"}, TraitRegistry()),
            R"(graph g {
  input %x : f32[2]
  %p = plain(%x) : f32[2]
  () = print(%p)
}
)");
}

TEST(Dce, KeepsUnregisteredOps) {
  // Without an OpDef the pass cannot know the op is free of side effects.
  auto g = ParseGraph("graph g { input %x : f32[2] %a = mystery(%x) : f32[2] }");
  PassContext ctx;
  EXPECT_FALSE(CreatePass("dce")->Run(*g, ctx));
  EXPECT_EQ(g->nodes().size(), 1u);
}

// ---- cse ---------------------------------------------------------------------------------

TEST(Cse, MergesEqualNodesTransitively) {
  EXPECT_EQ(RunPasses(R"(graph g {
  input %x : f32[2]
  input %y : f32[2]
  %a = add(%x, %y) : f32[2]
  %b = add(%x, %y) : f32[2]
  %swapped = add(%y, %x) : f32[2]
  %na = neg(%a) : f32[2]
  %nb = neg(%b) : f32[2] loc("other.py:2")
  %staged = neg(%a) : f32[2] @1
  %f1 = full() {dtype = f32, shape = [2], value = 1.0} : f32[2]
  %f2 = full() {dtype = f32, shape = [2], value = 1.0} : f32[2]
  %f3 = full() {dtype = f32, shape = [2], value = 2.0} : f32[2]
  %s = mul(%na, %nb) : f32[2]
  output %s
  output %b
  output %swapped
  output %staged
  output %f2
  output %f3
}
)",
                {"cse"}),
            R"(graph g {
  input %x : f32[2]
  input %y : f32[2]
  %a = add(%x, %y) : f32[2]
  %swapped = add(%y, %x) : f32[2]
  %na = neg(%a) : f32[2]
  %staged = neg(%a) : f32[2] @1
  %f1 = full() {dtype = f32, shape = [2], value = 1.0} : f32[2]
  %f3 = full() {dtype = f32, shape = [2], value = 2.0} : f32[2]
  %s = mul(%na, %na) : f32[2]
  output %s
  output %a
  output %swapped
  output %staged
  output %f1
  output %f3
}
)");
}

TEST(Cse, NeverMergesRandomOrSideEffectOps) {
  const std::string text = R"(graph g {
  input %x : f32[2]
  %r1 = rand() {shape = [2]} : f32[2]
  %r2 = rand() {shape = [2]} : f32[2]
  () = print(%x)
  () = print(%x)
  output %r1
  output %r2
}
)";
  std::vector<std::string> log;
  EXPECT_EQ(RunPasses(text, {"cse"}, TraitRegistry(), &log), text);
  EXPECT_EQ(log, std::vector<std::string>{"cse: unchanged"});
}

TEST(Cse, NestedGraphsCompareByText) {
  EXPECT_EQ(RunPasses(R"(graph g {
  input %x : f32[2]
  %a = wrap(%x) {body = graph b {
    input %p : f32[2]
    output %p
  }} : f32[2]
  %b = wrap(%x) {body = graph b {
    input %p : f32[2]
    output %p
  }} : f32[2]
  %c = wrap(%x) {body = graph b {
    input %q : f32[2]
    output %q
  }} : f32[2]
  output %a
  output %b
  output %c
}
)",
                {"cse"}, TraitRegistry()),
            R"(graph g {
  input %x : f32[2]
  %a = wrap(%x) {body = graph b {
    input %p : f32[2]
    output %p
  }} : f32[2]
  %c = wrap(%x) {body = graph b {
    input %q : f32[2]
    output %q
  }} : f32[2]
  output %a
  output %a
  output %c
}
)");
}

// ---- constant-fold -----------------------------------------------------------------------

TEST(ConstantFold, FoldsConstantChainsAndSmallFills) {
  EXPECT_EQ(RunPasses(R"(graph g {
  input %x : f32[2]
  const %c : f32[2] = [1.0, 2.0]
  const %d : f32[2] = [0.5, -1.0]
  %s = add(%c, %d) : f32[2]
  %n = neg(%s) : f32[2]
  %y = mul(%x, %n) : f32[2]
  %big = full() {dtype = f32, shape = [2048], value = 1.0} : f32[2048]
  %small = full() {dtype = f32, shape = [2], value = 3.0} : f32[2]
  %z = add(%y, %small) : f32[2]
  output %z
  output %n
  output %big
}
)",
                {"constant-fold"}),
            R"(graph g {
  input %x : f32[2]
  const %n : f32[2] = [-1.5, -1.0]
  const %small : f32[2] = [3.0, 3.0]
  %y = mul(%x, %n) : f32[2]
  %big = full() {dtype = f32, shape = [2048], value = 1.0} : f32[2048]
  %z = add(%y, %small) : f32[2]
  output %z
  output %n
  output %big
}
)");
}

TEST(ConstantFold, SkipsRandomSideEffectsHugeAndUnknownOps) {
  const std::string text = R"(graph g {
  const %c : f32[1] = [1.0]
  %r = rand() {shape = [2]} : f32[2]
  () = print(%c)
  %huge = grow(%c) {shape = [1048577]} : f32[1048577]
  output %r
  output %huge
}
)";
  std::vector<std::string> log;
  EXPECT_EQ(RunPasses(text, {"constant-fold"}, TraitRegistry(), &log), text);
  EXPECT_EQ(log, std::vector<std::string>{"constant-fold: unchanged"});
  auto g = ParseGraph("graph g { const %c : f32[] = 1.0 %a = mystery(%c) : f32[] output %a }");
  PassContext ctx;
  EXPECT_FALSE(CreatePass("constant-fold")->Run(*g, ctx));
}

TEST(ConstantFold, UsesTheContextRegistry) {
  EXPECT_EQ(RunPasses(R"(graph g {
  const %c : f32[2] = [1.0, 2.0]
  %p = plain(%c) : f32[2]
  %g = grow(%p) {shape = [1]} : f32[1]
  output %p
  output %g
}
)",
                {"constant-fold"}, TraitRegistry()),
            R"(graph g {
  const %p : f32[2] = [1.0, 2.0]
  const %g : f32[1] = [7.0]
  output %p
  output %g
}
)");
}

// ---- pass manager and pipelines ----------------------------------------------------------

// A pass that breaks the graph: gives its first node a wrong output type.
class BreakerPass : public Pass {
 public:
  std::string name() const override { return "breaker"; }
  bool Run(Graph& graph, PassContext&) override {
    graph.nodes()[0]->output()->set_type({DType::kF64, {2}});
    return true;
  }
};

const char* kSmall = R"(graph g {
  input %x : f32[2]
  %a = neg(%x) : f32[2]
  %b = neg(%x) : f32[2]
  %c = add(%a, %b) : f32[2]
  output %c
}
)";

TEST(PassManager, VerifierCatchesABrokenPass) {
  auto g = ParseGraph(kSmall);
  PassManager pm;
  pm.Add(CreatePass("cse"), "test");
  pm.Add(std::make_unique<BreakerPass>(), "deliberately broken");
  pm.Add(CreatePass("dce"), "test");
  PassContext ctx;
  ctx.verify_each = true;
  try {
    pm.Run(*g, ctx);
    FAIL() << "the broken pass went unnoticed";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInternal);
    std::string what = e.what();
    EXPECT_NE(what.find("differ from the inferred"), std::string::npos) << what;
    EXPECT_NE(what.find("after pass breaker"), std::string::npos) << what;
  }
  EXPECT_EQ(ctx.log, (std::vector<std::string>{"cse: changed", "breaker: changed"}));
  // Without verify_each the broken graph goes through.
  auto g2 = ParseGraph(kSmall);
  PassContext quiet;
  EXPECT_NO_THROW(pm.Run(*g2, quiet));
}

TEST(PassManager, InvalidInputIsReportedBeforeAnyPass) {
  auto g = ParseGraph("graph g { input %x : f32[2] %a = neg(%x) : f64[2] output %a }");
  PassManager pm;
  pm.Add(CreatePass("dce"), "test");
  PassContext ctx;
  ctx.verify_each = true;
  try {
    pm.Run(*g, ctx);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("before the first pass"), std::string::npos);
  }
}

TEST(PassManager, DumpsAfterNamedPassOrAll) {
  PassManager pm;
  pm.Add(CreatePass("cse"), "test");
  pm.Add(CreatePass("dce"), "test");
  EXPECT_EQ(pm.PassNames(), (std::vector<std::string>{"cse", "dce"}));
  auto g = ParseGraph(kSmall);
  std::ostringstream dump;
  PassContext ctx;
  ctx.dump = &dump;
  ctx.dump_after = "cse";
  EXPECT_TRUE(pm.Run(*g, ctx));
  const std::string header = "// IR after pass cse (changed)\n";
  ASSERT_EQ(dump.str().rfind(header, 0), 0u) << dump.str();
  EXPECT_EQ(PrintGraph(*ParseGraph(dump.str())), dump.str().substr(header.size()));
  EXPECT_EQ(ctx.log, (std::vector<std::string>{"cse: changed", "dce: unchanged"}));

  std::ostringstream all;
  PassContext ctx2;
  ctx2.dump = &all;
  ctx2.dump_after = "*";
  pm.Run(*ParseGraph(kSmall), ctx2);
  EXPECT_NE(all.str().find("// IR after pass cse (changed)"), std::string::npos);
  EXPECT_NE(all.str().find("// IR after pass dce (unchanged)"), std::string::npos);
}

TEST(PassManager, ErrorsInsideAPassNameThePass) {
  class Throwing : public Pass {
   public:
    std::string name() const override { return "thrower"; }
    bool Run(Graph&, PassContext&) override { Fail(ErrorKind::kUnsupported, "nope"); }
  };
  PassManager pm;
  pm.Add(std::make_unique<Throwing>(), "test");
  PassContext ctx;
  try {
    pm.Run(*ParseGraph(kSmall), ctx);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("in pass thrower"), std::string::npos);
  }
}

TEST(Pipelines, CreatePassByNameAndUnknownNames) {
  for (const char* name : {"dce", "cse", "constant-fold", "fold-transpose", "hoist-scalars",
                           "fuse-elementwise", "fuse-matmul-epilogue", "fuse-conv-epilogue",
                           "block-conv-layout", "recompute", "fold-exact-casts",
                           "schedule-updates", "narrow-half-dense", "fuse-norm-activation",
                           "half-weight-shadows", "fold-norm-casts", "remat-elementwise",
                           "move-casts", "stream-update-stores", "widen-half-dense"}) {
    EXPECT_EQ(CreatePass(name)->name(), name);
  }
  try {
    CreatePass("dse");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    EXPECT_NE(e.message().find("unknown pass 'dse'"), std::string::npos);
    EXPECT_NE(e.message().find("block-conv-layout, constant-fold, cse, dce, fold-exact-casts, "
                               "fold-norm-casts, fold-transpose, "
                               "fuse-conv-epilogue, "
                               "fuse-elementwise, fuse-matmul-epilogue, fuse-norm-activation, "
                               "half-weight-shadows, hoist-scalars, move-casts, "
                               "narrow-half-dense, recompute, remat-elementwise, "
                               "schedule-updates, stream-update-stores, widen-half-dense"),
              std::string::npos)
        << e.message();
  }
}

TEST(Pipelines, BothPipelinesRunAndVerify) {
  for (PipelineKind kind : {PipelineKind::kInference, PipelineKind::kTraining}) {
    PassManager pm = BuildPipeline(kind);
    std::vector<std::string> names = pm.PassNames();
    ASSERT_FALSE(names.empty());
    EXPECT_EQ(names.back(), "dce");
    auto g = ParseGraph(R"(graph g {
  input %x : f32[2]
  const %c : f32[2] = [1.0, 2.0]
  %k = neg(%c) : f32[2]
  %a = mul(%x, %k) : f32[2]
  %b = mul(%x, %k) : f32[2]
  %dead = exp(%x) : f32[2]
  %s = add(%a, %b) : f32[2]
  output %s
}
)");
    PassContext ctx;
    ctx.verify_each = true;
    pm.Run(*g, ctx);
    EXPECT_EQ(ctx.log.size(), names.size());
    std::string text = PrintGraph(*g);
    EXPECT_NE(text.find("const %k : f32[2] = [-1.0, -2.0]"), std::string::npos) << text;
    EXPECT_EQ(text.find("%b ="), std::string::npos) << text;
    EXPECT_EQ(text.find("exp("), std::string::npos) << text;
  }
}

TEST(Pipelines, PassesNamedInTheEnvironmentAreSkipped) {
  const char* text = R"(graph g {
  input %x : f32[4]
  %a = exp(%x) : f32[4]
  %b = neg(%a) : f32[4]
  output %b
}
)";
  PassManager pm = BuildPipeline(PipelineKind::kInference);
  setenv("TILEGRAPH_DISABLE_PASSES", "fuse-elementwise,cse", 1);
  auto g = ParseGraph(text);
  PassContext ctx;
  pm.Run(*g, ctx);
  EXPECT_EQ(PrintGraph(*g).find("fused_elementwise"), std::string::npos);
  EXPECT_NE(std::find(ctx.log.begin(), ctx.log.end(), "fuse-elementwise: disabled"),
            ctx.log.end());
  setenv("TILEGRAPH_DISABLE_PASSES", "fuse-elementwse", 1);  // a typo is an error
  try {
    pm.Run(*ParseGraph(text), ctx);
    ADD_FAILURE() << "expected an error for an unknown pass";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    EXPECT_NE(std::string(e.what()).find("TILEGRAPH_DISABLE_PASSES"), std::string::npos) << e.what();
  }
  unsetenv("TILEGRAPH_DISABLE_PASSES");
  auto fused = ParseGraph(text);
  PassContext again;
  pm.Run(*fused, again);
  EXPECT_NE(PrintGraph(*fused).find("fused_elementwise"), std::string::npos);
}

}  // namespace
}  // namespace tg
