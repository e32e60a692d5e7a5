// Hand activations between convolutions in oneDNN's channel-blocked layout: nChw8c (nChw16c
// with AVX-512) instead of a reorder to NCHW after each convolution and back before the next.
// The values keep their logical type [N, C, H, W]; only the kernels that read and write them
// see the bytes.
//
// Which values: a *layout group* is a set of values joined by same-shape elementwise nodes
// (every tensor input of the node has its output's shape; one-element inputs broadcast), as
// the residual trunk of a ResNet stage (conv -> add(conv, identity) -> relu -> next block's
// convolutions and add) or a cast to half between a convolution and a mixed-precision one.
// Such nodes compute element i from elements i, so they are correct on any layout as long as
// all their tensors share it. A group is blocked when every value in it
//   - is produced by a convolution epilogue (f32 result: it writes the blocked layout) or by
//     one of the group's elementwise nodes,
//   - is read only by the group's elementwise nodes or as input 0 (x) of convolution
//     epilogues (which read the blocked layout),
//   - is not a graph output, and all its nodes are on one device,
//   - has 4 dimensions and channels divisible by 16 (either block size pads nothing, so the
//     buffer the memory plan gives it is the right size),
// and at least one convolution both writes and reads in it (else there is nothing to save).
// A squeeze-excite gate reads the layout too: a mean over H and W of a group's value becomes
// blocked_spatial_mean, and x * g with g [N or 1, C, 1, 1] (x in a group) becomes
// blocked_channel_scale, whose result joins x's group (ops/blocked_layout.cc; f32).
// One reader that needs NCHW (pooling, another reduction, another broadcast, another
// device) keeps its whole group in NCHW.
//
// Runs last among the inference passes that create conv2d_epilogue nodes and before
// fuse-elementwise (whose fused kernels of same-shape groups stay layout-agnostic); conv2d
// nodes with no epilogue keep NCHW.
#include <algorithm>
#include <numeric>
#include <unordered_map>

#include "ops/registry.h"
#include "passes/passes.h"
#include "passes/single_reader.h"

namespace tg {
namespace {

bool IsF32Nchw(const Value* v) {
  return v->type().rank() == 4 && v->type().dtype == DType::kF32;
}

// A convolution epilogue with an f32 result: it reads and writes the blocked layout.
bool IsBlockableConv(const Node& n) {
  return n.op() == "conv2d_epilogue" && IsF32Nchw(n.output());
}

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

bool IsTensor(const Value* v) { return v->type().numel() != 1; }

// mean over H and W (axes 2 and 3) of an f32 [N, C, H, W] value.
bool IsSpatialMean(const Node& n) {
  if (n.op() != "mean" || !IsF32Nchw(n.input(0))) return false;
  std::vector<int64_t> axes = GetInts(n.attrs(), "axes");
  for (int64_t& a : axes) a = a < 0 ? a + 4 : a;
  std::sort(axes.begin(), axes.end());
  return axes == std::vector<int64_t>{2, 3};
}

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

struct GroupState {
  bool ok = true;
  bool conv_writes = false, conv_reads = false;
  int placement = -1;
  bool Place(int p) {
    if (placement >= 0 && placement != p) return false;
    placement = p;
    return true;
  }
};

class BlockConvLayoutPass : public Pass {
 public:
  std::string name() const override { return "block-conv-layout"; }

