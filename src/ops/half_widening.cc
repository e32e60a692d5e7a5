#include "ops/half_widening.h"

#include <memory>

#include "kernels/cpu/cast_kernels.h"
#include "support/error.h"

namespace tg {

namespace {
cpu::ElemType Elem(DType d) { return static_cast<cpu::ElemType>(d); }

std::vector<TensorType> TypesOf(const std::vector<Value*>& values) {
  std::vector<TensorType> types;
  for (const Value* v : values) types.push_back(v->type());
  return types;
}

// The half dtype a node computes in, when it reads or writes one.
std::optional<DType> NodeHalf(const Node& n) {
  std::vector<TensorType> all = TypesOf(n.inputs());
  for (const TensorType& t : TypesOf(n.outputs())) all.push_back(t);
  return UniformHalf(all);
}

// The calling thread's f32 scratch for operand `slot` of a widened kernel, at least `numel`
// floats: grown when needed, never zeroed, kept between calls. A std::vector per call
// allocated and zeroed fresh pages every time (above malloc's mmap threshold, freed back to
// the kernel after the call): EfficientNet-B0's bf16 training step took ~6,000 page faults.
float* Scratch(size_t slot, int64_t numel) {
  struct Buffer {
    std::unique_ptr<float[]> data;
    int64_t size = 0;
  };
  static thread_local std::vector<Buffer> buffers;
  if (buffers.size() <= slot) buffers.resize(slot + 1);
  Buffer& b = buffers[slot];
  if (b.size < numel) {
    b.data.reset(new float[static_cast<size_t>(numel)]);
    b.size = numel;
  }
  return b.data.get();
}

// The f32 kernel of a half node between conversions. The node is rebuilt with f32 types in
// a private graph that lives as long as the kernel (factories may keep references).
Kernel WidenedKernel(const KernelFactory& inner, const Node& n, DType half) {
  auto shadow = std::make_shared<Graph>("widened");
  std::vector<Value*> inputs;
  std::vector<TensorType> in_types = WidenTypes(TypesOf(n.inputs()), half);
  for (size_t i = 0; i < in_types.size(); ++i) {
    inputs.push_back(shadow->AddInput("in" + std::to_string(i), in_types[i]));
  }
  Node* wide = shadow->AddNode(n.op(), inputs, WidenTypes(TypesOf(n.outputs()), half), n.attrs());
  wide->set_placement(n.placement());
  wide->set_source(n.source());
  Kernel kernel = inner(*wide);
  struct Operand {
    bool convert;
    int64_t numel;
  };
  std::vector<Operand> ins, outs;
  for (Value* v : n.inputs()) ins.push_back({v->type().dtype == half, v->type().numel()});
  for (Value* v : n.outputs()) outs.push_back({v->type().dtype == half, v->type().numel()});
  const cpu::ElemType h = Elem(half), f = cpu::ElemType::kF32;
  return [shadow, kernel, ins, outs, h, f](const KernelArgs& a) {
    std::vector<const void*> in_ptrs(ins.size());
    std::vector<void*> out_ptrs(outs.size());
    for (size_t i = 0; i < ins.size(); ++i) {
      in_ptrs[i] = a.inputs[i];
      if (!ins[i].convert) continue;
      float* wide = Scratch(i, ins[i].numel);
      cpu::CastBuffer(a.inputs[i], h, wide, f, ins[i].numel);
      in_ptrs[i] = wide;
    }
    for (size_t i = 0; i < outs.size(); ++i) {
      out_ptrs[i] = a.outputs[i];
      if (outs[i].convert) out_ptrs[i] = Scratch(ins.size() + i, outs[i].numel);
    }
    kernel(KernelArgs{in_ptrs.data(), out_ptrs.data(), a.ctx});
    for (size_t i = 0; i < outs.size(); ++i) {
      if (outs[i].convert) cpu::CastBuffer(out_ptrs[i], f, a.outputs[i], h, outs[i].numel);
    }
  };
}
}  // namespace

std::optional<DType> UniformHalf(const std::vector<TensorType>& types) {
  std::optional<DType> half;
  for (const TensorType& t : types) {
    if (!IsFloating(t.dtype)) continue;
    if (!IsHalf(t.dtype) || (half && *half != t.dtype)) return std::nullopt;
    half = t.dtype;
  }
  return half;
}

std::vector<TensorType> WidenTypes(std::vector<TensorType> types, DType half) {
  for (TensorType& t : types) {
    if (t.dtype == half) t.dtype = DType::kF32;
  }
  return types;
}

std::vector<TensorType> NarrowTypes(std::vector<TensorType> types, DType half) {
  for (TensorType& t : types) {
    if (t.dtype == DType::kF32) t.dtype = half;
  }
  return types;
}

std::vector<TensorType> InferWithHalfWidening(const OpDef& def,
                                              const std::vector<TensorType>& inputs,
                                              const AttrMap& attrs) {
  std::optional<DType> half = UniformHalf(inputs);
  if (!half || def.traits.half_native) return def.infer(InferContext{inputs, attrs});
  std::vector<TensorType> wide = WidenTypes(inputs, *half);
  std::vector<TensorType> out;
  try {
    out = def.infer(InferContext{wide, attrs});
  } catch (const Error&) {
    def.infer(InferContext{inputs, attrs});  // its error names the half types the user wrote
    throw;
  }
  return NarrowTypes(std::move(out), *half);
}

KernelFactory WithHalfWidening(const OpDef& def, KernelFactory inner, KernelFactory native) {
  return [&def, inner, native](const Node& n) -> Kernel {
    std::optional<DType> half = NodeHalf(n);
    if (!half) return inner(n);
    if (def.traits.half_native) return inner(n);
    if (native) {
      if (Kernel k = native(n)) return k;
    }
    return WidenedKernel(inner, n, *half);
  };
}

}  // namespace tg
