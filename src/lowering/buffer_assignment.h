// BufferAssignment: where every value of a scheduled graph lives, before offsets are known.
//
// Inputs, hyperparameters, variables and constants live in their own spaces. Views
// (reshape) share their input's storage and extend its lifetime. Every other node output
// gets an arena buffer request (size + live interval over the schedule), except when
//   - an elementwise (or in-place-capable) node may write over an input whose buffer dies at
//     that node and has the output's size and dtype (in-place reuse), or
//   - the output is a variable's update and every read of the variable happens before the
//     producing node (or at it, by an elementwise node): it is written straight into the
//     variable (an in-place variable update).
// The weight-only values handed on to the rest of the graph (lowering/weight_only.h) are
// pinned: a buffer of their own, live over the whole step, never reused in place, so that
// they still hold their values when the next call skips the nodes computing them.
// PlanMemory (memory_plan.h) then turns the requests into offsets.
#pragma once

#include <unordered_map>
#include <vector>

#include "ir/graph.h"
#include "lowering/memory_plan.h"
#include "lowering/program.h"
#include "lowering/weight_only.h"

namespace tg {

struct BufferAssignment {
  std::unordered_map<Value*, BufferRef> refs;       // arena refs: offset is a request index
  std::unordered_map<Value*, Value*> view_root;     // view -> the value owning its storage
  std::vector<BufferRequest> requests;              // one per arena buffer
  std::vector<int> request_placement;               // the device of each buffer's producer
  std::unordered_map<Value*, bool> updated_in_place;  // variable -> update written in place
  std::unordered_map<Value*, size_t> variable_index;
  MemoryStats stats;                                // all but the planned arena figures
};

BufferAssignment AssignBuffers(const Graph& graph, const LoweringOptions& options,
                               const WeightOnlyNodes& weight_only = {});

}  // namespace tg
