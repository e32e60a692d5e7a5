// fuse-conv-epilogue: conv2d [-> add(bias)] [-> batch_norm_inference] [-> activation] becomes
// one conv2d_epilogue node when nothing else reads the intermediate values; SiLU is matched
// in its decomposed form x * sigmoid(x). Each case is evaluated before and after (f32: oneDNN
// with the folded weight, bias and eltwise post-op against the unfused kernels).
#include <gtest/gtest.h>

#include "passes/passes.h"
#include "support/error.h"
#include "unit/pass_test_util.h"

namespace tg {
namespace {

// The attributes of a stride-1, padding-1 convolution (3x3 kernels keep H and W).
constexpr const char* kSame3x3 = "dilation = [1, 1], groups = 1, padding = [1, 1], stride = [1, 1]";

std::unique_ptr<Graph> Fused(const std::string& text) {
  std::unique_ptr<Graph> g = ParseGraph(text);
  PassContext ctx;
  CreateFuseConvEpiloguePass()->Run(*g, ctx);
  CreateDcePass()->Run(*g, ctx);
  Verify(*g, &OpRegistry::Global());
  return g;
}

// A conv -> bias -> batch norm -> `tail` graph; the running variance is exp(v) > 0 (inputs
// are random normals), so the batch norm's statistics are computed values here.
std::string ConvBnGraph(const std::string& tail, const std::string& result = "%y",
                        const std::string& extra_output = "") {
  return R"(graph g {
  input %x : f32[2,3,9,9]
  input %w : f32[8,3,3,3]
  input %b : f32[8]
  input %gamma : f32[8]
  input %beta : f32[8]
  input %mean : f32[8]
  input %v : f32[8]
  %var = exp(%v) : f32[8]
  %c = conv2d(%x, %w) {dilation = [1, 1], groups = 1, padding = [1, 1], stride = [2, 2]} : f32[2,8,5,5]
  %b4 = reshape(%b) {shape = [1, 8, 1, 1]} : f32[1,8,1,1]
  %cb = add(%c, %b4) : f32[2,8,5,5]
  %n = batch_norm_inference(%cb, %gamma, %beta, %mean, %var) {eps = 0.001} : f32[2,8,5,5]
)" + tail + "  output " + result + "\n" + extra_output + "}";
}

TEST(FuseConvEpilogue, ConvBiasBatchNormReluBecomesOneNode) {
  std::string text = ConvBnGraph("  %y = relu(%n) : f32[2,8,5,5]\n");
  std::unique_ptr<Graph> g = Fused(text);
  const Node* f = Only(*g, "conv2d_epilogue");
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(GetBool(f->attrs(), "bias"));
  EXPECT_TRUE(GetBool(f->attrs(), "batch_norm"));
  EXPECT_DOUBLE_EQ(GetFloat(f->attrs(), "eps"), 0.001);
  EXPECT_EQ(GetString(f->attrs(), "activation"), "relu");
  EXPECT_EQ(GetInts(f->attrs(), "stride"), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(f->inputs().size(), 7u);  // x, w, bias, gamma, beta, mean, var
  EXPECT_EQ(Count(*g, "conv2d") + Count(*g, "add") + Count(*g, "batch_norm_inference") +
                Count(*g, "relu"),
            0);
  ExpectSameOutputs(text, *g, 1e-4);
}

// The last convolution of a residual block: conv -> batch norm -> add(skip) -> relu is one
// node that adds the skip value before its activation; its first convolution's epilogue
// (no skip) is another. After block-conv-layout the skip (the block's input, written by the
// first epilogue) is read in the blocked layout as the output is written.
TEST(FuseConvEpilogue, ResidualAddBeforeTheActivationIsPartOfTheEpilogue) {
  const std::string conv = kSame3x3;
  const std::string text = R"(graph g {
  input %x : f32[2,16,6,6]
  input %w1 : f32[16,16,3,3]
  input %w2 : f32[16,16,3,3]
  input %w3 : f32[16,16,1,1]
  input %gamma : f32[16]
  input %beta : f32[16]
  input %mean : f32[16]
  input %v : f32[16]
  %var = exp(%v) : f32[16]
  %a = conv2d(%x, %w1) {)" + conv + R"(} : f32[2,16,6,6]
  %ra = relu(%a) : f32[2,16,6,6]
  %b = conv2d(%ra, %w2) {)" + conv + R"(} : f32[2,16,6,6]
  %n = batch_norm_inference(%b, %gamma, %beta, %mean, %var) {eps = 0.00001} : f32[2,16,6,6]
  %s = add(%ra, %n) : f32[2,16,6,6]
  %r = relu(%s) : f32[2,16,6,6]
  %c = conv2d(%r, %w3) {dilation = [1, 1], groups = 1, padding = [0, 0], stride = [1, 1]} : f32[2,16,6,6]
  output %c
})";
  std::unique_ptr<Graph> g = Fused(text);
  EXPECT_EQ(Count(*g, "conv2d_epilogue"), 2);  // c has no epilogue: a conv2d
  EXPECT_EQ(Count(*g, "add") + Count(*g, "relu") + Count(*g, "batch_norm_inference"), 0);
  const Node* last = nullptr;
  for (const auto& node : g->nodes()) {
    if (node->op() == "conv2d_epilogue" && GetBool(node->attrs(), "residual")) last = node.get();
  }
  ASSERT_NE(last, nullptr);
  EXPECT_EQ(GetString(last->attrs(), "activation"), "relu");
  EXPECT_EQ(last->inputs().size(), 7u);  // x, w, the batch norm's four, the skip
  EXPECT_EQ(last->inputs().back()->producer()->op(), "conv2d_epilogue");  // relu(a), fused
  // Outputs reach ~200 here (two 3x3 convolutions of normal inputs): 2e-3 is ~1e-5 relative,
  // the batch norm folded into the weights.
  ExpectSameOutputs(text, *g, 2e-3);

  PassContext ctx;
  CreateBlockConvLayoutPass()->Run(*g, ctx);
  Verify(*g, &OpRegistry::Global());
  EXPECT_TRUE(GetBool(last->attrs(), "dst_blocked") && GetBool(last->attrs(), "src_blocked"));
  EXPECT_EQ(Count(*g, "block_channels") + Count(*g, "unblock_channels"), 0);
  ExpectSameOutputs(text, *g, 2e-3);
}

