// Pipelined execution: how one micro-batch crosses the devices (pipeline stages), and
// whether a program can run with several micro-batches in flight.
//
// A program placed on S devices splits into 2S segments, run in this order for every
// micro-batch: the forward part of device 0, 1, ..., S-1 (nodes that are ancestors of a
// graph output), then the rest (backward, gradient accumulation, updates) of device S-1,
// ..., 0. The pipelined schedule (runtime/pipeline.h) runs each device's segments on its
// own thread, different devices on different micro-batches at once.
//
// That is the program's meaning only if
//   - every node reads values of its own or earlier segments (data flows forward through
//     the devices, then back);
//   - every variable a micro-batch updates (an accumulator, a counter, running statistics)
//     is read only by the segment that updates it (another device, or a later micro-batch
//     already in flight, would see it at the wrong time), unless the update is marked
//     on_optimizer_step (it changes the variable only on the last micro-batch of the step,
//     after which no micro-batch of the step is left to read it) and its readers come no
//     later than the update.
#pragma once

#include <string>
#include <unordered_map>

#include "ir/graph.h"

namespace tg {

struct PipelineSegments {
  int stages = 1;
  std::unordered_map<const Node*, int> segment;  // node -> 0 .. 2*stages-1
  std::string why_not;  // empty: pipelining keeps the program's meaning; else the reason
};

// The segment of every node of `graph`, placed on `stages` devices, and whether the program
// can be pipelined.
PipelineSegments FindPipelineSegments(const Graph& graph, int stages);

// Orders the nodes of `graph` segment by segment (stable within a segment) when it can be
// pipelined; returns the segments (why_not set, graph untouched, when it cannot).
PipelineSegments OrderForPipeline(Graph& graph, int stages);

}  // namespace tg
