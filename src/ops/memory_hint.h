// PopTorch's set_available_memory(t, p) as IR: the dense op (matmul, convolution, attention:
// an OpDef with a `gemm` hook) that produces t, looking back through what follows it (bias
// add, activation, casts, views), carries the attribute available_memory_proportion = p.
// The IPU Model's GEMM planner then bounds that op's temporaries by p of a tile instead of
// the IPU's proportion (Options.setAvailableMemoryProportion). Other devices ignore it. The
// passes that rebuild a dense op (fold-transpose, the epilogue fusions) keep its attributes.
#pragma once

#include "ir/graph.h"

namespace tg {

inline constexpr const char* kAvailableMemoryAttr = "available_memory_proportion";

// Sets the hint on the dense op producing `v` and returns it; null when there is none.
Node* HintAvailableMemory(Value* v, double proportion);

}  // namespace tg