// ResNet's downsampling block: relu(bn3(conv3(h)) + bn(downsample(x))). The first
// convolution in node order takes the add and the activation; the other keeps its own
// batch norm in its epilogue, its result the residual.
TEST(FuseConvEpilogue, TwoConvolutionsMeetingInOneAddEachKeepTheirBatchNorm) {
  const std::string text = R"(graph g {
  input %x : f32[2,16,6,6]
  input %w3 : f32[32,16,1,1]
  input %wd : f32[32,16,1,1]
  input %g3 : f32[32]
  input %b3 : f32[32]
  input %gd : f32[32]
  input %bd : f32[32]
  input %mean : f32[32]
  input %v : f32[32]
  %var = exp(%v) : f32[32]
  %c3 = conv2d(%x, %w3) {dilation = [1, 1], groups = 1, padding = [0, 0], stride = [1, 1]} : f32[2,32,6,6]
  %n3 = batch_norm_inference(%c3, %g3, %b3, %mean, %var) {eps = 0.00001} : f32[2,32,6,6]
  %cd = conv2d(%x, %wd) {dilation = [1, 1], groups = 1, padding = [0, 0], stride = [1, 1]} : f32[2,32,6,6]
  %nd = batch_norm_inference(%cd, %gd, %bd, %mean, %var) {eps = 0.00001} : f32[2,32,6,6]
  %s = add(%n3, %nd) : f32[2,32,6,6]
  %y = relu(%s) : f32[2,32,6,6]
  output %y
})";
  std::unique_ptr<Graph> g = Fused(text);
  EXPECT_EQ(Count(*g, "conv2d_epilogue"), 2);
  EXPECT_EQ(Count(*g, "conv2d") + Count(*g, "add") + Count(*g, "relu") +
                Count(*g, "batch_norm_inference"),
            0);
  int residual = 0;
  for (const auto& node : g->nodes()) {
    if (node->op() != "conv2d_epilogue") continue;
    EXPECT_TRUE(GetBool(node->attrs(), "batch_norm"));
    residual += GetBool(node->attrs(), "residual");
  }
  EXPECT_EQ(residual, 1);
  ExpectSameOutputs(text, *g, 1e-3);
}

