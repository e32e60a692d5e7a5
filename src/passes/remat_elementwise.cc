// remat-elementwise: a cheap elementwise value that the backward reads far from where the
// forward made it is computed again next to its backward readers, when its one tensor input
// is read there anyway. The classic case is SiLU, captured as x * sigmoid(x): the forward
// wrote sigmoid(x) to memory only for silu's backward to read it back; now the backward's
// fused kernel recomputes it from the x it loads anyway, and the forward's fused kernel
// writes one tensor instead of two (two passes over an activation saved per SiLU, of the
// seven it took).
//
// A value s = f(x) qualifies when f is an elementwise, non-random op whose only tensor input
// is x (same shape as s; other inputs are one-element scalars) and that has an elementwise
// fused kernel. Its readers more than kNear schedule positions after f (another phase of the
// step) that are themselves elementwise, and near which (within kNear) some other node reads
// x, read a clone of f placed before the first of them. Runs just before fuse-elementwise,
// which then fuses each clone into its readers' kernel; nothing runs between them that would
// merge the clone back (CSE runs earlier).
#include <algorithm>
#include <unordered_map>
#include <vector>

#include "ops/registry.h"
#include "passes/passes.h"

namespace tg {
namespace {

// Schedule positions apart within which two nodes count as one phase of the step (as
// fuse-elementwise's sibling window).
constexpr int kNear = 32;

bool IsFusableElementwise(const Node& n, const OpRegistry& registry) {
  const OpDef* def = registry.Find(n.op());
  return def != nullptr && def->traits.elementwise && !def->traits.random &&
         def->elementwise.has_value() && n.outputs().size() == 1;
}

// The one tensor input of n when n is a cheap elementwise function of it, else null.
Value* RematerializableInput(const Node& n, const OpRegistry& registry) {
  if (!IsFusableElementwise(n, registry)) return nullptr;
  Value* x = nullptr;
  for (Value* in : n.inputs()) {
    if (in->type().numel() == 1) continue;
    if (x != nullptr || in->type().shape != n.output()->type().shape) return nullptr;
    x = in;
  }
  return x;
}

class RematElementwisePass : public Pass {
 public:
  std::string name() const override { return "remat-elementwise"; }

  bool Run(Graph& graph, PassContext& ctx) override {
    const OpRegistry& registry = *ctx.registry;
    std::unordered_map<const Node*, int> pos;
    std::unordered_map<const Value*, std::vector<std::pair<Node*, size_t>>> readers;
    int i = 0;
    for (const auto& node : graph.nodes()) {
      pos[node.get()] = i++;
      for (size_t k = 0; k < node->inputs().size(); ++k) {
        readers[node->input(k)].push_back({node.get(), k});
      }
    }
    std::vector<Node*> candidates;
    for (const auto& node : graph.nodes()) {
      if (RematerializableInput(*node, registry) != nullptr) candidates.push_back(node.get());
    }
    bool changed = false;
    for (Node* f : candidates) {
      Value* x = RematerializableInput(*f, registry);
      Value* s = f->output();
      // x's readers other than f, by schedule position.
      std::vector<int> x_reads;
      for (const auto& [reader, k] : readers[x]) {
        if (reader != f) x_reads.push_back(pos.at(reader));
      }
      auto x_read_near = [&](int at) {
        return std::any_of(x_reads.begin(), x_reads.end(),
                           [&](int p) { return std::abs(p - at) <= kNear; });
      };
      std::vector<std::pair<Node*, size_t>> far;
      for (const auto& [reader, k] : readers[s]) {
        const int at = pos.at(reader);
        if (at - pos.at(f) > kNear && IsFusableElementwise(*reader, registry) &&
            reader->placement() == f->placement() && x_read_near(at)) {
          far.push_back({reader, k});
        }
      }
      if (far.empty()) continue;
      Node* first = std::min_element(far.begin(), far.end(), [&](const auto& a, const auto& b) {
                      return pos.at(a.first) < pos.at(b.first);
                    })->first;
      Node* clone = graph.AddNode(f->op(), f->inputs(), {s->type()}, f->attrs(), first);
      clone->set_placement(f->placement());
      clone->set_source(f->source());
      for (const auto& [reader, k] : far) reader->set_input(k, clone->output());
      changed = true;
    }
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateRematElementwisePass() {
  return std::make_unique<RematElementwisePass>();
}

}  // namespace tg
