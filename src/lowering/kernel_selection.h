// Kernel selection: one instruction per non-view node, its kernel built by the op's factory
// for the kind of device the node is placed on (LoweringOptions::device_kinds, indexed by
// Node::placement()), its operands bound to the buffers of a BufferAssignment.
#pragma once

#include <vector>

#include "ir/graph.h"
#include "lowering/program.h"

namespace tg {

std::vector<Instruction> SelectKernels(const Graph& graph,
                                       const std::unordered_map<Value*, BufferRef>& refs,
                                       const std::vector<DeviceKind>& device_kinds);

}  // namespace tg
