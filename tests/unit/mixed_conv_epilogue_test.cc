// Mixed precision's convolution epilogue: fuse-conv-epilogue turns the half convolution of a
// rounded f32 weight, widened and followed by batch norm and an activation in f32 (what
// Precision.setMixedPrecision makes of a conv-BN-ReLU block), into one mixed conv2d_epilogue
// (half x, f32 master weight and parameters, f32 result). Checked: the rewrite, the CPU
// kernel against the reference kernel, and that the fused result is no further from the
// f32 model than the unfused mixed graph (one rounding fewer: the convolution's result).
#include <gtest/gtest.h>

#include <cmath>

#include "ops/dense_common.h"
#include "passes/passes.h"
#include "passes/verifier.h"
#include "unit/pass_test_util.h"

namespace tg {
namespace {

// conv -> batch norm -> relu; HALF: the mixed-precision form of it (casts of x and w to bf16,
// the convolution's result widened to f32), else all f32.
std::string Block(bool half) {
  const std::string conv =
      half ? R"(  %xh = cast(%x) {dtype = bf16} : bf16[2,16,9,9]
  %wh = cast(%w) {dtype = bf16} : bf16[32,16,3,3]
  %ch = conv2d(%xh, %wh) {stride = [1, 1], padding = [1, 1], dilation = [1, 1], groups = 1} : bf16[2,32,9,9]
  %c = cast(%ch) {dtype = f32} : f32[2,32,9,9]
)"
           : R"(  %c = conv2d(%x, %w) {stride = [1, 1], padding = [1, 1], dilation = [1, 1], groups = 1} : f32[2,32,9,9]
)";
  return R"(graph g {
  input %x : f32[2,16,9,9]
  input %w : f32[32,16,3,3]
  input %gamma : f32[32]
  input %beta : f32[32]
  input %mean : f32[32]
  input %logvar : f32[32]
)" + conv + R"(  %var = exp(%logvar) : f32[32]
  %bn = batch_norm_inference(%c, %gamma, %beta, %mean, %var) {eps = 0.00001} : f32[2,32,9,9]
  %y = relu(%bn) : f32[2,32,9,9]
  output %y
})";
}

std::unique_ptr<Graph> Fused(const std::string& text) {
  std::unique_ptr<Graph> g = ParseGraph(text);
  Verify(*g, &OpRegistry::Global());
  PassContext ctx;
  ctx.registry = &OpRegistry::Global();
  CreateFuseConvEpiloguePass()->Run(*g, ctx);
  CreateDcePass()->Run(*g, ctx);
  Verify(*g, &OpRegistry::Global());
  return g;
}

double MaxAbsDifference(const HostTensor& a, const HostTensor& b) {
  double worst = 0;
  for (int64_t i = 0; i < a.type().numel(); ++i) {
    worst = std::max(worst, std::fabs(a.GetAsDouble(i) - b.GetAsDouble(i)));
  }
  return worst;
}

TEST(MixedConvEpilogue, AMixedConvBatchNormReluBecomesOneMixedNode) {
  std::unique_ptr<Graph> g = Fused(Block(true));
  EXPECT_EQ(Count(*g, "conv2d"), 0);
  EXPECT_EQ(Count(*g, "batch_norm_inference"), 0);
  EXPECT_EQ(Count(*g, "cast"), 1) << "x's rounding stays; w's is the kernel's now";
  const Node* conv = Only(*g, "conv2d_epilogue");
  ASSERT_NE(conv, nullptr);
  EXPECT_EQ(conv->input(0)->type().dtype, DType::kBF16);
  EXPECT_EQ(conv->input(1)->name(), "w") << "the f32 master weight";
  EXPECT_EQ(conv->output()->type().dtype, DType::kF32);
  EXPECT_TRUE(GetBool(conv->attrs(), "batch_norm"));
  EXPECT_EQ(GetString(conv->attrs(), "activation"), "relu");
}