TEST(FuseConvEpilogue, DecomposedSiluIsTheActivation) {
  for (bool sigmoid_first : {true, false}) {
    std::string mul = sigmoid_first ? "mul(%s, %n)" : "mul(%n, %s)";
    std::string text = ConvBnGraph("  %s = sigmoid(%n) : f32[2,8,5,5]\n  %y = " + mul +
                                   " : f32[2,8,5,5]\n");
    std::unique_ptr<Graph> g = Fused(text);
    const Node* f = Only(*g, "conv2d_epilogue");
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(GetString(f->attrs(), "activation"), "silu");
    EXPECT_EQ(Count(*g, "sigmoid") + Count(*g, "mul"), 0);
    ExpectSameOutputs(text, *g, 1e-4);
  }
}

TEST(FuseConvEpilogue, ValuesReadElsewhereStay) {
  // The batch norm's output is also a graph output: conv, bias and batch norm fuse, the
  // relu stays and reads the fused node.
  std::string text = ConvBnGraph("  %y = relu(%n) : f32[2,8,5,5]\n", "%y", "  output %n\n");
  std::unique_ptr<Graph> g = Fused(text);
  const Node* f = Only(*g, "conv2d_epilogue");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(GetString(f->attrs(), "activation"), "none");
  EXPECT_EQ(Count(*g, "relu"), 1);
  ExpectSameOutputs(text, *g, 1e-4);

  // A sigmoid read by something else besides the mul: not SiLU; the mul, the sigmoid and
  // the activation-free epilogue remain.
  text = ConvBnGraph("  %s = sigmoid(%n) : f32[2,8,5,5]\n  %y = mul(%n, %s) : f32[2,8,5,5]\n",
                     "%y", "  output %s\n");
  g = Fused(text);
  f = Only(*g, "conv2d_epilogue");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(GetString(f->attrs(), "activation"), "none");
  EXPECT_EQ(Count(*g, "sigmoid") + Count(*g, "mul"), 2);
  ExpectSameOutputs(text, *g, 1e-4);

  // The convolution's own result is read twice: nothing fuses.
  text = R"(graph g {
  input %x : f32[1,4,6,6]
  input %w : f32[4,1,3,3]
  %c = conv2d(%x, %w) {dilation = [1, 1], groups = 4, padding = [1, 1], stride = [1, 1]} : f32[1,4,6,6]
  %y = relu(%c) : f32[1,4,6,6]
  %z = add(%c, %y) : f32[1,4,6,6]
  output %z
})";
  g = Fused(text);
  EXPECT_EQ(Count(*g, "conv2d_epilogue"), 0);
  EXPECT_EQ(Count(*g, "conv2d"), 1);
}

TEST(FuseConvEpilogue, DepthwiseBiasAndHardswishWithoutBatchNorm) {
  std::string text = R"(graph g {
  input %x : f32[2,6,7,7]
  input %w : f32[6,1,3,3]
  input %b : f32[6,1,1]
  %c = conv2d(%x, %w) {dilation = [1, 1], groups = 6, padding = [1, 1], stride = [1, 1]} : f32[2,6,7,7]
  %cb = add(%b, %c) : f32[2,6,7,7]
  %y = hardswish(%cb) : f32[2,6,7,7]
  output %y
})";
  std::unique_ptr<Graph> g = Fused(text);
  const Node* f = Only(*g, "conv2d_epilogue");
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(GetBool(f->attrs(), "bias"));
  EXPECT_FALSE(GetBool(f->attrs(), "batch_norm"));
  EXPECT_EQ(GetString(f->attrs(), "activation"), "hardswish");
  EXPECT_EQ(GetInt(f->attrs(), "groups"), 6);
  ExpectSameOutputs(text, *g, 1e-4);
}

// block-conv-layout: conv -> conv hand-offs of 16k channels stay channel-blocked.
std::unique_ptr<Graph> Blocked(const std::string& text) {
  std::unique_ptr<Graph> g = Fused(text);
  PassContext ctx;
  CreateBlockConvLayoutPass()->Run(*g, ctx);
  Verify(*g, &OpRegistry::Global());
  return g;
}

std::string ConvChain(int64_t mid, const std::string& extra_output = "") {
  const std::string m = std::to_string(mid);
  return R"(graph g {
  input %x : f32[2,8,6,6]
  input %w1 : f32[)" + m + R"(,8,1,1]
  input %w2 : f32[)" + m + R"(,1,3,3]
  input %w3 : f32[16,)" + m + R"(,1,1]
  %a = conv2d(%x, %w1) {dilation = [1, 1], groups = 1, padding = [0, 0], stride = [1, 1]} : f32[2,)" + m + R"(,6,6]
  %ra = relu(%a) : f32[2,)" + m + R"(,6,6]
  %b = conv2d(%ra, %w2) {dilation = [1, 1], groups = )" + m + R"(, padding = [1, 1], stride = [2, 2]} : f32[2,)" + m + R"(,3,3]
  %sb = silu(%b) : f32[2,)" + m + R"(,3,3]
  %c = conv2d(%sb, %w3) {dilation = [1, 1], groups = 1, padding = [0, 0], stride = [1, 1]} : f32[2,16,3,3]
  %y = sigmoid(%c) : f32[2,16,3,3]
  output %y
)" + extra_output + "}";
}

