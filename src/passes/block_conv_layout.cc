// Hand activations (and, in training, their gradients) between convolutions in oneDNN's
// channel-blocked layout: nChw8c (nChw16c with AVX-512) instead of oneDNN reordering every
// convolution operand from NCHW and back. The values keep their logical type [N, C, H, W];
// only the kernels that read and write them see the bytes.
//
// A *layout group* is a set of values that must share a layout because one kernel reads or
// writes them all with one attribute:
//   - same-shape elementwise nodes (every tensor input has the output's shape; one-element
//     inputs broadcast): element i from elements i, correct on any layout shared by all
//     their tensors: activations, residual adds, activation gradients, casts;
//   - batch_norm_train (x, y) and batch_norm_backward (dy, x, dx): attribute "blocked";
//   - max_pool2d (x, y) and max_pool2d_backward (dy, x, dx): attribute "blocked" (values of
//     two spatial shapes in one group);
//   - a squeeze-excite gate x * g with g [N or 1, C, 1, 1] (x and the result), which
//     becomes blocked_channel_scale;
//   - a conv2d_epilogue's residual input and its output (both in the y side's layout).
// Convolutions (conv2d, conv2d_epilogue, conv2d_backward_input, conv2d_backward_weight) read
// and write their x side (x or dx) and y side (y or dy) in either layout, each with its own
// attribute (src_blocked, dst_blocked): they join nothing, and each of their operands in a
// blocked group is a reorder oneDNN no longer does (a *saving*). A mean over H and W reads
// the blocked layout as blocked_spatial_mean, a sum over N, H and W (a bias gradient) as
// blocked_channel_sum.
//
// Any other producer or reader of a group's value (average pooling, a permute, a graph
// input, a graph output or update, a half convolution, the dy of a backward-weight
// convolution whose x is not in whole channel blocks) needs NCHW: the group then gets an
// explicit reorder at that edge (block_channels after the producer, unblock_channels before
// the readers; ops/blocked_layout.cc), a *cost*. A group is blocked when its savings exceed its
// costs, every value in it has 4 dimensions, channels divisible by 16 (either block size
// pads nothing, so the memory plan's buffer sizes hold) and more than one position per
// channel (else both layouts are the same bytes), and all its nodes are on one device.
//
// A blocked group is channels-last (NHWC: one block of all C channels, attributes
// src_channels_last / dst_channels_last on convolutions, channels_last on the other ops) when
// more of its convolution slots are bf16 conv2d_epilogues (mixed precision's convolutions)
// than f32 ones, no batch norm is in it and the CPU has bf16 convolutions
// (PassContext::native_bf16_convolutions): oneDNN's bf16 convolutions (AMX, AVX-512 BF16)
// read and write NHWC, so nChw16c costs a reorder of x and of y at each of them (ResNet-50
// bf16 inference at 224x224: 102 of 220 ms), as NHWC does at oneDNN's f32 ones (and at the
// widened f32 convolutions of CPUs without bf16: ResNet-50 at 64x64, oneDNN capped at AVX2,
// 35 -> 39 ms).
//
// Runs after the passes that make conv2d_epilogue nodes and, in training, after autodiff,
// recompute and the update schedule, and before fuse-elementwise (whose fused kernels of
// same-shape groups stay layout-agnostic).
#include <algorithm>
#include <numeric>
#include <unordered_map>
#include <unordered_set>

#include "ops/registry.h"
#include "passes/passes.h"
#include "passes/single_reader.h"

