#include "lowering/buffer_assignment.h"

#include <algorithm>
#include <unordered_set>

#include "ops/registry.h"

namespace tg {
namespace {

constexpr int64_t kEndOfStep = 1LL << 40;

class BufferAssigner {
 public:
  BufferAssigner(const Graph& g, const LoweringOptions& options, const WeightOnlyNodes& w)
      : g_(g), options_(options), weight_only_(w) {}

  BufferAssignment Run();

 private:
  Value* Root(Value* v) const {
    auto it = out_.view_root.find(v);
    return it == out_.view_root.end() ? v : it->second;
  }
  void AssignFixedSpaces();
  void ComputeLastUses();
  bool CanUpdateVariableInPlace(Value* var, const Node& producer, size_t pos) const;
  bool TryInPlaceVariableUpdate(Value* out, const Node& n, size_t pos);
  int ReusableInput(const Node& n, const OpDef& def, Value* out, size_t pos,
                    const std::vector<bool>& taken);

  const Graph& g_;
  const LoweringOptions& options_;
  const WeightOnlyNodes& weight_only_;
  std::unordered_set<Value*> pinned_;                        // roots kept between calls
  BufferAssignment out_;
  std::unordered_map<Value*, int64_t> last_use_;             // per root value
  std::unordered_map<Value*, std::vector<int64_t>> reads_;   // per root: read positions
  std::unordered_map<Value*, int> buffer_of_;                // arena value -> request index
  std::unordered_map<Value*, Value*> update_target_;         // node output -> its variable
};

void BufferAssigner::AssignFixedSpaces() {
  for (size_t i = 0; i < g_.inputs().size(); ++i) {
    out_.refs[g_.inputs()[i]] = {BufferSpace::kInput, i};
  }
  for (size_t i = 0; i < g_.hyperparams().size(); ++i) {
    out_.refs[g_.hyperparams()[i]] = {BufferSpace::kHyperParam, i};
  }
  for (size_t i = 0; i < g_.variables().size(); ++i) {
    out_.refs[g_.variables()[i]] = {BufferSpace::kVariable, i};
    out_.variable_index[g_.variables()[i]] = i;
    out_.stats.variable_bytes += g_.variables()[i]->type().bytes();
  }
  for (size_t i = 0; i < g_.constants().size(); ++i) {
    out_.refs[g_.constants()[i]] = {BufferSpace::kConstant, i};
  }
  for (const VariableUpdate& u : g_.updates()) {
    if (u.value->kind() == ValueKind::kNodeOutput && !update_target_.count(u.value)) {
      update_target_[u.value] = u.variable;
    }
  }
}

void BufferAssigner::ComputeLastUses() {
  const auto& nodes = g_.nodes();
  const OpRegistry& reg = OpRegistry::Global();
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = *nodes[i];
    if (reg.Get(n.op()).traits.view) out_.view_root[n.output(0)] = Root(n.input(0));
    for (Value* in : n.inputs()) {
      Value* r = Root(in);
      last_use_[r] = std::max<int64_t>(last_use_[r], static_cast<int64_t>(i));
      reads_[r].push_back(static_cast<int64_t>(i));
    }
  }
  for (Value* out : g_.outputs()) {
    last_use_[Root(out)] = kEndOfStep;
    reads_[Root(out)].push_back(kEndOfStep);
  }
  for (const VariableUpdate& u : g_.updates()) last_use_[Root(u.value)] = kEndOfStep;
  for (const Value* v : weight_only_.handed_on) {
    Value* r = Root(const_cast<Value*>(v));
    if (r->kind() != ValueKind::kNodeOutput) continue;  // a view of a variable or constant
    pinned_.insert(r);
    last_use_[r] = kEndOfStep;
  }
}

bool BufferAssigner::CanUpdateVariableInPlace(Value* var, const Node& producer,
                                              size_t pos) const {
  if (!options_.inplace) return false;
  const OpDef& def = OpRegistry::Global().Get(producer.op());
  auto it = reads_.find(var);
  if (it == reads_.end()) return true;
  for (int64_t r : it->second) {
    if (r < static_cast<int64_t>(pos)) continue;
    if (r == static_cast<int64_t>(pos) && def.traits.elementwise) continue;
    return false;  // read later (or at a non-elementwise producer), or returned as an output
  }
  // Views of the variable share its root, so their reads are already in reads_[var].
  return true;
}

bool BufferAssigner::TryInPlaceVariableUpdate(Value* out, const Node& n, size_t pos) {
  auto target = update_target_.find(out);
  if (target == update_target_.end()) return false;
  Value* var = target->second;
  if (!CanUpdateVariableInPlace(var, n, pos) || out_.updated_in_place[var] || Root(out) != out ||
      last_use_[out] != kEndOfStep ||
      std::count(g_.outputs().begin(), g_.outputs().end(), out) != 0) {
    return false;
  }
  out_.refs[out] = out_.refs.at(var);
  out_.updated_in_place[var] = true;
  ++out_.stats.inplace_variable_updates;
  return true;
}

int BufferAssigner::ReusableInput(const Node& n, const OpDef& def, Value* out, size_t pos,
                                  const std::vector<bool>& taken) {
  if (!options_.inplace || !(def.traits.elementwise || def.traits.inplace_input >= 0)) return -1;
  for (size_t i = 0; i < n.inputs().size(); ++i) {
    if (!def.traits.elementwise && static_cast<int>(i) != def.traits.inplace_input) continue;
    Value* r = Root(n.input(i));
    if (taken[i] || !buffer_of_.count(r) || last_use_[r] != static_cast<int64_t>(pos)) continue;
    if (n.input(i)->type().bytes() != out->type().bytes()) continue;
    if (n.input(i)->type().dtype != out->type().dtype) continue;
    if (std::count(n.inputs().begin(), n.inputs().end(), n.input(i)) > 1) continue;
    return static_cast<int>(i);
  }
  return -1;
}

BufferAssignment BufferAssigner::Run() {
  AssignFixedSpaces();
  ComputeLastUses();
  const OpRegistry& reg = OpRegistry::Global();
  const auto& nodes = g_.nodes();
  for (size_t pos = 0; pos < nodes.size(); ++pos) {
    const Node& n = *nodes[pos];
    const OpDef& def = reg.Get(n.op());
    if (def.traits.view) {
      out_.refs[n.output(0)] = out_.refs.at(n.input(0));
      ++out_.stats.views;
      continue;
    }
    std::vector<bool> taken(n.inputs().size(), false);
    for (Value* out : n.outputs()) {
      if (TryInPlaceVariableUpdate(out, n, pos)) continue;
      const bool pinned = pinned_.count(out) != 0;
      int reuse = pinned ? -1 : ReusableInput(n, def, out, pos, taken);
      if (reuse >= 0) {
        taken[reuse] = true;
        Value* r = Root(n.input(reuse));
        int buf = buffer_of_.at(r);
        buffer_of_[out] = buf;
        out_.refs[out] = out_.refs.at(r);
        out_.requests[buf].last = std::max<int64_t>(pos, last_use_[out]);
        last_use_[r] = -1;  // the input's buffer now belongs to `out`
        ++out_.stats.inplace_reuses;
        continue;
      }
      int buf = static_cast<int>(out_.requests.size());
      // A pinned buffer is live from the step's start: the next call reads it before (and
      // without) running its producer.
      out_.requests.push_back({out->type().bytes(), pinned ? 0 : static_cast<int64_t>(pos),
                               std::max<int64_t>(pos, last_use_[out])});
      if (pinned) out_.stats.kept_weight_only_bytes += out->type().bytes();
      out_.request_placement.push_back(n.placement());
      buffer_of_[out] = buf;
      out_.refs[out] = {BufferSpace::kArena, static_cast<size_t>(buf)};
    }
  }
  out_.stats.num_buffers = static_cast<int>(out_.requests.size());
  return std::move(out_);
}

}  // namespace

BufferAssignment AssignBuffers(const Graph& graph, const LoweringOptions& options,
                               const WeightOnlyNodes& weight_only) {
  return BufferAssigner(graph, options, weight_only).Run();
}

}  // namespace tg
