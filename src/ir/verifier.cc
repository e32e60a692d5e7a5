// VerifyStructure: op-independent graph invariants (see verifier.h). Each rule below fails
// with an Internal error whose message names the rule.
#include "ir/verifier.h"

#include <string>
#include <unordered_map>
#include <unordered_set>

#include "support/error.h"

namespace tg {
namespace {

// Node::Describe() dereferences inputs; this one tolerates null inputs of broken graphs.
std::string SafeDescribe(const Node& n) {
  for (Value* v : n.inputs()) {
    if (v == nullptr) return "%? = " + n.op() + "(<null input>)";
  }
  return n.Describe();
}

[[noreturn]] void NodeFail(const Node& n, const std::string& msg) {
  Error e(ErrorKind::kInternal, msg);
  e.AddContext("in node " + SafeDescribe(n));
  throw e;
}

class StructureVerifier {
 public:
  explicit StructureVerifier(const Graph& g) : g_(g) {}

  void Run() {
    DefineAll(g_.inputs(), ValueKind::kInput);
    DefineAll(g_.hyperparams(), ValueKind::kHyperParam);
    DefineAll(g_.variables(), ValueKind::kVariable);
    DefineAll(g_.constants(), ValueKind::kConstant);
    for (Value* c : g_.constants()) {
      TG_CHECK(c->constant().type() == c->type(), kInternal, "constant %", c->name(),
               " holds data of type ", c->constant().type().ToString(), " but has type ",
               c->type().ToString());
      TG_CHECK(c->constant().bytes() == c->type().bytes(), kInternal, "constant %", c->name(),
               " holds ", c->constant().bytes(), " bytes, expected ", c->type().bytes());
    }
    // Every node output, so that a use before its definition can be told from a foreign one.
    for (const auto& n : g_.nodes()) {
      for (size_t i = 0; i < n->outputs().size(); ++i) {
        Value* v = n->output(i);
        if (v == nullptr) NodeFail(*n, "node has a null output");
        if (v->kind() != ValueKind::kNodeOutput || v->producer() != n.get() ||
            v->output_index() != static_cast<int>(i)) {
          NodeFail(*n, "output %" + v->name() + " does not record this node as its producer");
        }
        if (!all_.insert(v).second) NodeFail(*n, "value %" + v->name() + " is defined twice");
        CheckName(v);
        CheckSize(v, n.get());
      }
    }
    for (const auto& n : g_.nodes()) CheckNode(*n);
    for (Value* v : g_.outputs()) {
      TG_CHECK(v != nullptr, kInternal, "graph output is null");
      TG_CHECK(defined_.count(v), kInternal, "graph output %", v->name(),
               " is not defined in this graph");
    }
    std::unordered_set<const Value*> updated;
    for (const VariableUpdate& u : g_.updates()) {
      TG_CHECK(u.variable != nullptr && u.value != nullptr, kInternal, "update with a null value");
      TG_CHECK(u.variable->kind() == ValueKind::kVariable, kInternal, "update target %",
               u.variable->name(), " is a ", ValueKindName(u.variable->kind()),
               ", not a variable");
      TG_CHECK(defined_.count(u.variable), kInternal, "update target %", u.variable->name(),
               " is not a variable of this graph");
      TG_CHECK(defined_.count(u.value), kInternal, "update value %", u.value->name(),
               " of variable %", u.variable->name(), " is not defined in this graph");
      TG_CHECK(u.value->type() == u.variable->type(), kInternal, "update of variable %",
               u.variable->name(), " : ", u.variable->type().ToString(), " with %",
               u.value->name(), " of type ", u.value->type().ToString());
      TG_CHECK(updated.insert(u.variable).second, kInternal, "variable %", u.variable->name(),
               " is updated more than once");
    }
    std::unordered_map<const Value*, const Value*> update_of;
    for (const VariableUpdate& u : g_.updates()) update_of[u.variable] = u.value;
    std::unordered_set<const Value*> shadowed;
    for (const VariableShadow& s : g_.shadows()) CheckShadow(s, update_of, shadowed);
  }