namespace tg {
namespace {

bool IsF32Nchw(const Value* v) {
  return v->type().rank() == 4 && v->type().dtype == DType::kF32;
}

bool IsTensor(const Value* v) { return v->type().numel() != 1; }

// An elementwise node that reads and writes every tensor in the same order of elements.
bool IsSameShapeElementwise(const Node& n) {
  const OpDef* def = OpRegistry::Global().Find(n.op());
  if (def == nullptr || !def->traits.elementwise || def->traits.random) return false;
  if (n.outputs().empty()) return false;
  const Shape& shape = n.output(0)->type().shape;
  for (const Value* o : n.outputs()) {
    if (o->type().shape != shape) return false;
  }
  for (const Value* in : n.inputs()) {
    if (in->type().shape != shape && in->type().numel() != 1) return false;
  }
  return true;
}

// Whether n is reduction `op` of an f32 [N, C, H, W] value over exactly `axes` (sorted).
bool IsReductionOver(const Node& n, const char* op, const std::vector<int64_t>& axes) {
  if (n.op() != op || !IsF32Nchw(n.input(0))) return false;
  std::vector<int64_t> got = GetInts(n.attrs(), "axes");
  for (int64_t& a : got) a = a < 0 ? a + 4 : a;
  std::sort(got.begin(), got.end());
  return got == axes;
}

// mean over H and W of an f32 [N, C, H, W] value.
bool IsSpatialMean(const Node& n) { return IsReductionOver(n, "mean", {2, 3}); }

// sum over N, H and W of an f32 [N, C, H, W] value: a bias gradient.
bool IsChannelSum(const Node& n) { return IsReductionOver(n, "sum", {0, 2, 3}); }

// mul(x, g) or mul(g, x) with x f32 [N, C, H, W] and g [N or 1, C, 1, 1] (a per-channel
// gate, H * W > 1): the x it scales, else null.
Value* ChannelScaleX(const Node& n) {
  if (n.op() != "mul" || n.inputs().size() != 2) return nullptr;
  for (int i = 0; i < 2; ++i) {
    Value* x = n.input(i);
    const TensorType& g = n.input(1 - i)->type();
    if (!IsF32Nchw(x) || n.output()->type().shape != x->type().shape || g.rank() != 4 ||
        g.dtype != DType::kF32 || x == n.input(1 - i)) {
      continue;
    }
    const Shape& xs = x->type().shape;
    if ((g.shape[0] == xs[0] || g.shape[0] == 1) && g.shape[1] == xs[1] && g.shape[2] == 1 &&
        g.shape[3] == 1 && xs[2] * xs[3] > 1) {
      return x;
    }
  }
  return nullptr;
}

bool IsBatchNorm(const Node& n) {
  return (n.op() == "batch_norm_train" || n.op() == "batch_norm_backward") &&
         n.output()->type().rank() == 4;
}

// A max pooling of f32 [N, C, H, W] whose pooled side (y, or dy) has more than one position
// per channel: a global max pool stays out, so that its one-position side does not keep the
// trunk it reads from NCHW.
bool IsMaxPool(const Node& n) {
  if (n.op() != "max_pool2d" && n.op() != "max_pool2d_backward") return false;
  const Value* pooled = n.op() == "max_pool2d" ? n.output() : n.input(0);
  return IsF32Nchw(n.output()) && IsF32Nchw(pooled) &&
         pooled->type().shape[2] * pooled->type().shape[3] > 1;
}

// A convolution operand's layout attribute: "src_blocked" (its x side), "dst_blocked" (its
// y side) or null where the slot has none (the weight, a dw, a half convolution's operand:
// oneDNN's blocked paths are f32, conv2d_epilogue's also with a half x and f32 result).
const char* ConvSideAttr(const Node& n, bool input, size_t i) {
  const std::string& op = n.op();
  if (op == "conv2d_epilogue") {
    if (!IsF32Nchw(n.output())) return nullptr;
    if (input) return i == 0 ? "src_blocked" : nullptr;
    return "dst_blocked";
  }
  if (op != "conv2d" && op != "conv2d_backward_input" && op != "conv2d_backward_weight") {
    return nullptr;
  }
  for (const Value* v : n.inputs()) {
    if (v->type().dtype != DType::kF32) return nullptr;
  }
  if (op == "conv2d") return input ? (i == 0 ? "src_blocked" : nullptr) : "dst_blocked";
  if (op == "conv2d_backward_input") {
    return input ? (i == 0 ? "dst_blocked" : nullptr) : "src_blocked";
  }
  // Backward weight: dy blocked only with an x that can be blocked too (channels divisible
  // by 16); with a plain few-channel x (a first layer's image) oneDNN 2.6 has no fast kernel
  // for a blocked dy (the main job's first conv: 18 against 54 GFLOP/s with both NCHW).
  if (i == 0 && n.input(1)->type().shape[1] % 16 != 0) return nullptr;
  return input ? (i == 0 ? "dst_blocked" : "src_blocked") : nullptr;  // backward weight
}

// A conv2d_epilogue's residual input: read in its output's layout (attribute dst_blocked).
bool IsResidualSlot(const Node& n, bool input, size_t i) {
  return n.op() == "conv2d_epilogue" && HasAttr(n.attrs(), "residual") &&
         GetBool(n.attrs(), "residual") && IsF32Nchw(n.output()) &&
         (!input || i + 1 == n.inputs().size());
}

// Whether slot (input or output i) of n joins the layout group of its value (the slots one
// attribute or one elementwise loop covers), as listed at the top of this file.
bool JoinsGroup(const Node& n, bool input, size_t i) {
  if (IsResidualSlot(n, input, i)) return true;
  if (IsSameShapeElementwise(n)) return !input || IsTensor(n.input(i));
  if (IsBatchNorm(n)) return input ? i < (n.op() == "batch_norm_train" ? 1u : 2u) : i == 0;
  if (IsMaxPool(n)) return !input || i < n.inputs().size();
  if (const Value* x = ChannelScaleX(n)) return !input || n.input(i) == x;
  return false;
}

// Whether slot (input i or output i) of n reads or writes its value in the blocked layout
// once the group is blocked.
bool TakesBlocked(const Node& n, bool input, size_t i) {
  return JoinsGroup(n, input, i) || ConvSideAttr(n, input, i) != nullptr ||
         (input && i == 0 && (IsSpatialMean(n) || IsChannelSum(n)));
}

// Union-find over value ids.
class Groups {
 public:
  explicit Groups(size_t n) : parent_(n) { std::iota(parent_.begin(), parent_.end(), 0); }
  size_t Find(size_t v) {
    while (parent_[v] != v) v = parent_[v] = parent_[parent_[v]];
    return v;
  }
  void Join(size_t a, size_t b) { parent_[Find(a)] = Find(b); }

