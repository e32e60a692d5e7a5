// stream-update-stores: marks the outputs of fused elementwise kernels that nothing in the
// step reads, only a variable update, and that the kernel writes to a buffer of their own:
// mixed precision's half weight shadows, written by each parameter's optimizer update and
// read by the next step's forward. When the step's variables are larger than any cache
// (kStreamingMinVariableBytes), that next read comes from memory whatever the store did, so
// the kernel writes these outputs with non-temporal stores (`streaming_stores`, see
// kernels/cpu/fused_jit.h): no read for ownership of lines about to be overwritten whole, and
// no eviction of the step's working set. The update itself measured 13.8 -> 10.5 ms for a
// 24M-parameter SGD-momentum update with a bf16 shadow (2 cores). A variable the node also
// reads is updated in place (its lines are in cache when written; streaming them measured
// slower): not marked. Values are unchanged; only where the bytes go.
#include <unordered_map>
#include <unordered_set>

#include "passes/passes.h"
#include "passes/single_reader.h"

namespace tg {
namespace {

// Variables past this many bytes in all (weights, optimizer state, shadows) do not stay in
// the caches of the CPUs we run on from one step to the next.
constexpr int64_t kStreamingMinVariableBytes = int64_t{64} << 20;
// Outputs below this stay plain stores: streaming is for bulk data.
constexpr int64_t kStreamingMinOutputBytes = int64_t{64} << 10;

class StreamUpdateStoresPass : public Pass {
 public:
  std::string name() const override { return "stream-update-stores"; }

  bool Run(Graph& graph, PassContext&) override {
    int64_t variable_bytes = 0;
    for (const Value* v : graph.variables()) variable_bytes += v->type().bytes();
    if (variable_bytes < kStreamingMinVariableBytes) return false;
    std::unordered_map<const Value*, const Value*> variable_of;  // update value -> variable
    for (const VariableUpdate& u : graph.updates()) variable_of[u.value] = u.variable;
    const SingleReaders readers(graph);
    bool changed = false;
    for (const auto& node : graph.nodes()) {
      if (node->op() != "fused_elementwise") continue;
      const std::unordered_set<const Value*> inputs(node->inputs().begin(),
                                                    node->inputs().end());
      std::vector<int64_t> streamed;
      for (size_t o = 0; o < node->outputs().size(); ++o) {
        const Value* out = node->output(o);
        auto it = variable_of.find(out);
        if (it == variable_of.end() || readers.uses(out) != 1 || inputs.count(it->second) ||
            out->type().bytes() < kStreamingMinOutputBytes) {
          continue;
        }
        streamed.push_back(static_cast<int64_t>(o));
      }
      if (streamed.empty()) continue;
      AttrMap& attrs = node->mutable_attrs();
      auto old = attrs.find("streaming_stores");
      if (old != attrs.end() && AttrEquals(old->second, Attr(streamed))) continue;
      attrs["streaming_stores"] = streamed;
      changed = true;
    }
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> CreateStreamUpdateStoresPass() {
  return std::make_unique<StreamUpdateStoresPass>();
}

}  // namespace tg
