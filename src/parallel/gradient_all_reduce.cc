#include "parallel/gradient_all_reduce.h"

#include <algorithm>
#include <unordered_map>

namespace tg {
namespace {

// The position of each node in the graph's order.
std::unordered_map<const Node*, size_t> Positions(const Graph& g) {
  std::unordered_map<const Node*, size_t> pos;
  for (size_t i = 0; i < g.nodes().size(); ++i) pos[g.nodes()[i].get()] = i;
  return pos;
}

}  // namespace

GradientHook GradientAllReduce(const GradientReduction& options) {
  return [options](Builder& b, const std::vector<Value*>& params,
                   const std::vector<Value*>& grads) {
    std::vector<Value*> reduced = grads;
    if (options.group_size <= 1) return reduced;
    Graph& g = b.graph();
    auto pos = Positions(g);
    auto ready = [&](Value* v) -> size_t {  // position of v's producer (inputs: before all)
      return v->producer() != nullptr ? pos.at(v->producer()) + 1 : 0;
    };
    // Backpropagation order: the gradient produced first goes into the first bucket.
    std::vector<size_t> order(grads.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t c) { return ready(grads[a]) < ready(grads[c]); });
    AttrMap attrs = {{"group_size", options.group_size},
                     {"reduction", std::string(options.mean ? "mean" : "sum")}};
    size_t i = 0;
    while (i < order.size()) {
      // A bucket: consecutive gradients of one dtype up to bucket_bytes.
      std::vector<size_t> bucket = {order[i]};
      size_t bytes = grads[order[i]]->type().bytes();
      DType dtype = grads[order[i]]->type().dtype;
      for (++i; i < order.size() && grads[order[i]]->type().dtype == dtype &&
                bytes + grads[order[i]]->type().bytes() <= options.bucket_bytes; ++i) {
        bytes += grads[order[i]]->type().bytes();
        bucket.push_back(order[i]);
      }
      // Insert right after the last producer of the bucket's gradients.
      size_t after = 0;
      for (size_t k : bucket) after = std::max(after, ready(grads[k]));
      const Node* before = after < g.nodes().size() ? g.nodes()[after].get() : nullptr;
      b.set_insertion_point(before);
      // Half gradients are combined in f32 and rounded once (collectives move f32 / f64).
      std::vector<Value*> flat;
      for (size_t k : bucket) {
        Value* grad = b.Reshape(grads[k], {grads[k]->type().numel()});
        flat.push_back(IsHalf(dtype) ? b.Cast(grad, DType::kF32) : grad);
      }
      Value* packed = flat.size() == 1 ? flat[0] : b.Op1("cat", flat, {{"axis", int64_t{0}}});
      // Started here, finished after the whole backward pass: the exchange between
      // processes overlaps the computation of the remaining gradients.
      Value* started = b.Op1("all_reduce_start", {packed}, attrs);
      b.set_insertion_point(nullptr);
      Value* sum = b.Op1("all_reduce_done", {started}, attrs);
      int64_t offset = 0;
      for (size_t k : bucket) {
        int64_t n = grads[k]->type().numel();
        Value* part = flat.size() == 1 ? sum
                                       : b.Op1("slice", {sum}, {{"axis", int64_t{0}},
                                                                {"start", offset},
                                                                {"end", offset + n},
                                                                {"step", int64_t{1}}});
        if (IsHalf(dtype)) part = b.Cast(part, dtype);
        reduced[k] = b.Reshape(part, grads[k]->type().shape);
        offset += n;
      }
      pos = Positions(g);  // the inserted nodes moved everything after them
    }
    (void)params;
    return reduced;
  };
}

}  // namespace tg
