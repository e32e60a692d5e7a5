// Running an NCHW kernel on operands in the channel-blocked layout
// (kernels/cpu/channel_blocking.h): the blocked inputs are copied to NCHW, the kernel runs on
// the copies, and its blocked outputs are written back blocked. Used where no blocked loop
// exists (a few convolution kernels) and by the reference kernels of blocked ops (batch norm,
// max pooling), where the NCHW loops are an independent check of the blocked ones.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/cpu/channel_blocking.h"
#include "ops/registry.h"

namespace tg {

// One blocked operand: an input or an output of the kernel, at `index`, viewed as
// [n, c, plane] in blocks of `block` channels (0: ActivationBlock(); c: NHWC).
struct BlockedOperand {
  bool output = false;
  int index = 0;
  int64_t n = 0, c = 0, plane = 0;
  int64_t block = 0;
};

// `plain(args)` with the blocked operands of `a` (of `num_inputs` inputs and `num_outputs`
// outputs) replaced by NCHW copies.
template <typename T, typename Plain>
void RunOnPlainCopies(const KernelArgs& a, int num_inputs, int num_outputs,
                      std::span<const BlockedOperand> blocked, Plain&& plain) {
  std::vector<const void*> inputs(a.inputs, a.inputs + num_inputs);
  std::vector<void*> outputs(a.outputs, a.outputs + num_outputs);
  std::vector<std::vector<T>> copies;
  copies.reserve(blocked.size());
  for (const BlockedOperand& o : blocked) {
    copies.emplace_back(o.n * o.c * o.plane);
    if (o.output) {
      outputs[o.index] = copies.back().data();
    } else {
      cpu::Reblock(static_cast<const T*>(a.inputs[o.index]), copies.back().data(), o.n, o.c,
                   o.plane, /*to_blocked=*/false, o.block);
      inputs[o.index] = copies.back().data();
    }
  }
  plain(KernelArgs{inputs.data(), outputs.data(), a.ctx});
  for (size_t i = 0; i < blocked.size(); ++i) {
    const BlockedOperand& o = blocked[i];
    if (o.output) {
      cpu::Reblock(copies[i].data(), static_cast<T*>(a.outputs[o.index]), o.n, o.c, o.plane,
                   /*to_blocked=*/true, o.block);
    }
  }
}

}  // namespace tg