 private:
  std::vector<size_t> parent_;
};

// Whether n is a convolution whose kernel is oneDNN's bf16 one: a conv2d_epilogue with a bf16
// x (and f32 result).
bool IsBf16Conv(const Node& n) {
  return n.op() == "conv2d_epilogue" && n.input(0)->type().dtype == DType::kBF16;
}

struct GroupState {
  bool ok = true;
  int savings = 0, costs = 0;
  int placement = -1;
  int bf16_convs = 0, f32_convs = 0;  // convolution slots of each kind in the group
  bool has_batch_norm = false;        // (whose blocked kernels are nChw16c only)
  bool Place(int p) {
    if (placement >= 0 && placement != p) return false;
    placement = p;
    return true;
  }
  bool blocked() const { return ok && savings > costs; }
  bool channels_last(bool native_bf16) const {
    return native_bf16 && bf16_convs > f32_convs && !has_batch_norm;
  }
  void CountConv(const Node& n) { ++(IsBf16Conv(n) ? bf16_convs : f32_convs); }
};

// The readers of v and the input slots they read it in, in node order.
struct Reads {
  std::vector<std::pair<Node*, size_t>> slots;
};

class BlockConvLayoutPass : public Pass {
 public:
  std::string name() const override { return "block-conv-layout"; }

