#include "lowering/check_memory.h"

#include <algorithm>
#include <unordered_map>

namespace tg {
namespace {

struct Live {
  const Value* value;
  int arena;  // -1: the arena; d: device d's working arena
  size_t offset, bytes;
  int64_t def, last;
  bool def_in_place;  // its producer may write over a dying input (elementwise, inplace_input)
};

}  // namespace

std::string CheckProgramMemory(const Program& program) {
  const OpRegistry& reg = OpRegistry::Global();
  const Graph& g = *program.graph;
  const std::unordered_map<const Value*, const Value*> root = ViewRoots(g);
  auto owner = [&](const Value* v) { return root.count(v) ? root.at(v) : v; };
  std::unordered_map<const Value*, Live> live;
  const int64_t end = static_cast<int64_t>(program.instructions.size());
  for (int64_t i = 0; i < end; ++i) {
    const Instruction& inst = program.instructions[i];
    const OpTraits& traits = reg.Get(inst.node->op()).traits;
    const bool may_write_input = traits.elementwise || traits.inplace_input >= 0;
    for (size_t k = 0; k < inst.outputs.size(); ++k) {
      const BufferRef& ref = inst.outputs[k];
      if (ref.space != BufferSpace::kArena && ref.space != BufferSpace::kWorking) continue;
      const Value* v = inst.node->output(k);
      int arena = ref.space == BufferSpace::kArena ? -1 : ref.device;
      live[v] = {v, arena, ref.offset, v->type().bytes(), i, i, may_write_input};
    }
    for (const Value* in : inst.node->inputs()) {
      auto it = live.find(owner(in));
      if (it != live.end()) it->second.last = std::max(it->second.last, i);
    }
  }
  for (const Value* out : g.outputs()) {
    auto it = live.find(owner(out));
    if (it != live.end()) it->second.last = end;
  }
  for (const VariableUpdate& u : g.updates()) {
    auto it = live.find(owner(u.value));
    if (it != live.end()) it->second.last = end;
  }
  std::vector<Live> all;
  for (auto& [v, l] : live) all.push_back(l);
  for (size_t a = 0; a < all.size(); ++a) {
    for (size_t b = a + 1; b < all.size(); ++b) {
      const Live& x = all[a].def <= all[b].def ? all[a] : all[b];
      const Live& y = all[a].def <= all[b].def ? all[b] : all[a];
      bool bytes_overlap = x.arena == y.arena && x.offset < y.offset + y.bytes &&
                           y.offset < x.offset + x.bytes;
      if (!bytes_overlap || x.last < y.def) continue;
      if (x.last == y.def && y.def_in_place && x.offset == y.offset) continue;  // in place
      return "%" + x.value->name() + " (live " + std::to_string(x.def) + ".." +
             std::to_string(x.last) + ") and %" + y.value->name() + " (live " +
             std::to_string(y.def) + ".." + std::to_string(y.last) + ") share arena bytes";
    }
  }
  return "";
}

}  // namespace tg