TEST(MixedConvEpilogue, TheCpuKernelMatchesTheReferenceAndRoundsOnceLess) {
  std::unique_ptr<Graph> truth = ParseGraph(Block(false));
  std::unique_ptr<Graph> unfused = ParseGraph(Block(true));
  std::unique_ptr<Graph> fused = Fused(Block(true));
  const auto feeds = RandomFeeds(*truth, 5);
  const HostTensor f32 = EvaluateGraph(*truth, feeds, DeviceKind::kReference).outputs[0];
  const HostTensor before = EvaluateGraph(*unfused, feeds, DeviceKind::kReference).outputs[0];
  const HostTensor ref = EvaluateGraph(*fused, feeds, DeviceKind::kReference).outputs[0];
  const HostTensor cpu = EvaluateGraph(*fused, feeds, DeviceKind::kCpu).outputs[0];
  double scale = 0;
  for (int64_t i = 0; i < f32.type().numel(); ++i) scale = std::max(scale, std::fabs(f32.GetAsDouble(i)));
  ASSERT_GT(scale, 1.0);
  // The same rounded operands on both devices: f32 sums against double ones.
  EXPECT_LE(MaxAbsDifference(cpu, ref), 1e-5 * scale);
  // bf16 operands: about 2^-9 relative from the f32 model; the fused node rounds the folded
  // weight instead of the weight, and skips the rounding of the convolution's result.
  const double err_before = MaxAbsDifference(before, f32), err_fused = MaxAbsDifference(ref, f32);
  EXPECT_GT(err_before, 1e-4 * scale) << "bf16 rounding is visible";
  EXPECT_LT(err_before, 2e-2 * scale);
  EXPECT_LE(err_fused, err_before) << "fused " << err_fused << " unfused " << err_before;
}

TEST(MixedConvEpilogue, AHalfConvolutionWithoutTheWidenedEpilogueStays) {
  // The half result is read as it is (a model.bfloat16() graph after narrowing): nothing
  // to fuse, and the result's rounding is part of the program.
  std::unique_ptr<Graph> g = Fused(R"(graph g {
  input %x : bf16[2,16,9,9]
  input %w : f32[32,16,3,3]
  %wh = cast(%w) {dtype = bf16} : bf16[32,16,3,3]
  %ch = conv2d(%x, %wh) {stride = [1, 1], padding = [1, 1], dilation = [1, 1], groups = 1} : bf16[2,32,9,9]
  %y = relu(%ch) : bf16[2,32,9,9]
  output %y
})");
  EXPECT_EQ(Count(*g, "conv2d"), 1);
  EXPECT_EQ(Count(*g, "conv2d_epilogue"), 0);
}

// Two mixed conv-BN-ReLU layers: the first's f32 result is rounded to bf16 for the second.
constexpr const char* kTwoLayers = R"(graph g {
  input %x : f32[2,16,7,7]
  input %w1 : f32[32,16,3,3]
  input %w2 : f32[16,32,1,1]
  input %gamma : f32[32]
  input %beta : f32[32]
  input %b2 : f32[1,16,1,1]
  %xh = cast(%x) {dtype = bf16} : bf16[2,16,7,7]
  %w1h = cast(%w1) {dtype = bf16} : bf16[32,16,3,3]
  %c1h = conv2d(%xh, %w1h) {stride = [1, 1], padding = [1, 1], dilation = [1, 1], groups = 1} : bf16[2,32,7,7]
  %c1 = cast(%c1h) {dtype = f32} : f32[2,32,7,7]
  %mean = mul(%beta, %gamma) : f32[32]
  %var = exp(%gamma) : f32[32]
  %bn = batch_norm_inference(%c1, %gamma, %beta, %mean, %var) {eps = 0.00001} : f32[2,32,7,7]
  %r = relu(%bn) : f32[2,32,7,7]
  %rh = cast(%r) {dtype = bf16} : bf16[2,32,7,7]
  %w2h = cast(%w2) {dtype = bf16} : bf16[16,32,1,1]
  %c2h = conv2d(%rh, %w2h) {stride = [1, 1], padding = [0, 0], dilation = [1, 1], groups = 1} : bf16[2,16,7,7]
  %c2 = cast(%c2h) {dtype = f32} : f32[2,16,7,7]
  %y = add(%c2, %b2) : f32[2,16,7,7]
  %s = silu(%y) : f32[2,16,7,7]
  output %s
})";

