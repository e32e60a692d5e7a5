// Model parallelism: explicit transfers between the devices (pipeline stages) of a program.
// InsertStageCopies gives every node that reads a value produced on another device a
// stage_copy of it on its own device (one copy per value and destination, placed right
// before its first reader there). Graph inputs, variables and constants are not copied:
// they live in host memory, which every device reads. Returns the number of copies added.
#pragma once

#include "ir/graph.h"

namespace tg {

int InsertStageCopies(Graph& graph);

}  // namespace tg

namespace tg {

// Pipeline recomputation (PopART's RecomputationType::Pipeline): every value a device
// receives from another device in the forward becomes a `checkpoint`, so that the recompute
// pass (passes/recompute.cc) recomputes each stage's activations from the stage's inputs in
// its backward instead of keeping them. Call after InsertStageCopies. Returns the number of
// checkpoints added.
int CheckpointStageInputs(Graph& graph);

}  // namespace tg