  // A shadow is a variable of a floating dtype shaped like its source, shadowing nothing
  // else, and updated exactly when its source is.
  void CheckShadow(const VariableShadow& s,
                   const std::unordered_map<const Value*, const Value*>& update_of,
                   std::unordered_set<const Value*>& shadowed) {
    TG_CHECK(defined_.count(s.shadow) && defined_.count(s.source) &&
                 s.shadow->kind() == ValueKind::kVariable &&
                 s.source->kind() == ValueKind::kVariable && s.shadow != s.source,
             kInternal, "shadow %", s.shadow->name(), " of %", s.source->name(),
             ": both must be distinct variables of this graph");
    TG_CHECK(s.shadow->type().shape == s.source->type().shape &&
                 IsFloating(s.shadow->type().dtype) && IsFloating(s.source->type().dtype),
             kInternal, "shadow %", s.shadow->name(), " : ", s.shadow->type().ToString(),
             " cannot hold a cast of %", s.source->name(), " : ", s.source->type().ToString());
    TG_CHECK(shadowed.insert(s.shadow).second, kInternal, "variable %", s.shadow->name(),
             " shadows more than one variable");
    TG_CHECK(update_of.count(s.source) == update_of.count(s.shadow), kInternal, "shadow %",
             s.shadow->name(), " of %", s.source->name(), ": one is updated, the other is not");
  }

 private:
  void CheckName(const Value* v) {
    TG_CHECK(g_.FindValue(v->name()) == v, kInternal, "value %", v->name(),
             " is not registered under its name");
  }

  // Shapes come from text and files: no negative dims, no overflowing or absurd sizes.
  void CheckSize(const Value* v, const Node* producer) {
    try {
      v->type().CheckSize();
    } catch (Error& e) {
      e.AddContext("in the type of %" + v->name());
      if (producer != nullptr) e.AddContext("in node " + SafeDescribe(*producer));
      throw;
    }
  }

  void DefineAll(const std::vector<Value*>& values, ValueKind kind) {
    for (Value* v : values) {
      TG_CHECK(v != nullptr, kInternal, "null ", ValueKindName(kind));
      TG_CHECK(v->kind() == kind, kInternal, "value %", v->name(), " is a ",
               ValueKindName(v->kind()), " but is listed as a ", ValueKindName(kind));
      TG_CHECK(all_.insert(v).second, kInternal, "value %", v->name(), " is defined twice");
      defined_.insert(v);
      CheckName(v);
      CheckSize(v, nullptr);
    }
  }

  void CheckNode(const Node& n) {
    for (size_t i = 0; i < n.inputs().size(); ++i) {
      Value* v = n.input(i);
      if (v == nullptr) NodeFail(n, "input " + std::to_string(i) + " is null");
      if (defined_.count(v)) continue;
      if (all_.count(v)) {
        NodeFail(n, "input %" + v->name() +
                        " is used before its definition (nodes are not in topological order)");
      }
      NodeFail(n, "input %" + v->name() + " is not defined in this graph");
    }
    if (n.placement() < 0) NodeFail(n, "negative placement " + std::to_string(n.placement()));
    for (const auto& [name, attr] : n.attrs()) {
      const auto* g = std::get_if<std::shared_ptr<const Graph>>(&attr);
      if (g == nullptr) continue;
      if (*g == nullptr) NodeFail(n, "graph attribute '" + name + "' is null");
      try {
        VerifyStructure(**g);
      } catch (Error& e) {
        e.AddContext("in graph attribute '" + name + "'");
        e.AddContext("in node " + SafeDescribe(n));
        throw;
      }
    }
    for (Value* v : n.outputs()) defined_.insert(v);
  }

  const Graph& g_;
  std::unordered_set<const Value*> all_;      // every value this graph defines
  std::unordered_set<const Value*> defined_;  // defined so far in the walk
};

}  // namespace

void VerifyStructure(const Graph& graph) {
  try {
    StructureVerifier(graph).Run();
  } catch (Error& e) {
    e.AddContext("in graph " + graph.name());
    throw;
  }
}

}  // namespace tg