// `text` fused and then blocked by block-conv-layout (on a CPU with bf16 convolutions or not).
std::unique_ptr<Graph> FusedAndBlocked(const std::string& text, bool native_bf16 = true) {
  std::unique_ptr<Graph> g = Fused(text);
  PassContext ctx;
  ctx.registry = &OpRegistry::Global();
  ctx.native_bf16_convolutions = native_bf16;
  EXPECT_TRUE(CreateBlockConvLayoutPass()->Run(*g, ctx));
  Verify(*g, &OpRegistry::Global());
  return g;
}

// The blocked bytes are the same values: blocked and plain agree on each device (to
// `same`), and the CPU agrees with the reference (to `cpu_vs_reference`: bf16 roundings of
// an f32 value between the convolutions may differ).
void ExpectSameValues(const Graph& plain, const Graph& blocked, double same,
                      double cpu_vs_reference) {
  const auto feeds = RandomFeeds(plain, 3);
  for (DeviceKind device : {DeviceKind::kReference, DeviceKind::kCpu}) {
    const HostTensor a = EvaluateGraph(plain, feeds, device).outputs[0];
    const HostTensor b = EvaluateGraph(blocked, feeds, device).outputs[0];
    EXPECT_LE(MaxAbsDifference(a, b), same) << DeviceKindName(device);
  }
  const HostTensor ref = EvaluateGraph(blocked, feeds, DeviceKind::kReference).outputs[0];
  const HostTensor cpu = EvaluateGraph(blocked, feeds, DeviceKind::kCpu).outputs[0];
  EXPECT_LE(MaxAbsDifference(ref, cpu), cpu_vs_reference);
}

TEST(MixedConvEpilogue, LayersHandOverInTheBlockedLayoutThroughTheirCast) {
  std::unique_ptr<Graph> plain = Fused(kTwoLayers);
  ASSERT_EQ(Count(*plain, "conv2d_epilogue"), 2);
  std::unique_ptr<Graph> blocked = FusedAndBlocked(kTwoLayers);
  const Node* first = nullptr;
  const Node* second = nullptr;
  for (const auto& n : blocked->nodes()) {
    if (n->op() != "conv2d_epilogue") continue;
    (first == nullptr ? first : second) = n.get();
  }
  ASSERT_NE(second, nullptr);
  EXPECT_TRUE(GetBool(first->attrs(), "dst_blocked"));
  EXPECT_FALSE(GetBool(first->attrs(), "src_blocked")) << "x comes from the graph's input";
  EXPECT_TRUE(GetBool(second->attrs(), "src_blocked"));
  EXPECT_FALSE(GetBool(second->attrs(), "dst_blocked")) << "the output stays NCHW";
  EXPECT_EQ(second->input(0)->producer()->op(), "cast");
  // bf16 convolutions hand over in NHWC, oneDNN's layout for them (no reorders).
  EXPECT_TRUE(GetBool(first->attrs(), "dst_channels_last"));
  EXPECT_TRUE(GetBool(second->attrs(), "src_channels_last"));
  // Where the CPU widens bf16 convolutions to f32, they hand over in nChw16c.
  std::unique_ptr<Graph> widened = FusedAndBlocked(kTwoLayers, /*native_bf16=*/false);
  for (const auto& n : widened->nodes()) {
    for (const char* attr : {"src_channels_last", "dst_channels_last"}) {
      EXPECT_FALSE(HasAttr(n->attrs(), attr) && GetBool(n->attrs(), attr)) << n->op();
    }
  }
  EXPECT_EQ(Count(*widened, "conv2d_epilogue"), 2);
  ExpectSameValues(*plain, *blocked, 1e-6, 1e-3);
}

