// Lowering: a verified, optimized graph -> a Program. The schedule is the graph's order.
// Three steps, one file each: AssignBuffers (buffer_assignment.h: spaces, views, in-place
// decisions, arena requests), PlanMemory (memory_plan.h: offsets), SelectKernels
// (kernel_selection.h: a kernel per node for its device's kind). What is left here binds
// the pieces: arena offsets, outputs, the end-of-step copies of variable updates that could
// not be written in place, and which instructions are weight-only (lowering/weight_only.h).
#include "lowering/buffer_assignment.h"
#include "lowering/kernel_selection.h"
#include "lowering/memory_plan.h"
#include "lowering/program.h"
#include "lowering/weight_only.h"

namespace tg {
namespace {

// Offsets for the arena requests: one arena, or (pipelined) a slot arena for the buffers
// that cross segments plus one working arena per device for those within one segment.
void PlanArenas(BufferAssignment& assignment, const LoweringOptions& options,
                MemoryStats& stats) {
  const std::vector<BufferRequest>& requests = assignment.requests;
  const std::vector<int>& segment = options.segment_of_position;
  const int64_t positions = static_cast<int64_t>(segment.size());
  std::vector<int> home(requests.size(), -1);  // -1: the (slot) arena; d: device d's working
  for (size_t i = 0; i < requests.size() && positions > 0; ++i) {
    const BufferRequest& r = requests[i];
    if (r.last < positions && segment[r.first] == segment[r.last]) {
      home[i] = assignment.request_placement[i];
    }
  }
  auto plan_of = [&](int which) {
    std::vector<BufferRequest> mine;
    std::vector<size_t> index;
    for (size_t i = 0; i < requests.size(); ++i) {
      if (home[i] == which) {
        mine.push_back(requests[i]);
        index.push_back(i);
      }
    }
    MemoryPlan plan = PlanMemory(mine);
    std::vector<size_t> offsets(requests.size(), 0);
    for (size_t k = 0; k < index.size(); ++k) offsets[index[k]] = plan.offsets[k];
    return std::make_pair(plan, offsets);
  };
  auto [arena, arena_offsets] = plan_of(-1);
  stats.arena_bytes = arena.arena_bytes;
  stats.naive_bytes = arena.naive_bytes;  // every request is in exactly one plan
  std::vector<std::vector<size_t>> working_offsets;
  for (size_t d = 0; positions > 0 && d < options.device_kinds.size(); ++d) {
    auto [working, offsets] = plan_of(static_cast<int>(d));
    stats.device_working_bytes.push_back(working.arena_bytes);
    stats.naive_bytes += working.naive_bytes;
    working_offsets.push_back(std::move(offsets));
  }
  for (auto& [value, ref] : assignment.refs) {
    if (ref.space != BufferSpace::kArena) continue;
    size_t request = ref.offset;
    if (home[request] < 0) {
      ref.offset = arena_offsets[request];
    } else {
      ref.space = BufferSpace::kWorking;
      ref.device = home[request];
      ref.offset = working_offsets[home[request]][request];
    }
  }
}

}  // namespace

std::unordered_map<const Value*, const Value*> ViewRoots(const Graph& graph) {
  const OpRegistry& reg = OpRegistry::Global();
  std::unordered_map<const Value*, const Value*> root;
  for (const auto& n : graph.nodes()) {
    if (reg.Get(n->op()).traits.view) {
      const Value* in = n->input(0);
      root[n->output(0)] = root.count(in) ? root[in] : in;
    }
  }
  return root;
}

Program Lower(std::unique_ptr<Graph> graph, const LoweringOptions& options) {
  const Graph& g = *graph;
  WeightOnlyNodes weight_only;
  if (options.keep_weight_only && options.segment_of_position.empty()) {
    weight_only = FindWeightOnlyNodes(g);
  }
  BufferAssignment assignment = AssignBuffers(g, options, weight_only);
  Program program;
  program.stats = assignment.stats;
  PlanArenas(assignment, options, program.stats);
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
  for (Instruction& inst : program.instructions) {
    inst.weight_only = weight_only.nodes.count(inst.node) != 0;
  }
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
