#include "autodiff/autodiff.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "support/error.h"

namespace tg {
namespace {

// Values that depend on any of `wrt` through floating-point data flow.
std::vector<bool> ForwardReachable(const Graph& g, const std::vector<Value*>& wrt) {
  std::vector<bool> reach(g.num_values(), false);
  for (Value* w : wrt) reach[w->id()] = IsFloating(w->type().dtype);
  for (const auto& n : g.nodes()) {
    bool any = false;
    for (Value* in : n->inputs()) any |= reach[in->id()];
    if (!any) continue;
    for (Value* out : n->outputs()) reach[out->id()] = IsFloating(out->type().dtype);
  }
  return reach;
}

}  // namespace

std::vector<Value*> BuildGradients(Builder& b, Value* loss, const std::vector<Value*>& wrt,
                                   Value* seed, std::vector<bool>* has_path) {
  Graph& g = b.graph();
  TG_CHECK(IsFloating(loss->type().dtype), kInvalidInput, "loss %", loss->name(),
           " must be floating point, got ", loss->type().ToString());
  std::vector<bool> reach = ForwardReachable(g, wrt);
  const OpRegistry& registry = b.registry();

  // Snapshot the forward nodes: the backward is appended while we walk.
  std::vector<Node*> forward;
  for (const auto& n : g.nodes()) forward.push_back(n.get());

  std::unordered_map<const Value*, Value*> grads;
  // Contributions to one gradient are summed on the lowest device that produced one: the
  // backward runs through the devices in decreasing order (pipeline stages), so that sum
  // never waits for a device that runs later (a weight tied across stages gets its total
  // gradient on the first stage that uses it).
  auto device_of = [](const Value* v) { return v->producer() ? v->producer()->placement() : 0; };
  auto accumulate = [&](Value* v, Value* gv) {
    auto it = grads.find(v);
    if (it == grads.end()) {
      grads[v] = gv;
      return;
    }
    int current = b.placement();
    b.set_placement(std::min(device_of(it->second), device_of(gv)));
    it->second = b.Add(it->second, gv);
    b.set_placement(current);
  };
  b.set_placement(device_of(loss));  // the backward starts on the loss's device
  if (seed == nullptr) seed = b.Scalar(1.0, loss->type().dtype);
  accumulate(loss, b.Expand(b.Cast(seed, loss->type().dtype), loss->type().shape));

  for (auto it = forward.rbegin(); it != forward.rend(); ++it) {
    Node* n = *it;
    bool needs = false;
    for (Value* in : n->inputs()) needs |= reach[in->id()];
    std::vector<Value*> out_grads;
    bool has_grad = false;
    for (Value* out : n->outputs()) {
      auto git = grads.find(out);
      out_grads.push_back(git == grads.end() ? nullptr : git->second);
      has_grad |= git != grads.end();
    }
    if (!needs || !has_grad) continue;
    const OpDef& def = registry.Get(n->op());
    if (def.not_differentiable) {
      Fail(ErrorKind::kUnsupported, "op ", n->op(), " is not differentiable, but the loss ",
           "depends on a trainable value through it: ", n->Describe());
    }
    b.set_placement(n->placement());
    b.set_source(n->source());
    std::vector<Value*> in_grads;
    try {
      in_grads = def.grad(GradContext(b, *n, out_grads));
    } catch (Error& e) {
      e.AddContext("computing the gradient of " + n->Describe());
      throw;
    }
    TG_ASSERT(in_grads.size() == n->inputs().size(), "grad rule of ", n->op(),
              " returned ", in_grads.size(), " gradients for ", n->inputs().size(), " inputs");
    for (size_t i = 0; i < in_grads.size(); ++i) {
      Value* in = n->input(i);
      if (in_grads[i] == nullptr || !reach[in->id()]) continue;
      TG_ASSERT(in_grads[i]->type() == in->type(), "grad rule of ", n->op(), " gave input ", i,
                " a gradient of type ", in_grads[i]->type().ToString(), ", expected ",
                in->type().ToString());
      accumulate(in, in_grads[i]);
    }
  }
  b.set_source("");
  std::vector<Value*> result;
  if (has_path != nullptr) has_path->clear();
  for (Value* w : wrt) {
    auto git = grads.find(w);
    result.push_back(git != grads.end() ? git->second : b.ZerosLike(w));
    if (has_path != nullptr) has_path->push_back(git != grads.end());
  }
  return result;
}

}  // namespace tg
