// Lowering: a verified, optimized graph -> a Program. The schedule is the graph's order.
// Three steps, one file each: AssignBuffers (buffer_assignment.h: spaces, views, in-place
// decisions, arena requests), PlanMemory (memory_plan.h: offsets), SelectKernels
// (kernel_selection.h: a kernel per node for its device's kind). What is left here binds
// the pieces: arena offsets, outputs, and the end-of-step copies of variable updates that
// could not be written in place.
#include "lowering/buffer_assignment.h"
#include "lowering/kernel_selection.h"
#include "lowering/memory_plan.h"
#include "lowering/program.h"

namespace tg {

Program Lower(std::unique_ptr<Graph> graph, const LoweringOptions& options) {
  const Graph& g = *graph;
  BufferAssignment assignment = AssignBuffers(g, options);
  MemoryPlan plan = PlanMemory(assignment.requests);
  for (auto& [value, ref] : assignment.refs) {
    if (ref.space == BufferSpace::kArena) ref.offset = plan.offsets[ref.offset];
  }
  Program program;
  program.stats = assignment.stats;
  program.stats.arena_bytes = plan.arena_bytes;
  program.stats.naive_bytes = plan.naive_bytes;
  for (size_t d = 0; d < options.device_kinds.size(); ++d) {
    std::vector<BufferRequest> mine;
    for (size_t i = 0; i < assignment.requests.size(); ++i) {
      if (assignment.request_placement[i] == static_cast<int>(d)) {
        mine.push_back(assignment.requests[i]);
      }
    }
    program.stats.device_arena_bytes.push_back(PlanMemory(mine).arena_bytes);
  }
  program.instructions = SelectKernels(g, assignment.refs, options.device_kinds);
  for (Value* out : g.outputs()) program.outputs.push_back(assignment.refs.at(out));
  for (const VariableUpdate& u : g.updates()) {
    size_t index = assignment.variable_index.at(u.variable);
    const BufferRef& from = assignment.refs.at(u.value);
    bool in_place = assignment.updated_in_place[u.variable] &&
                    from.space == BufferSpace::kVariable && from.offset == index;
    if (in_place || u.value == u.variable) continue;
    program.update_copies.push_back({index, from, u.variable->type().bytes(), u.value});
  }
  program.graph = std::move(graph);
  return program;
}

}  // namespace tg