int CountAttr(const Graph& g, const std::string& attr) {
  int n = 0;
  for (const auto& node : g.nodes()) {
    n += node->op() == "conv2d_epilogue" && node->attrs().count(attr) != 0 &&
         GetBool(node->attrs(), attr);
  }
  return n;
}

TEST(BlockConvLayout, ConvToConvHandOffsStayBlocked) {
  std::string text = ConvChain(32);
  std::unique_ptr<Graph> g = Blocked(text);
  EXPECT_EQ(Count(*g, "conv2d_epilogue"), 3);
  EXPECT_EQ(CountAttr(*g, "dst_blocked"), 2);  // the output stays NCHW
  EXPECT_EQ(CountAttr(*g, "src_blocked"), 2);  // the graph input stays NCHW
  EXPECT_EQ(CountAttr(*g, "src_channels_last") + CountAttr(*g, "dst_channels_last"), 0)
      << "f32 convolutions hand over in nChw16c";
  ExpectSameOutputs(text, *g, 1e-4);
}

TEST(BlockConvLayout, OddChannelsAndSharedValuesStayNchw) {
  std::unique_ptr<Graph> g = Blocked(ConvChain(24));  // 24 % 16 != 0: a padded block
  EXPECT_EQ(CountAttr(*g, "dst_blocked") + CountAttr(*g, "src_blocked"), 0);
  // The middle value is also an output: its hand-off stays blocked (two reorders saved) and
  // the output gets its own reorder to NCHW (one).
  std::string text = ConvChain(32, "  output %sb\n");
  g = Blocked(text);
  EXPECT_EQ(CountAttr(*g, "dst_blocked"), 2);
  EXPECT_EQ(Count(*g, "unblock_channels"), 1);
  ExpectSameOutputs(text, *g, 1e-4);
}

// A residual block: the identity is read by a convolution and by the add; the add's relu by
// the next convolution. Same-shape elementwise nodes are layout-agnostic, so the whole trunk
// is one blocked group (ResNet's stages); one NCHW-only reader keeps the group in NCHW.
std::string Residual(const std::string& extra = "") {
  return R"(graph g {
  input %x : f32[2,16,6,6]
  input %w1 : f32[16,16,1,1]
  input %w2 : f32[16,16,3,3]
  input %w3 : f32[16,16,1,1]
  %a = conv2d(%x, %w1) {dilation = [1, 1], groups = 1, padding = [0, 0], stride = [1, 1]} : f32[2,16,6,6]
  %ra = relu(%a) : f32[2,16,6,6]
  %b0 = conv2d(%ra, %w2) {dilation = [1, 1], groups = 1, padding = [1, 1], stride = [1, 1]} : f32[2,16,6,6]
  %b = silu(%b0) : f32[2,16,6,6]
  %s = add(%b, %ra) : f32[2,16,6,6]
  %h = mul(%s, %s) : f32[2,16,6,6]
  %r = relu(%h) : f32[2,16,6,6]
  %c = conv2d(%r, %w3) {dilation = [1, 1], groups = 1, padding = [0, 0], stride = [1, 1]} : f32[2,16,6,6]
  %y = sigmoid(%c) : f32[2,16,6,6]
  output %y
)" + extra + "}";
}

TEST(BlockConvLayout, ResidualTrunksStayBlockedThroughSameShapeElementwiseNodes) {
  std::string text = Residual();
  std::unique_ptr<Graph> g = Blocked(text);
  EXPECT_EQ(Count(*g, "conv2d_epilogue"), 3);
  EXPECT_EQ(CountAttr(*g, "dst_blocked"), 2);  // a and b; c's result is the output
  EXPECT_EQ(CountAttr(*g, "src_blocked"), 2);  // b and c; a reads the graph input
  ExpectSameOutputs(text, *g, 1e-4);

  // An NCHW-only reader of the trunk (a max over channels, a graph output) costs one reorder
  // to NCHW, before it: the trunk's four convolution operands stay blocked.
  for (const std::string extra :
       {"  %m = amax(%s) {axes = [1], keepdim = false} : f32[2,6,6]\n  output %m\n",
        "  output %s\n"}) {
    std::string shared = Residual(extra);
    g = Blocked(shared);
    EXPECT_EQ(CountAttr(*g, "dst_blocked") + CountAttr(*g, "src_blocked"), 4) << extra;
    EXPECT_EQ(Count(*g, "unblock_channels"), 1) << extra;
    ExpectSameOutputs(shared, *g, 1e-4);
  }
}

