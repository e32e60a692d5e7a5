// The IR text format. PrintGraph and ParseGraph round-trip: Parse(Print(g)) prints the same.
//
//   graph mlp {
//     input %x : f32[4,8]
//     hyperparam %lr : f32[]
//     variable %w : f32[8,16]                       (trainable; "variable(frozen)" if not)
//     const %c : f32[2] = [0.5, 1]
//     %h = matmul(%x, %w) {transpose_b = false} : f32[4,16]
//     %y, %m = some_op(%h) {axes = [1], eps = 1e-05, dtype = f32} : f32[4,16], f32[4] @1 loc("m.py:3")
//     output %h
//     update %w = %w_new
//   }
//
// Attribute values: ints (42), floats (always with '.', 'e', "inf" or "nan"), true/false,
// strings ("..."), int lists ([1, 2]), float lists ([1.0, 2.5]), dtypes (f32), nested graphs
// (graph name { ... }). `@N` is the node's placement (omitted when 0); loc("...") its source.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "ir/graph.h"

namespace tg {

std::string PrintGraph(const Graph& graph);
std::string PrintAttr(const Attr& attr);

// Throws Error(kParse) with "line:column: message" on malformed text; never crashes.
std::unique_ptr<Graph> ParseGraph(std::string_view text);

}  // namespace tg
