#include "lowering/kernel_selection.h"

#include "support/error.h"

namespace tg {

std::vector<Instruction> SelectKernels(const Graph& graph,
                                       const std::unordered_map<Value*, BufferRef>& refs,
                                       const std::vector<DeviceKind>& device_kinds) {
  const OpRegistry& reg = OpRegistry::Global();
  std::vector<Instruction> instructions;
  for (const auto& np : graph.nodes()) {
    const OpDef& def = reg.Get(np->op());
    if (def.traits.view) continue;
    Instruction inst;
    inst.node = np.get();
    try {
      int p = np->placement();
      TG_CHECK(p >= 0 && p < static_cast<int>(device_kinds.size()), kInvalidInput,
               "node placed on device ", p, ", the program has ", device_kinds.size(),
               " device(s)");
      inst.device = p;
      const KernelFactory& factory = def.KernelFor(device_kinds[p]);
      inst.kernel = AsTgError(ErrorKind::kUnsupported, "the kernel library refused this node",
                              [&] { return factory(*np); });
    } catch (Error& e) {
      e.AddContext("lowering " + np->Describe());
      throw;
    }
    for (Value* in : np->inputs()) inst.inputs.push_back(refs.at(in));
    for (Value* out : np->outputs()) inst.outputs.push_back(refs.at(out));
    instructions.push_back(std::move(inst));
  }
  return instructions;
}

}  // namespace tg