  bool Run(Graph& graph, PassContext& ctx) override {
    // Every value some slot could hand over blocked, with its readers.
    std::unordered_map<const Value*, Reads> reads;
    std::vector<Value*> candidates;
    std::unordered_set<const Value*> considered;
    Groups groups(graph.num_values());
    for (const auto& node : graph.nodes()) {
      for (size_t i = 0; i < node->inputs().size(); ++i) {
        reads[node->input(i)].slots.push_back({node.get(), i});
      }
    }
    auto consider = [&](Value* v) {
      if (considered.insert(v).second) candidates.push_back(v);
    };
    for (const auto& node : graph.nodes()) {
      const Value* anchor = nullptr;
      for (size_t i = 0; i < node->inputs().size(); ++i) {
        if (!TakesBlocked(*node, true, i)) continue;
        consider(node->input(i));
        if (!JoinsGroup(*node, true, i)) continue;
        if (anchor != nullptr) groups.Join(node->input(i)->id(), anchor->id());
        anchor = node->input(i);
      }
      for (size_t i = 0; i < node->outputs().size(); ++i) {
        if (!TakesBlocked(*node, false, i)) continue;
        consider(node->output(i));
        if (!JoinsGroup(*node, false, i)) continue;
        if (anchor != nullptr) groups.Join(node->output(i)->id(), anchor->id());
        anchor = node->output(i);
      }
    }
    // Each group's savings and costs, value by value.
    std::unordered_map<const Value*, bool> is_output;
    for (const Value* v : graph.outputs()) is_output[v] = true;
    for (const VariableUpdate& u : graph.updates()) is_output[u.value] = true;
    std::unordered_map<size_t, GroupState> state;
    for (const Value* v : candidates) {
      GroupState& s = state[groups.Find(v->id())];
      const TensorType& t = v->type();
      // (One position per channel: NCHW and blocked are the same bytes, nothing to save.)
      if (t.rank() != 4 || t.shape[1] % 16 != 0 || t.shape[2] * t.shape[3] == 1) s.ok = false;
      const Node* producer = v->producer();
      if (producer == nullptr) {
        ++s.costs;
      } else {
        if (!s.Place(producer->placement())) s.ok = false;
        if (ConvSideAttr(*producer, false, v->output_index()) != nullptr) {
          ++s.savings;
          s.CountConv(*producer);
        }
        if (!TakesBlocked(*producer, false, v->output_index())) ++s.costs;
        s.has_batch_norm |= IsBatchNorm(*producer);
      }
      bool plain_reader = is_output.count(v) != 0;
      for (const auto& [reader, i] : reads[v].slots) {
        if (!s.Place(reader->placement())) s.ok = false;
        if (ConvSideAttr(*reader, true, i) != nullptr) {
          ++s.savings;
          s.CountConv(*reader);
        }
        plain_reader |= !TakesBlocked(*reader, true, i);
        s.has_batch_norm |= IsBatchNorm(*reader) && JoinsGroup(*reader, true, i);
      }
      if (plain_reader) ++s.costs;
    }
    auto blocked = [&](const Value* v) {
      auto it = state.find(groups.Find(v->id()));
      return it != state.end() && it->second.blocked();
    };
    auto channels_last = [&](const Value* v) {
      return state.at(groups.Find(v->id())).channels_last(ctx.native_bf16_convolutions);
    };
    // The squeeze-excite and bias-gradient readers of blocked values, chosen while the
    // groups know every value.
    std::vector<std::pair<Node*, bool>> replaced;  // with whether its x is channels last
    for (const auto& node : graph.nodes()) {
      const Value* x = ChannelScaleX(*node);
      if (x == nullptr && (IsSpatialMean(*node) || IsChannelSum(*node))) x = node->input(0);
      if (x != nullptr && blocked(x)) replaced.push_back({node.get(), channels_last(x)});
    }
    bool changed = false;
    for (Value* v : candidates) {
      if (blocked(v)) changed |= Block(graph, v, reads[v], channels_last(v));
    }
    ReplaceBlockedReaders(graph, replaced);
    return changed;
  }