// Where a group's reorders at its edges would cost as much as the convolutions' reorders they
// save, it stays NCHW: one convolution writes the trunk, a max over channels and a graph
// output read it.
TEST(BlockConvLayout, GroupsStayNchwWhereEdgeReordersCostTheSavings) {
  const std::string text = R"(graph g {
  input %x : f32[2,16,6,6]
  input %w : f32[16,16,3,3]
  %a = conv2d(%x, %w) {dilation = [1, 1], groups = 1, padding = [1, 1], stride = [1, 1]} : f32[2,16,6,6]
  %r = relu(%a) : f32[2,16,6,6]
  %m = amax(%r) {axes = [1], keepdim = false} : f32[2,6,6]
  output %m
})";
  std::unique_ptr<Graph> g = Blocked(text);
  EXPECT_EQ(CountAttr(*g, "dst_blocked") + CountAttr(*g, "src_blocked"), 0);
  EXPECT_EQ(Count(*g, "unblock_channels") + Count(*g, "block_channels"), 0);
  ExpectSameOutputs(text, *g, 1e-4);
}

// A training step's convolution block (conv -> batch norm -> GELU -> conv) and its backward:
// the activations and their gradients form one group through the batch norms (one
// "blocked" attribute covers x, y, dy, dx) and the GELU and its gradient, so every
// convolution operand between them is blocked.
TEST(BlockConvLayout, TrainingStepsKeepActivationsAndGradientsBlocked) {
  const std::string conv = kSame3x3;
  const std::string text = R"(graph g {
  input %x : f32[2,16,5,5]
  input %w1 : f32[32,16,3,3]
  input %w2 : f32[16,32,3,3]
  input %gamma : f32[32]
  input %beta : f32[32]
  input %dy : f32[2,16,5,5]
  %a = conv2d(%x, %w1) {)" + conv + R"(} : f32[2,32,5,5]
  %n, %m, %is, %v = batch_norm_train(%a, %gamma, %beta) {eps = 0.00001} : f32[2,32,5,5], f32[32], f32[32], f32[32]
  %h = gelu(%n) {approximate = "none"} : f32[2,32,5,5]
  %c = conv2d(%h, %w2) {)" + conv + R"(} : f32[2,16,5,5]
  %dh = conv2d_backward_input(%dy, %w2) {)" + conv + R"(, input_shape = [2, 32, 5, 5]} : f32[2,32,5,5]
  %dw2 = conv2d_backward_weight(%dy, %h) {)" + conv + R"(, weight_shape = [16, 32, 3, 3]} : f32[16,32,3,3]
  %dn = gelu_backward(%dh, %n) {approximate = "none"} : f32[2,32,5,5]
  %da, %dgamma, %dbeta = batch_norm_backward(%dn, %a, %gamma, %m, %is) : f32[2,32,5,5], f32[32], f32[32]
  %dw1 = conv2d_backward_weight(%da, %x) {)" + conv + R"(, weight_shape = [32, 16, 3, 3]} : f32[32,16,3,3]
  %dx = conv2d_backward_input(%da, %w1) {)" + conv + R"(, input_shape = [2, 16, 5, 5]} : f32[2,16,5,5]
  output %c
  output %dw1
  output %dw2
  output %dgamma
  output %dbeta
  output %dx
})";
  std::unique_ptr<Graph> g = ParseGraph(text);
  Verify(*g, &OpRegistry::Global());
  PassContext ctx;
  CreateBlockConvLayoutPass()->Run(*g, ctx);
  Verify(*g, &OpRegistry::Global());
  auto flag = [&](const std::string& op, const std::string& attr) {
    int n = 0;
    for (const auto& node : g->nodes()) {
      n += node->op() == op && HasAttr(node->attrs(), attr) && GetBool(node->attrs(), attr);
    }
    return n;
  };
  // The graph inputs x (read by two convolutions) and dy (by two) are worth one reorder
  // each; the outputs c and dx, written by one convolution each, are not (NCHW).
  EXPECT_EQ(flag("conv2d", "dst_blocked"), 1);                  // a
  EXPECT_EQ(flag("conv2d", "src_blocked"), 2);                  // x, h
  EXPECT_EQ(flag("conv2d_backward_input", "dst_blocked"), 2);   // dy, da
  EXPECT_EQ(flag("conv2d_backward_input", "src_blocked"), 1);   // dh
  EXPECT_EQ(flag("conv2d_backward_weight", "dst_blocked"), 2);  // dy, da
  EXPECT_EQ(flag("conv2d_backward_weight", "src_blocked"), 2);  // h, x
  EXPECT_EQ(flag("batch_norm_train", "blocked"), 1);
  EXPECT_EQ(flag("batch_norm_backward", "blocked"), 1);
  EXPECT_EQ(Count(*g, "block_channels"), 2);  // x, dy
  EXPECT_EQ(Count(*g, "unblock_channels"), 0);
  ExpectSameOutputs(text, *g, 1e-4);
}

