#include "ops/registry.h"

#include <mutex>

#include "ops/half_widening.h"
#include "support/error.h"

namespace tg {

const OpRegistry& OpRegistry::Global() {
  static OpRegistry* registry = [] {
    auto* r = new OpRegistry();
    RegisterAllOps(*r);
    return r;
  }();
  return *registry;
}

void OpRegistry::Register(OpDef def) {
  TG_ASSERT(!def.name.empty(), "op without a name");
  TG_ASSERT(ops_.count(def.name) == 0, "op registered twice: ", def.name);
  TG_ASSERT(def.infer != nullptr, "op ", def.name, " has no infer function");
  TG_ASSERT(def.grad != nullptr || def.not_differentiable, "op ", def.name,
            " has neither a gradient nor not_differentiable");
  for (DeviceKind kind : {DeviceKind::kCpu, DeviceKind::kReference}) {
    auto it = def.kernels.find(kind);
    TG_ASSERT(it != def.kernels.end() && it->second != nullptr, "op ", def.name, " lacks a ",
              DeviceKindName(kind), " kernel");
  }
  std::string name = def.name;
  auto stored = std::make_unique<OpDef>(std::move(def));
  // Every kernel computes f16 / bf16 too: natively or widened to f32 (ops/half_widening.h).
  for (auto& [kind, factory] : stored->kernels) {
    auto native = stored->half_kernels.find(kind);
    factory = WithHalfWidening(*stored, factory,
                               native == stored->half_kernels.end() ? nullptr : native->second);
  }
  ops_[name] = std::move(stored);
}

const KernelFactory& OpDef::KernelFor(DeviceKind kind) const {
  auto it = kernels.find(KernelLibraryOf(kind));
  TG_CHECK(it != kernels.end() && it->second != nullptr, kUnsupported, "op '", name,
           "' has no kernel for ", DeviceKindName(kind), " devices");
  return it->second;
}

const OpDef* OpRegistry::Find(const std::string& name) const {
  auto it = ops_.find(name);
  return it == ops_.end() ? nullptr : it->second.get();
}

const OpDef& OpRegistry::Get(const std::string& name) const {
  const OpDef* def = Find(name);
  TG_CHECK(def != nullptr, kUnsupported, "unknown op '", name, "'");
  return *def;
}

std::vector<const OpDef*> OpRegistry::All() const {
  std::vector<const OpDef*> all;
  for (const auto& [name, def] : ops_) all.push_back(def.get());
  return all;
}

AttrMap CompleteAttrs(const OpDef& def, const AttrMap& attrs) {
  AttrMap full = attrs;
  for (const AttrSpec& spec : def.attrs) {
    if (full.count(spec.name)) continue;
    TG_CHECK(spec.default_value.has_value(), kInvalidInput, "op ", def.name,
             " requires attribute '", spec.name, "'");
    full[spec.name] = *spec.default_value;
  }
  return full;
}

std::vector<TensorType> InferTypes(const OpDef& def, const std::vector<TensorType>& inputs,
                                   const AttrMap& attrs) {
  if (def.num_inputs >= 0) {
    TG_CHECK(static_cast<int>(inputs.size()) == def.num_inputs, kInvalidInput, "op ", def.name,
             " takes ", def.num_inputs, " inputs, got ", inputs.size());
  } else {
    TG_CHECK(static_cast<int>(inputs.size()) >= def.min_inputs, kInvalidInput, "op ", def.name,
             " takes at least ", def.min_inputs, " inputs, got ", inputs.size());
  }
  InferContext ctx{inputs, attrs};
  std::vector<TensorType> out = InferWithHalfWidening(def, ctx.inputs, ctx.attrs);
  TG_ASSERT(def.num_outputs < 0 || static_cast<int>(out.size()) == def.num_outputs, "op ",
            def.name, " inferred a wrong number of outputs");
  return out;
}

}  // namespace tg
