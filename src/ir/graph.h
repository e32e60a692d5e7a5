// Graph: tilegraph's IR. A graph is a list of nodes in a valid topological (execution) order
// over SSA values. Values come from four places:
//   input      - streamed from the host, a new value every step (micro-batch data, labels);
//   hyperparam - set from the host between calls, the same for every step of a call
//                (learning rate, loss scale): changing one never recompiles;
//   variable   - persistent state that lives across steps (weights, optimizer state,
//                running statistics); a variable may get a new value per step via an update;
//   constant   - data known at compile time;
//   and node outputs.
// Outputs are what a step returns to the host. Updates say "at the end of the step, variable
// v takes the value x"; all reads in a step see the value from the start of the step.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "ir/attr.h"
#include "ir/host_tensor.h"
#include "ir/tensor_type.h"

namespace tg {

class Node;
class Graph;

enum class ValueKind { kInput, kHyperParam, kVariable, kConstant, kNodeOutput };
const char* ValueKindName(ValueKind kind);

// An SSA value. Owned by its Graph.
class Value {
 public:
  int id() const { return id_; }
  ValueKind kind() const { return kind_; }
  const TensorType& type() const { return type_; }
  void set_type(TensorType type) { type_ = std::move(type); }
  const std::string& name() const { return name_; }
  Node* producer() const { return producer_; }  // null unless kNodeOutput
  int output_index() const { return output_index_; }
  // Constant data (kConstant only).
  const HostTensor& constant() const { return *constant_; }
  // Variables: whether autodiff may compute a gradient for it (weights yes, running stats no).
  bool trainable() const { return trainable_; }
  void set_trainable(bool t) { trainable_ = t; }

 private:
  friend class Graph;
  int id_ = -1;
  ValueKind kind_ = ValueKind::kNodeOutput;
  TensorType type_;
  std::string name_;
  Node* producer_ = nullptr;
  int output_index_ = 0;
  std::shared_ptr<const HostTensor> constant_;
  bool trainable_ = false;
};

// One operation. `op` names a registered OpDef. `placement` is the device / pipeline stage
// the node runs on (0 on a single device). `source` is the user's "file:line", if known.
class Node {
 public:
  int id() const { return id_; }
  const std::string& op() const { return op_; }
  const std::vector<Value*>& inputs() const { return inputs_; }
  const std::vector<Value*>& outputs() const { return outputs_; }
  Value* input(size_t i) const { return inputs_.at(i); }
  Value* output(size_t i = 0) const { return outputs_.at(i); }
  void set_input(size_t i, Value* v) { inputs_.at(i) = v; }
  const AttrMap& attrs() const { return attrs_; }
  AttrMap& mutable_attrs() { return attrs_; }
  int placement() const { return placement_; }
  void set_placement(int p) { placement_ = p; }
  const std::string& source() const { return source_; }
  void set_source(std::string s) { source_ = std::move(s); }
  // "%h = matmul(%x, %w)" for error messages.
  std::string Describe() const;

 private:
  friend class Graph;
  int id_ = -1;
  std::string op_;
  std::vector<Value*> inputs_;
  std::vector<Value*> outputs_;
  AttrMap attrs_;
  int placement_ = 0;
  std::string source_;
};

// `variable` takes `value` at the end of the step. `on_optimizer_step`: the update leaves
// the variable unchanged except on the last micro-batch of a gradient-accumulation step
// (the optimizer's `where(apply, new, old)`); the pipelined schedule relies on it (a
// micro-batch still in flight may read the variable early: it sees the same value).
struct VariableUpdate {
  Value* variable;
  Value* value;
  bool on_optimizer_step = false;
};

// `shadow` (a variable) holds `source` (a variable) cast to the shadow's dtype at the start of
// every step: where the source is updated the program updates the shadow with the cast of the
// same value, and the runtime recasts it whenever the host writes the source. Mixed-precision
// training reads its f32 master weights in half through one (passes/half_weight_shadows.cc),
// so the weight is not cast on every step. Shadows are not the user's state: the runtime
// leaves them out of its variable names.
struct VariableShadow {
  Value* shadow;
  Value* source;
};

class Graph {
 public:
  explicit Graph(std::string name = "main") : name_(std::move(name)) {}
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  const std::string& name() const { return name_; }
  void set_name(std::string n) { name_ = std::move(n); }

  // --- construction ---
  Value* AddInput(const std::string& name, TensorType type);
  Value* AddHyperParam(const std::string& name, TensorType type);
  Value* AddVariable(const std::string& name, TensorType type, bool trainable = true);
  Value* AddConstant(HostTensor data, const std::string& name = "");
  // Appends a node (at the end, or before `before` when given). Output types are given
  // explicitly; use Builder to have them inferred by the op's infer function.
  Node* AddNode(const std::string& op, std::vector<Value*> inputs,
                std::vector<TensorType> output_types, AttrMap attrs = {},
                const Node* before = nullptr);
  void AddOutput(Value* v) { outputs_.push_back(v); }
  void SetUpdate(Value* variable, Value* value, bool on_optimizer_step = false);
  void AddShadow(Value* shadow, Value* source);

  // --- access ---
  const std::vector<Value*>& inputs() const { return inputs_; }
  const std::vector<Value*>& hyperparams() const { return hyperparams_; }
  const std::vector<Value*>& variables() const { return variables_; }
  const std::vector<Value*>& constants() const { return constants_; }
  const std::vector<std::unique_ptr<Node>>& nodes() const { return nodes_; }
  const std::vector<Value*>& outputs() const { return outputs_; }
  std::vector<Value*>& mutable_outputs() { return outputs_; }
  const std::vector<VariableUpdate>& updates() const { return updates_; }
  std::vector<VariableUpdate>& mutable_updates() { return updates_; }
  const std::vector<VariableShadow>& shadows() const { return shadows_; }
  Value* FindValue(const std::string& name) const;  // null when absent
  // Renames a value; a "_N" suffix is added when the name is taken. Returns the name given.
  const std::string& RenameValue(Value* v, const std::string& name);
  int num_values() const { return static_cast<int>(values_.size()); }

  // --- mutation used by passes ---
  // Replaces every use of `from` (node inputs, outputs, updates) by `to`.
  void ReplaceAllUsesWith(Value* from, Value* to);
  // Removes nodes for which pred is true. Their outputs must be unused.
  void RemoveNodesIf(const std::function<bool(const Node&)>& pred);
  // Reorders nodes; `order` must be a permutation of the current nodes.
  void SetNodeOrder(std::vector<Node*> order);
  // Removes constants that no node, output or update uses.
  void RemoveUnusedConstants();
  // Number of uses of each value id (node inputs + outputs + updates).
  std::vector<int> CountUses() const;

  // A deep copy with the same value names.
  std::unique_ptr<Graph> Clone() const;

 private:
  Value* NewValue(ValueKind kind, const std::string& name, TensorType type);
  std::string name_;
  std::vector<std::unique_ptr<Value>> values_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<Value*> inputs_, hyperparams_, variables_, constants_, outputs_;
  std::vector<VariableUpdate> updates_;
  std::vector<VariableShadow> shadows_;
  std::unordered_map<std::string, Value*> by_name_;
  int next_node_id_ = 0;
};

}  // namespace tg