// A squeeze-excite block (EfficientNet's): the gate's mean over H, W and its per-channel
// product read the depthwise output blocked, through their blocked ops; the project
// convolution reads the product blocked.
std::string SqueezeExcite(const std::string& extra = "") {
  return R"(graph g {
  input %x : f32[2,16,6,6]
  input %w1 : f32[16,1,3,3]
  input %wf : f32[16,16,1,1]
  input %w3 : f32[16,16,1,1]
  %a = conv2d(%x, %w1) {dilation = [1, 1], groups = 16, padding = [1, 1], stride = [1, 1]} : f32[2,16,6,6]
  %ra = silu(%a) : f32[2,16,6,6]
  %m = mean(%ra) {axes = [-1, -2], keepdim = true} : f32[2,16,1,1]
  %f = conv2d(%m, %wf) {dilation = [1, 1], groups = 1, padding = [0, 0], stride = [1, 1]} : f32[2,16,1,1]
  %gate = sigmoid(%f) : f32[2,16,1,1]
  %sc = mul(%gate, %ra) : f32[2,16,6,6]
  %c = conv2d(%sc, %w3) {dilation = [1, 1], groups = 1, padding = [0, 0], stride = [1, 1]} : f32[2,16,6,6]
  %y = sigmoid(%c) : f32[2,16,6,6]
  output %y
)" + extra + "}";
}

TEST(BlockConvLayout, SqueezeExciteGatesReadTheBlockedLayout) {
  std::string text = SqueezeExcite();
  std::unique_ptr<Graph> g = Blocked(text);
  EXPECT_EQ(Count(*g, "blocked_spatial_mean"), 1);
  EXPECT_EQ(Count(*g, "blocked_channel_scale"), 1);
  EXPECT_EQ(Count(*g, "mean") + Count(*g, "mul"), 0);
  EXPECT_EQ(CountAttr(*g, "dst_blocked"), 1);  // the depthwise convolution
  EXPECT_EQ(CountAttr(*g, "src_blocked"), 1);  // the project convolution
  ExpectSameOutputs(text, *g, 1e-5);

  // A pooling mean of the gated value reads the blocked channel scale's result.
  text = SqueezeExcite("  %p = mean(%sc) {axes = [2, 3], keepdim = false} : f32[2,16]\n"
                       "  output %p\n");
  g = Blocked(text);
  EXPECT_EQ(Count(*g, "blocked_spatial_mean"), 2);
  EXPECT_EQ(Count(*g, "blocked_channel_scale"), 1);
  ExpectSameOutputs(text, *g, 1e-5);
}

TEST(BlockConvLayout, BlockedAttributesNeedWholeChannelBlocks) {
  // A hand-written (or crafted) graph claiming a blocked layout for 8 channels, which
  // nChw16c would pad past the buffer, is refused when verified.
  std::unique_ptr<Graph> g = ParseGraph(R"(graph g {
  input %x : f32[1,8,4,4]
  input %w : f32[8,8,1,1]
  %y = conv2d_epilogue(%x, %w) {activation = "none", batch_norm = false, bias = false, dilation = [1, 1], dst_blocked = false, eps = 1e-05, groups = 1, padding = [0, 0], src_blocked = true, stride = [1, 1]} : f32[1,8,4,4]
  output %y
})");
  try {
    Verify(*g, &OpRegistry::Global());
    FAIL() << "verified";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("src_blocked needs input channels divisible by 16"),
              std::string::npos)
        << e.message();
  }
}

}  // namespace
}  // namespace tg