// A bf16 trunk with a max pool, a residual add and a global mean: one channels-last group.
constexpr const char* kPooledTrunk = R"(graph g {
  input %x : f32[2,16,8,8]
  input %w1 : f32[32,16,3,3]
  input %b1 : f32[1,32,1,1]
  input %w2 : f32[32,32,1,1]
  input %b2 : f32[1,32,1,1]
  %xh = cast(%x) {dtype = bf16} : bf16[2,16,8,8]
  %w1h = cast(%w1) {dtype = bf16} : bf16[32,16,3,3]
  %c1h = conv2d(%xh, %w1h) {stride = [1, 1], padding = [1, 1], dilation = [1, 1], groups = 1} : bf16[2,32,8,8]
  %c1 = cast(%c1h) {dtype = f32} : f32[2,32,8,8]
  %y1 = add(%c1, %b1) : f32[2,32,8,8]
  %r1 = relu(%y1) : f32[2,32,8,8]
  %p = max_pool2d(%r1) {kernel_size = [3, 3], stride = [2, 2], padding = [1, 1], dilation = [1, 1], ceil_mode = false} : f32[2,32,4,4]
  %ph = cast(%p) {dtype = bf16} : bf16[2,32,4,4]
  %w2h = cast(%w2) {dtype = bf16} : bf16[32,32,1,1]
  %c2h = conv2d(%ph, %w2h) {stride = [1, 1], padding = [0, 0], dilation = [1, 1], groups = 1} : bf16[2,32,4,4]
  %c2 = cast(%c2h) {dtype = f32} : f32[2,32,4,4]
  %y2 = add(%c2, %b2) : f32[2,32,4,4]
  %s = add(%y2, %p) : f32[2,32,4,4]
  %m = mean(%s) {axes = [2, 3], keepdim = false} : f32[2,32]
  output %m
})";

TEST(MixedConvEpilogue, BlockedPoolingAndMeansOfABf16TrunkReadChannelsLast) {
  std::unique_ptr<Graph> plain = Fused(kPooledTrunk);
  ASSERT_EQ(Count(*plain, "conv2d_epilogue"), 2);
  std::unique_ptr<Graph> blocked = FusedAndBlocked(kPooledTrunk);
  auto on = [](const Node* n, const char* attr) {
    return n != nullptr && HasAttr(n->attrs(), attr) && GetBool(n->attrs(), attr);
  };
  const Node* pool = Only(*blocked, "max_pool2d");
  EXPECT_TRUE(on(pool, "blocked") && on(pool, "channels_last"));
  EXPECT_TRUE(on(Only(*blocked, "blocked_spatial_mean"), "channels_last"));
  EXPECT_EQ(Count(*blocked, "block_channels") + Count(*blocked, "unblock_channels"), 0);
  for (const auto& n : blocked->nodes()) {
    if (n->op() != "conv2d_epilogue") continue;
    EXPECT_EQ(on(n.get(), "src_blocked"), on(n.get(), "src_channels_last"));
    EXPECT_TRUE(on(n.get(), "dst_blocked") && on(n.get(), "dst_channels_last"));
  }
  ExpectSameValues(*plain, *blocked, 1e-5, 1e-2);
}

TEST(MixedConvEpilogue, FoldsAreKeptForValuesComputedFromWeightsAlone) {
  // What the mixed kernel's fold cache accepts besides weights: a reshaped variable bias and
  // a cast of it (squeeze-excite convolutions); not a value behind an input or hyperparameter.
  std::unique_ptr<Graph> g = ParseGraph(R"(graph g {
  input %x : f32[4]
  hyperparam %lr : f32[]
  variable %b : f32[1,4,1,1]
  %flat = reshape(%b) {shape = [4]} : f32[4]
  %half = cast(%flat) {dtype = bf16} : bf16[4]
  %scaled = mul(%flat, %lr) : f32[4]
  %moved = add(%flat, %x) : f32[4]
  output %half
  output %scaled
  output %moved
})");
  auto value = [&](const char* name) -> const Value* {
    for (const auto& n : g->nodes()) {
      if (n->output()->name() == name) return n->output();
    }
    return nullptr;
  };
  EXPECT_TRUE(IsWeightDerived(value("flat")));
  EXPECT_TRUE(IsWeightDerived(value("half")));
  EXPECT_FALSE(IsWeightDerived(value("scaled"))) << "a hyperparameter changes per call";
  EXPECT_FALSE(IsWeightDerived(value("moved"))) << "an input changes per call";
  EXPECT_FALSE(IsWeightDerived(value("half"), 1)) << "deeper than asked";
}