  bool Run(Graph& graph, PassContext&) override {
    const SingleReaders readers(graph);
    Groups groups(graph.num_values());
    for (const auto& node : graph.nodes()) {
      if (const Value* x = ChannelScaleX(*node)) groups.Join(x->id(), node->output()->id());
      if (!IsSameShapeElementwise(*node)) continue;
      for (const Value* in : node->inputs()) {
        if (IsTensor(in)) groups.Join(in->id(), node->output(0)->id());
      }
      for (const Value* o : node->outputs()) groups.Join(o->id(), node->output(0)->id());
    }
    // Which groups qualify, value by value: its producer, then its readers.
    std::unordered_map<size_t, GroupState> state;
    std::unordered_map<const Value*, bool> is_output;
    for (const Value* v : graph.outputs()) is_output[v] = true;
    for (const VariableUpdate& u : graph.updates()) is_output[u.value] = true;
    auto check = [&](const Value* v) {
      GroupState& s = state[groups.Find(v->id())];
      const Node* producer = v->producer();
      const TensorType& t = v->type();
      bool ok = producer != nullptr && t.rank() == 4 && t.shape[1] % 16 == 0 &&
                !is_output.count(v) && s.Place(producer->placement());
      if (ok && IsBlockableConv(*producer)) {
        s.conv_writes = true;
      } else {
        ok = ok && (IsSameShapeElementwise(*producer) || ChannelScaleX(*producer) != nullptr);
      }
      for (const Node* reader : readers.All(v)) {
        if (!ok) break;
        ok = s.Place(reader->placement());
        if (IsSameShapeElementwise(*reader)) continue;
        if (ChannelScaleX(*reader) == v) continue;  // (v is not also the gate: see there)
        if (IsSpatialMean(*reader)) {
          s.conv_reads = true;  // a reorder saved all the same
          continue;
        }
        bool x_only = IsBlockableConv(*reader) && reader->input(0) == v;
        for (size_t i = 1; i < reader->inputs().size(); ++i) x_only &= reader->input(i) != v;
        ok = ok && x_only;
        s.conv_reads = true;
      }
      if (!ok) s.ok = false;
    };
    for (const auto& node : graph.nodes()) {
      if (IsSameShapeElementwise(*node)) {
        for (const Value* in : node->inputs()) {
          if (IsTensor(in)) check(in);
        }
        for (const Value* o : node->outputs()) check(o);
      } else if (IsBlockableConv(*node)) {
        check(node->output());
        check(node->input(0));
      } else if (const Value* x = ChannelScaleX(*node)) {
        check(x);
        check(node->output());
      } else if (IsSpatialMean(*node)) {
        check(node->input(0));
      }
    }
    auto blocked = [&](const Value* v) {
      auto it = state.find(groups.Find(v->id()));
      return it != state.end() && it->second.ok && it->second.conv_writes &&
             it->second.conv_reads;
    };
    bool changed = false;
    for (const auto& node : graph.nodes()) {
      if (!IsBlockableConv(*node)) continue;
      for (const char* attr : {"dst_blocked", "src_blocked"}) {
        const Value* v = attr[0] == 'd' ? node->output() : node->input(0);
        if (GetBool(node->attrs(), attr) || !blocked(v)) continue;
        node->mutable_attrs()[attr] = true;
        changed = true;
      }
    }
    // The squeeze-excite readers of blocked values, as their blocked ops (all chosen before
    // the graph changes: the groups know the values that exist now).
    std::vector<Node*> replaced;
    for (const auto& node : graph.nodes()) {
      const Value* x = ChannelScaleX(*node);
      if ((x != nullptr && blocked(x)) || (IsSpatialMean(*node) && blocked(node->input(0)))) {
        replaced.push_back(node.get());
      }
    }
    for (Node* node : replaced) {
      Node* made = nullptr;
      if (Value* x = ChannelScaleX(*node)) {
        Value* gate = node->input(node->input(0) == x ? 1 : 0);
        made = graph.AddNode("blocked_channel_scale", {x, gate}, {node->output()->type()}, {},
                             node);
      } else {
        made = graph.AddNode("blocked_spatial_mean", {node->input(0)}, {node->output()->type()},
                             {{"keepdim", GetBool(node->attrs(), "keepdim")}}, node);
      }
      made->set_placement(node->placement());
      made->set_source(node->source());
      graph.ReplaceAllUsesWith(node->output(), made->output());
      changed = true;
    }
    graph.RemoveNodesIf([&](const Node& n) {
      return std::find(replaced.begin(), replaced.end(), &n) != replaced.end();
    });
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateBlockConvLayoutPass() {
  return std::make_unique<BlockConvLayoutPass>();
}

}  // namespace tg
