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
// One reader that needs NCHW (pooling, a mean, a per-channel broadcast, another device)
// keeps its whole group in NCHW.
//
// Runs last among the inference passes that create conv2d_epilogue nodes and before
// fuse-elementwise (whose fused kernels of same-shape groups stay layout-agnostic); conv2d
// nodes with no epilogue keep NCHW.
#include <numeric>
#include <unordered_map>

#include "ops/registry.h"
#include "passes/passes.h"
#include "passes/single_reader.h"

namespace tg {
namespace {

bool IsBlockableConv(const Node& n) {
  return n.op() == "conv2d_epilogue" && n.output()->type().dtype == DType::kF32;
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
    size_t ids = 0;
    for (const auto& node : graph.nodes()) {
      for (const Value* v : node->inputs()) ids = std::max<size_t>(ids, v->id() + 1);
      for (const Value* v : node->outputs()) ids = std::max<size_t>(ids, v->id() + 1);
    }
    Groups groups(ids);
    for (const auto& node : graph.nodes()) {
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
        ok = ok && IsSameShapeElementwise(*producer);
      }
      for (const Node* reader : readers.All(v)) {
        if (!ok) break;
        ok = s.Place(reader->placement());
        if (IsSameShapeElementwise(*reader)) continue;
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
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateBlockConvLayoutPass() {
  return std::make_unique<BlockConvLayoutPass>();
}

}  // namespace tg