 private:
  // Hands v over blocked: the layout attributes of the slots that take it, a block_channels
  // after a producer that writes NCHW and an unblock_channels before the readers (and
  // outputs) that need NCHW.
  static bool Block(Graph& graph, Value* v, const Reads& reads, bool channels_last) {
    Node* producer = v->producer();
    const bool produced_blocked =
        producer != nullptr && TakesBlocked(*producer, false, v->output_index());
    if (producer != nullptr && produced_blocked) {
      SetAttr(*producer, false, v->output_index(), channels_last);
    }
    Value* blocked = v;
    if (!produced_blocked) {
      // Before the first reader that takes it blocked (readers are in node order).
      const Node* first = nullptr;
      for (const auto& [reader, i] : reads.slots) {
        if (TakesBlocked(*reader, true, i)) {
          first = reader;
          break;
        }
      }
      if (first == nullptr) return false;
      blocked = AddReorder(graph, "block_channels", v, first, channels_last);
    }
    Value* plain = nullptr;  // v in NCHW, made once for all the readers that need it
    auto unblocked = [&](const Node* before) {
      if (plain == nullptr) plain = AddReorder(graph, "unblock_channels", v, before, channels_last);
      return plain;
    };
    for (const auto& [reader, i] : reads.slots) {
      if (TakesBlocked(*reader, true, i)) {
        reader->set_input(i, blocked);
        SetAttr(*reader, true, i, channels_last);
      } else if (produced_blocked) {
        reader->set_input(i, unblocked(reader));
      }
    }
    if (produced_blocked) {
      for (Value*& out : graph.mutable_outputs()) {
        if (out != v) continue;
        out = unblocked(nullptr);
      }
      for (VariableUpdate& u : graph.mutable_updates()) {
        if (u.value != v) continue;
        u.value = unblocked(nullptr);
      }
    }
    return true;
  }

  // `op`(v) placed before `before` (at the end when null), on v's device.
  static Value* AddReorder(Graph& graph, const char* op, Value* v, const Node* before,
                           bool channels_last) {
    Node* made = graph.AddNode(op, {v}, {v->type()}, LayoutAttrs(channels_last), before);
    const Node* site = before != nullptr ? before : v->producer();
    if (site != nullptr) {
      made->set_placement(site->placement());
      made->set_source(site->source());
    }
    return made->output();
  }

  // The attributes of a blocked op made here: channels_last where it is (absent: nChw16c).
  static AttrMap LayoutAttrs(bool channels_last) {
    if (!channels_last) return {};
    return {{"channels_last", true}};
  }

  // Marks slot (input or output i) of n as reading / writing the blocked layout.
  static void SetAttr(Node& n, bool input, size_t i, bool channels_last) {
    if (const char* attr = ConvSideAttr(n, input, i)) {
      n.mutable_attrs()[attr] = true;
      if (channels_last) {
        n.mutable_attrs()[std::string(attr) == "src_blocked" ? "src_channels_last"
                                                             : "dst_channels_last"] = true;
      }
    } else if (IsBatchNorm(n) || IsMaxPool(n)) {
      n.mutable_attrs()["blocked"] = true;
      if (channels_last) n.mutable_attrs()["channels_last"] = true;
    }
  }

  // The squeeze-excite and bias-gradient readers of blocked values as their blocked ops
  // (x * g, the spatial mean, the channel sum, now reading the blocked x).
  static void ReplaceBlockedReaders(Graph& graph,
                                    const std::vector<std::pair<Node*, bool>>& replaced) {
    for (const auto& [node, channels_last] : replaced) {
      Node* made = nullptr;
      AttrMap attrs = LayoutAttrs(channels_last);
      if (Value* x = ChannelScaleX(*node)) {
        Value* gate = node->input(node->input(0) == x ? 1 : 0);
        made = graph.AddNode("blocked_channel_scale", {x, gate}, {node->output()->type()},
                             attrs, node);
      } else {
        attrs["keepdim"] = GetBool(node->attrs(), "keepdim");
        made = graph.AddNode(IsChannelSum(*node) ? "blocked_channel_sum" : "blocked_spatial_mean",
                             {node->input(0)}, {node->output()->type()}, attrs, node);
      }
      made->set_placement(node->placement());
      made->set_source(node->source());
      graph.ReplaceAllUsesWith(node->output(), made->output());
    }
    graph.RemoveNodesIf([&](const Node& n) {
      return std::any_of(replaced.begin(), replaced.end(),
                         [&](const auto& r) { return r.first == &n; });
    });
  }
};

}  // namespace

std::unique_ptr<Pass> CreateBlockConvLayoutPass() {
  return std::make_unique<BlockConvLayoutPass>();
}

}  // namespace tg