// The mixed kernel on the shapes it runs as one GEMM over the batch's columns
// (cpu::PreferGemmEpilogue: <= 64 output positions in the batch; 3x3, strided, padded, 1x1)
// and on oneDNN's convolution (the two 1x1 cases on larger planes), with x and / or y
// channel-blocked, against the reference kernel on the same rounded operands.
struct GemmCase {
  int64_t n, c, h, o, k, stride, pad;
  bool src_blocked, dst_blocked;
  const char* activation;
};

class MixedConvEpilogueGemm : public ::testing::TestWithParam<GemmCase> {};

TEST_P(MixedConvEpilogueGemm, MatchesTheReference) {
  const GemmCase& t = GetParam();
  const int64_t oh = (t.h + 2 * t.pad - t.k) / t.stride + 1;
  auto dims = [](std::initializer_list<int64_t> d) {
    std::string s;
    for (int64_t v : d) s += (s.empty() ? "" : ",") + std::to_string(v);
    return "[" + s + "]";
  };
  const std::string text = "graph g {\n  input %x : bf16" + dims({t.n, t.c, t.h, t.h}) +
                           "\n  input %w : f32" + dims({t.o, t.c, t.k, t.k}) +
                           "\n  input %b : f32" + dims({t.o}) +
                           "\n  %y = conv2d_epilogue(%x, %w, %b) {stride = " +
                           dims({t.stride, t.stride}) + ", padding = " + dims({t.pad, t.pad}) +
                           ", dilation = [1, 1], groups = 1, bias = true, batch_norm = false, "
                           "eps = 0.00001, activation = \"" + t.activation +
                           "\", src_blocked = " + (t.src_blocked ? "true" : "false") +
                           ", dst_blocked = " + (t.dst_blocked ? "true" : "false") + "} : f32" +
                           dims({t.n, t.o, oh, oh}) + "\n  output %y\n}";
  std::unique_ptr<Graph> g = ParseGraph(text);
  Verify(*g, &OpRegistry::Global());
  const auto feeds = RandomFeeds(*g, 11);
  const HostTensor ref = EvaluateGraph(*g, feeds, DeviceKind::kReference).outputs[0];
  const HostTensor cpu = EvaluateGraph(*g, feeds, DeviceKind::kCpu).outputs[0];
  double scale = 0;
  for (int64_t i = 0; i < ref.type().numel(); ++i) scale = std::max(scale, std::fabs(ref.GetAsDouble(i)));
  ASSERT_GT(scale, 0.5) << "outputs that are not all zero";
  // f32 sums of exact bf16 products against double ones.
  EXPECT_LE(MaxAbsDifference(cpu, ref), 1e-5 * std::max(scale, 1.0));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MixedConvEpilogueGemm,
    ::testing::Values(GemmCase{2, 32, 4, 48, 3, 1, 1, false, false, "relu"},
                      GemmCase{3, 16, 7, 32, 3, 2, 1, true, false, "silu"},
                      GemmCase{2, 32, 6, 32, 3, 1, 0, false, true, "none"},
                      GemmCase{2, 16, 5, 64, 3, 1, 1, true, true, "gelu"},
                      GemmCase{4, 32, 3, 80, 1, 1, 0, true, false, "hardswish"},
                      GemmCase{2, 16, 10, 32, 1, 1, 0, false, false, "sigmoid"},
                      GemmCase{2, 32, 9, 48, 1, 1, 0, true, true, "relu"},
                      GemmCase{1, 16, 8, 16, 1, 1, 0, false, true, "gelu_tanh"}));

}  // namespace
}  // namespace tg
