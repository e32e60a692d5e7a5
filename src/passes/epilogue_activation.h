// The activations an epilogue-fusion pass can fold into the node before them, by the name
// the fused ops' "activation" attribute takes (kernels/cpu/activation.h).
#pragma once

#include <string>

#include "ir/graph.h"

namespace tg {

// "relu", "silu", "sigmoid", "hardswish", "gelu" or "gelu_tanh" for a node applying one of
// them; "" for any other node.
inline std::string EpilogueActivationOf(const Node& n) {
  for (const char* name : {"relu", "silu", "sigmoid", "hardswish"}) {
    if (n.op() == name) return name;
  }
  if (n.op() == "gelu") {
    const std::string& mode = GetString(n.attrs(), "approximate");
    return mode == "tanh" ? "gelu_tanh" : mode == "none" ? "gelu" : "";
  }
  return "";
}

}  // namespace tg
