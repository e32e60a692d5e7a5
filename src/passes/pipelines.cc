// The declarative pipelines and the pass-by-name factory. A pipeline is a list of
// {pass, reason} entries: edit the lists below, not driver code, to change what runs.
#include <string>

#include "passes/passes.h"
#include "support/error.h"

namespace tg {
namespace {

struct PassInfo {
  const char* name;
  std::unique_ptr<Pass> (*create)();
};

// Every pass known by name, sorted.
constexpr PassInfo kPasses[] = {
    {"block-conv-layout", CreateBlockConvLayoutPass},
    {"constant-fold", CreateConstantFoldPass},
    {"cse", CreateCsePass},
    {"dce", CreateDcePass},
    {"fold-exact-casts", CreateFoldExactCastsPass},
    {"fold-norm-casts", CreateFoldNormCastsPass},
    {"fold-transpose", CreateFoldTransposePass},
    {"fuse-conv-epilogue", CreateFuseConvEpiloguePass},
    {"fuse-elementwise", CreateFuseElementwisePass},
    {"fuse-matmul-epilogue", CreateFuseMatmulEpiloguePass},
    {"fuse-norm-activation", CreateFuseNormActivationPass},
    {"half-weight-shadows", CreateHalfWeightShadowsPass},
    {"hoist-scalars", CreateHoistScalarsPass},
    {"move-casts", CreateMoveCastsPass},
    {"narrow-half-dense", CreateNarrowHalfDensePass},
    {"recompute", CreateRecomputePass},
    {"remat-elementwise", CreateRematElementwisePass},
    {"schedule-updates", CreateScheduleUpdatesPass},
    {"stream-update-stores", CreateStreamUpdateStoresPass},
    {"widen-half-dense", CreateWidenHalfDensePass},
};

struct PipelineEntry {
  const char* pass;
  const char* why;
};

constexpr PipelineEntry kInferencePipeline[] = {
    {"dce", "drop what the outputs do not need before spending time on it"},
    {"constant-fold", "weights are variables, so only true compile-time arithmetic folds"},
    {"fold-exact-casts", "half models are captured widened: round trips of values exact in "
                         "half (weight transposes, reshapes, relu) are the values themselves"},
    {"cse", "merge repeated subexpressions, e.g. shared casts and broadcasts from capture"},
    {"fold-transpose", "x @ w.t(): matmul reads the weight transposed instead of a copy"},
    {"dce", "remove nodes orphaned by folding and merging"},
    {"fuse-matmul-epilogue", "Linear layers: bias and activation in the matmul's output pass"},
    {"fuse-conv-epilogue", "conv -> bias -> batch norm -> activation in the conv's output pass"},
    {"fuse-norm-activation", "layer norm -> GELU / ReLU / SiLU: the activation on each row "
                             "while it is in cache"},
    {"narrow-half-dense", "a half model's matmuls / convolutions (and their gradients) on "
                          "casts up and rounded back: one half node, native bf16 kernels"},
    {"widen-half-dense", "half matmuls / convolutions the target has no native kernels for: "
                         "f32 ops between casts, so f32 layouts apply and the casts fuse"},
    {"dce", "remove the unfused matmul / conv / add / norm / activation"},
    {"move-casts", "mixed precision: reshapes / permutes move half values, round trips "
                   "through f32 go, casts meet the elementwise ops they fuse into"},
    {"block-conv-layout", "conv -> conv hand-offs stay in oneDNN's blocked layout"},
    {"fuse-elementwise", "one pass over memory for chains of elementwise ops"},
    {"dce", "remove anything fusion left unused"},
};

constexpr PipelineEntry kTrainingPipeline[] = {
    {"dce", "forward values the backward graph never reads are dead"},
    {"constant-fold", "fold scalar arithmetic the grad rules and optimizer emit"},
    {"fold-exact-casts", "half models are captured widened: round trips of values exact in "
                         "half (weight transposes, reshapes, relu) are the values themselves"},
    {"cse", "grad rules recompute forward pieces (casts, broadcasts, transposes): share them"},
    {"fold-transpose", "linear layers and their grad rules transpose weights and results"},
    {"dce", "remove nodes orphaned by folding and merging"},
    {"fuse-matmul-epilogue", "Linear layers: bias (and relu) in the matmul's output pass"},
    {"fuse-conv-epilogue", "frozen (eval-mode) batch norms; bias and activation where unread"},
    {"narrow-half-dense", "a half model's matmuls / convolutions (and their gradients) on "
                          "casts up and rounded back: one half node, native bf16 kernels"},
    {"widen-half-dense", "half matmuls / convolutions the target has no native kernels for: "
                         "f32 ops between casts, so f32 layouts apply and the casts fuse"},
    {"dce", "remove the unfused matmul / conv / add / norm / activation"},
    {"move-casts", "mixed precision: reshapes / permutes move half values, round trips "
                   "through f32 go, casts meet the elementwise ops they fuse into"},
    {"half-weight-shadows", "mixed precision: weights read in half get a half copy that the "
                            "optimizer's update writes, instead of a cast every step"},
    {"dce", "remove the casts the shadows replace"},
    {"recompute", "recompute activations between checkpoints in the backward (after CSE)"},
    {"hoist-scalars", "per-parameter hyperparameter casts would split the update chains"},
    {"schedule-updates", "each parameter's update right after its gradient: gradients die "
                         "early (the step's peak memory); before fusion, so that fusion does "
                         "not merge the updates of parameters whose gradients come far apart"},
    {"block-conv-layout", "convolution activations and their gradients stay in oneDNN's "
                          "blocked layout through batch norms, activations and adds"},
    {"fold-norm-casts", "mixed precision: batch norms read their half input and write their "
                        "half input gradient, instead of a widened and a rounded copy"},
    {"dce", "remove the casts batch norms no longer read"},
    {"remat-elementwise", "SiLU's sigmoid(x): recomputed in the backward's fused kernel from "
                          "the x it reads anyway, instead of written and read back"},
    {"fuse-elementwise", "optimizer updates and activation grads are long elementwise chains"},
    {"stream-update-stores", "half weight shadows the updates write (read next step) go past "
                             "the caches when the variables outgrow them"},
    {"dce", "remove anything fusion left unused"},
};

template <size_t N>
PassManager Build(const PipelineEntry (&entries)[N]) {
  PassManager pm;
  for (const PipelineEntry& e : entries) pm.Add(CreatePass(e.pass), e.why);
  return pm;
}

}  // namespace

PassManager BuildPipeline(PipelineKind kind) {
  switch (kind) {
    case PipelineKind::kInference: return Build(kInferencePipeline);
    case PipelineKind::kTraining: return Build(kTrainingPipeline);
  }
  Fail(ErrorKind::kInternal, "unknown pipeline kind");
}

std::unique_ptr<Pass> CreatePass(const std::string& name) {
  std::string known;
  for (const PassInfo& p : kPasses) {
    if (name == p.name) return p.create();
    known += known.empty() ? p.name : std::string(", ") + p.name;
  }
  Fail(ErrorKind::kInvalidInput, "unknown pass '", name, "'; known passes: ", known);
}

}  // namespace tg
