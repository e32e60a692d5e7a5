// Data parallelism: the gradients of a replicated training step, combined across replicas.
//
// GradientAllReduce returns the hook that AddTrainingStep (autodiff/optimizer.h) calls with
// every parameter's gradient just before the optimizer update (after gradient accumulation,
// so accumulated micro-batches are combined once per optimizer step's gradients). It packs
// the gradients into flat buckets of about `bucket_bytes` (in the order backpropagation
// produces them: the last parameters first), all-reduces each bucket with one collective,
// and slices the results back. Each bucket's all_reduce_start is inserted right after the
// last node that produces one of its gradients, its all_reduce_done after the backward
// pass: a bucket's exchange between processes overlaps the rest of the backward pass.
#pragma once

#include <functional>
#include <vector>

#include "ir/graph.h"
#include "ops/builder.h"

namespace tg {

using GradientHook =
    std::function<std::vector<Value*>(Builder&, const std::vector<Value*>& params,
                                      const std::vector<Value*>& grads)>;

struct GradientReduction {
  int64_t group_size = 1;       // replicas in all processes together
  bool mean = true;             // PopTorch's accumulationAndReplicationReductionType
  size_t bucket_bytes = 8 << 20;
};

GradientHook GradientAllReduce(const GradientReduction& options);

}  // namespace tg
