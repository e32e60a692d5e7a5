#include "ir/graph.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "support/error.h"

namespace tg {

const char* ValueKindName(ValueKind kind) {
  switch (kind) {
    case ValueKind::kInput: return "input";
    case ValueKind::kHyperParam: return "hyperparam";
    case ValueKind::kVariable: return "variable";
    case ValueKind::kConstant: return "const";
    case ValueKind::kNodeOutput: return "node output";
  }
  return "?";
}

std::string Node::Describe() const {
  std::string s;
  for (size_t i = 0; i < outputs_.size(); ++i) s += (i ? ", %" : "%") + outputs_[i]->name();
  s += " = " + op_ + "(";
  for (size_t i = 0; i < inputs_.size(); ++i) s += (i ? ", %" : "%") + inputs_[i]->name();
  s += ")";
  if (!source_.empty()) s += " from " + source_;
  return s;
}

Value* Graph::NewValue(ValueKind kind, const std::string& name, TensorType type) {
  auto v = std::make_unique<Value>();
  v->id_ = static_cast<int>(values_.size());
  v->kind_ = kind;
  v->type_ = std::move(type);
  values_.push_back(std::move(v));
  Value* raw = values_.back().get();
  RenameValue(raw, name.empty() ? "v" + std::to_string(raw->id_) : name);
  return raw;
}

Value* Graph::FindValue(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const std::string& Graph::RenameValue(Value* v, const std::string& name) {
  auto it = by_name_.find(v->name_);
  if (it != by_name_.end() && it->second == v) by_name_.erase(it);
  std::string unique = name;
  for (int k = 1; by_name_.count(unique) != 0; ++k) unique = name + "_" + std::to_string(k);
  v->name_ = unique;
  by_name_[unique] = v;
  return v->name_;
}

Value* Graph::AddInput(const std::string& name, TensorType type) {
  Value* v = NewValue(ValueKind::kInput, name, std::move(type));
  inputs_.push_back(v);
  return v;
}

Value* Graph::AddHyperParam(const std::string& name, TensorType type) {
  Value* v = NewValue(ValueKind::kHyperParam, name, std::move(type));
  hyperparams_.push_back(v);
  return v;
}

Value* Graph::AddVariable(const std::string& name, TensorType type, bool trainable) {
  Value* v = NewValue(ValueKind::kVariable, name, std::move(type));
  v->trainable_ = trainable;
  variables_.push_back(v);
  return v;
}

Value* Graph::AddConstant(HostTensor data, const std::string& name) {
  Value* v = NewValue(ValueKind::kConstant, name, data.type());
  v->constant_ = std::make_shared<const HostTensor>(std::move(data));
  constants_.push_back(v);
  return v;
}

Node* Graph::AddNode(const std::string& op, std::vector<Value*> inputs,
                     std::vector<TensorType> output_types, AttrMap attrs, const Node* before) {
  auto n = std::make_unique<Node>();
  n->id_ = next_node_id_++;
  n->op_ = op;
  n->inputs_ = std::move(inputs);
  n->attrs_ = std::move(attrs);
  for (size_t i = 0; i < output_types.size(); ++i) {
    Value* out = NewValue(ValueKind::kNodeOutput, "", std::move(output_types[i]));
    out->producer_ = n.get();
    out->output_index_ = static_cast<int>(i);
    n->outputs_.push_back(out);
  }
  Node* raw = n.get();
  if (before == nullptr) {
    nodes_.push_back(std::move(n));
  } else {
    auto it = std::find_if(nodes_.begin(), nodes_.end(),
                           [&](const std::unique_ptr<Node>& p) { return p.get() == before; });
    TG_ASSERT(it != nodes_.end(), "insertion point not in graph");
    nodes_.insert(it, std::move(n));
  }
  return raw;
}

void Graph::SetUpdate(Value* variable, Value* value, bool on_optimizer_step) {
  TG_CHECK(variable->kind() == ValueKind::kVariable, kInvalidInput, "update target %",
           variable->name(), " is not a variable");
  for (VariableUpdate& u : updates_) {
    if (u.variable == variable) {
      u.value = value;
      u.on_optimizer_step = on_optimizer_step;
      return;
    }
  }
  updates_.push_back({variable, value, on_optimizer_step});
}

void Graph::AddShadow(Value* shadow, Value* source) {
  TG_CHECK(shadow->kind() == ValueKind::kVariable && source->kind() == ValueKind::kVariable,
           kInvalidInput, "shadow %", shadow->name(), " of %", source->name(),
           ": both must be variables");
  shadows_.push_back({shadow, source});
}

void Graph::ReplaceAllUsesWith(Value* from, Value* to) {
  for (auto& n : nodes_) {
    for (Value*& in : n->inputs_) {
      if (in == from) in = to;
    }
  }
  for (Value*& out : outputs_) {
    if (out == from) out = to;
  }
  for (VariableUpdate& u : updates_) {
    if (u.value == from) u.value = to;
  }
}

void Graph::RemoveNodesIf(const std::function<bool(const Node&)>& pred) {
  nodes_.erase(std::remove_if(nodes_.begin(), nodes_.end(),
                              [&](const std::unique_ptr<Node>& n) { return pred(*n); }),
               nodes_.end());
}

void Graph::SetNodeOrder(std::vector<Node*> order) {
  TG_ASSERT(order.size() == nodes_.size(), "node order is not a permutation");
  std::unordered_map<Node*, std::unique_ptr<Node>> owned;
  for (auto& n : nodes_) owned[n.get()] = std::move(n);
  nodes_.clear();
  for (Node* n : order) {
    auto it = owned.find(n);
    TG_ASSERT(it != owned.end() && it->second, "node order is not a permutation");
    nodes_.push_back(std::move(it->second));
  }
}

std::vector<int> Graph::CountUses() const {
  std::vector<int> uses(values_.size(), 0);
  for (const auto& n : nodes_) {
    for (Value* in : n->inputs_) ++uses[in->id()];
  }
  for (Value* out : outputs_) ++uses[out->id()];
  for (const VariableUpdate& u : updates_) ++uses[u.value->id()];
  return uses;
}

void Graph::RemoveUnusedConstants() {
  std::vector<int> uses = CountUses();
  constants_.erase(std::remove_if(constants_.begin(), constants_.end(),
                                  [&](Value* c) { return uses[c->id()] == 0; }),
                   constants_.end());
}

std::unique_ptr<Graph> Graph::Clone() const {
  auto g = std::make_unique<Graph>(name_);
  std::unordered_map<const Value*, Value*> map;
  auto copy_value = [&](const Value* v, Value* nv) { map[v] = nv; };
  for (Value* v : inputs_) copy_value(v, g->AddInput(v->name_, v->type_));
  for (Value* v : hyperparams_) copy_value(v, g->AddHyperParam(v->name_, v->type_));
  for (Value* v : variables_) copy_value(v, g->AddVariable(v->name_, v->type_, v->trainable_));
  for (Value* v : constants_) {
    Value* nv = g->NewValue(ValueKind::kConstant, v->name_, v->type_);
    nv->constant_ = v->constant_;
    g->constants_.push_back(nv);
    copy_value(v, nv);
  }
  for (const auto& n : nodes_) {
    std::vector<Value*> ins;
    for (Value* in : n->inputs_) ins.push_back(map.at(in));
    std::vector<TensorType> types;
    for (Value* out : n->outputs_) types.push_back(out->type_);
    Node* nn = g->AddNode(n->op_, std::move(ins), std::move(types), n->attrs_);
    nn->placement_ = n->placement_;
    nn->source_ = n->source_;
    for (size_t i = 0; i < n->outputs_.size(); ++i) map[n->outputs_[i]] = nn->outputs_[i];
  }
  // Give every value its original name: first move auto-names out of the way.
  for (auto& [old, nv] : map) g->RenameValue(nv, "\x01" + std::to_string(nv->id_));
  for (auto& [old, nv] : map) g->RenameValue(nv, old->name_);
  for (Value* v : outputs_) g->outputs_.push_back(map.at(v));
  for (const VariableUpdate& u : updates_) g->updates_.push_back({map.at(u.variable), map.at(u.value), u.on_optimizer_step});
  for (const VariableShadow& s : shadows_) {
    g->shadows_.push_back({map.at(s.shadow), map.at(s.source)});
  }
  return g;
}

}  // namespace tg
