// Lowering: schedule (the graph's order), liveness, in-place decisions and the arena plan.
//
// Liveness is tracked per arena buffer. Views (reshape) share their input's storage and
// extend its lifetime. An elementwise node may write an output over an input's buffer when
// that input's buffer is last read by this node and has the same byte size. A variable
// update is written straight into the variable when every read of the variable happens
// before the producing node (or at it, by an elementwise node reading the same shape).
#include <algorithm>
#include <unordered_map>

#include "lowering/memory_plan.h"
#include "lowering/program.h"
#include "support/error.h"

namespace tg {
namespace {

constexpr int64_t kEndOfStep = 1LL << 40;

class Lowerer {
 public:
  Lowerer(Graph& g, const LoweringOptions& options) : g_(g), options_(options) {}

  Program Run(std::unique_ptr<Graph> owned);

 private:
  // Index of each value's storage owner after following views.
  Value* Root(Value* v) const { return root_.count(v) ? root_.at(v) : v; }
  void ComputeLastUses();
  bool CanUpdateVariableInPlace(Value* var, const Node* producer, size_t pos) const;
  BufferRef RefFor(Value* v) const { return refs_.at(v); }

  Graph& g_;
  const LoweringOptions& options_;
  std::unordered_map<Value*, Value*> root_;
  std::unordered_map<Value*, int64_t> last_use_;  // per root value
  std::unordered_map<Value*, std::vector<int64_t>> reads_;  // per root: read positions
  std::unordered_map<Value*, BufferRef> refs_;
  std::unordered_map<Value*, int> buffer_of_;  // arena value -> request index
  std::vector<BufferRequest> requests_;
};

void Lowerer::ComputeLastUses() {
  const auto& nodes = g_.nodes();
  const OpRegistry& reg = OpRegistry::Global();
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = *nodes[i];
    if (reg.Get(n.op()).traits.view) root_[n.output(0)] = Root(n.input(0));
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
}

bool Lowerer::CanUpdateVariableInPlace(Value* var, const Node* producer, size_t pos) const {
  if (!options_.inplace) return false;
  const OpDef& def = OpRegistry::Global().Get(producer->op());
  auto it = reads_.find(var);
  if (it == reads_.end()) return true;
  for (int64_t r : it->second) {
    if (r < static_cast<int64_t>(pos)) continue;
    if (r == static_cast<int64_t>(pos) && def.traits.elementwise) continue;
    return false;  // read later (or at a non-elementwise producer), or returned as an output
  }
  // Any view of the variable read at the producer would alias too: views share the root,
  // so their reads are already in reads_[var].
  return true;
}

Program Lowerer::Run(std::unique_ptr<Graph> owned) {
  const OpRegistry& reg = OpRegistry::Global();
  Program program;
  for (size_t i = 0; i < g_.inputs().size(); ++i) refs_[g_.inputs()[i]] = {BufferSpace::kInput, i};
  for (size_t i = 0; i < g_.hyperparams().size(); ++i) {
    refs_[g_.hyperparams()[i]] = {BufferSpace::kHyperParam, i};
  }
  std::unordered_map<Value*, size_t> var_index;
  for (size_t i = 0; i < g_.variables().size(); ++i) {
    refs_[g_.variables()[i]] = {BufferSpace::kVariable, i};
    var_index[g_.variables()[i]] = i;
    program.stats.variable_bytes += g_.variables()[i]->type().bytes();
  }
  for (size_t i = 0; i < g_.constants().size(); ++i) {
    refs_[g_.constants()[i]] = {BufferSpace::kConstant, i};
  }
  ComputeLastUses();

  // Which node output feeds which variable update (candidates for in-place updates).
  std::unordered_map<Value*, Value*> update_target;
  for (const VariableUpdate& u : g_.updates()) {
    if (u.value->kind() == ValueKind::kNodeOutput && !update_target.count(u.value)) {
      update_target[u.value] = u.variable;
    }
  }
  std::unordered_map<Value*, bool> updated_in_place;

  const auto& nodes = g_.nodes();
  for (size_t pos = 0; pos < nodes.size(); ++pos) {
    Node& n = *nodes[pos];
    const OpDef& def = reg.Get(n.op());
    if (def.traits.view) {
      refs_[n.output(0)] = refs_.at(n.input(0));
      ++program.stats.views;
      continue;
    }
    std::vector<bool> input_taken(n.inputs().size(), false);
    for (Value* out : n.outputs()) {
      auto target = update_target.find(out);
      if (target != update_target.end() &&
          CanUpdateVariableInPlace(target->second, &n, pos) &&
          !updated_in_place[target->second] && Root(out) == out && last_use_[out] == kEndOfStep &&
          std::count(g_.outputs().begin(), g_.outputs().end(), out) == 0) {
        refs_[out] = refs_.at(target->second);
        updated_in_place[target->second] = true;
        ++program.stats.inplace_variable_updates;
        continue;
      }
      int reuse = -1;
      if (options_.inplace && (def.traits.elementwise || def.traits.inplace_input >= 0)) {
        for (size_t i = 0; i < n.inputs().size(); ++i) {
          if (!def.traits.elementwise && static_cast<int>(i) != def.traits.inplace_input) continue;
          Value* r = Root(n.input(i));
          if (input_taken[i] || !buffer_of_.count(r) || last_use_[r] != static_cast<int64_t>(pos)) continue;
          if (n.input(i)->type().bytes() != out->type().bytes()) continue;
          if (n.input(i)->type().dtype != out->type().dtype) continue;
          bool used_twice = std::count(n.inputs().begin(), n.inputs().end(), n.input(i)) > 1;
          if (used_twice) continue;
          reuse = static_cast<int>(i);
          break;
        }
      }
      if (reuse >= 0) {
        input_taken[reuse] = true;
        Value* r = Root(n.input(reuse));
        int buf = buffer_of_.at(r);
        buffer_of_[out] = buf;
        refs_[out] = refs_.at(r);
        requests_[buf].last = std::max<int64_t>(pos, last_use_[out]);
        last_use_[r] = -1;  // the input's buffer now belongs to `out`
        ++program.stats.inplace_reuses;
        continue;
      }
      int buf = static_cast<int>(requests_.size());
      requests_.push_back({out->type().bytes(), static_cast<int64_t>(pos),
                           std::max<int64_t>(pos, last_use_[out])});
      buffer_of_[out] = buf;
      refs_[out] = {BufferSpace::kArena, 0};
    }
  }

  MemoryPlan plan = PlanMemory(requests_);
  for (auto& [v, buf] : buffer_of_) {
    if (refs_[v].space == BufferSpace::kArena) refs_[v].offset = plan.offsets[buf];
  }
  // Views of arena values were recorded before offsets were known: resolve through roots.
  for (auto& [v, r] : root_) refs_[v] = refs_.at(r);
  program.stats.arena_bytes = plan.arena_bytes;
  program.stats.naive_bytes = plan.naive_bytes;
  program.stats.num_buffers = static_cast<int>(requests_.size());

  for (const auto& np : nodes) {
    const OpDef& def = reg.Get(np->op());
    if (def.traits.view) continue;
    Instruction inst;
    inst.node = np.get();
    try {
      inst.kernel = AsTgError(ErrorKind::kUnsupported, "the kernel library refused this node",
                              [&] { return def.cpu_kernel(*np); });
    } catch (Error& e) {
      e.AddContext("lowering " + np->Describe());
      throw;
    }
    for (Value* in : np->inputs()) inst.inputs.push_back(refs_.at(in));
    for (Value* out : np->outputs()) inst.outputs.push_back(refs_.at(out));
    program.instructions.push_back(std::move(inst));
  }
  for (Value* out : g_.outputs()) program.outputs.push_back(refs_.at(out));
  for (const VariableUpdate& u : g_.updates()) {
    if (updated_in_place[u.variable] && refs_.at(u.value).space == BufferSpace::kVariable &&
        refs_.at(u.value).offset == var_index.at(u.variable)) {
      continue;
    }
    if (u.value == u.variable) continue;
    program.update_copies.push_back({var_index.at(u.variable), refs_.at(u.value),
                                     u.variable->type().bytes()});
  }
  program.graph = std::move(owned);
  return program;
}

}  // namespace

Program Lower(std::unique_ptr<Graph> graph, const LoweringOptions& options) {
  Graph& g = *graph;
  Lowerer lowerer(g, options);
  return lowerer.Run(std::move(graph));
}

}  // namespace tg
