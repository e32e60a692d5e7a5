#include "tiles/half_regions.h"

namespace tg::tiles {

namespace {

bool HalfType(const TensorType& t) { return t.dtype == DType::kF16 || t.dtype == DType::kBF16; }
bool FloatType(const TensorType& t) {
  return t.dtype == DType::kF32 || t.dtype == DType::kF64 || HalfType(t);
}

}  // namespace

HalfRegions::HalfRegions(const Program& program,
                         const std::unordered_map<const Value*, const Value*>& roots)
    : roots_(roots) {
  for (const Value* v : program.graph->outputs()) outputs_.insert(v);
  // Full-precision sources: f32 / f64 variables (optimizer state kept in f32, running
  // statistics, f32 master weights). A value computed from one is full precision too; one
  // computed from half values and otherwise only from values of neither kind (constants,
  // a mask cast from integers, the loss gradient's seed) is effectively half.
  std::unordered_set<const Value*> full;
  for (const Value* v : program.graph->variables()) {
    if (FloatType(v->type()) && !HalfType(v->type())) full.insert(v);
  }
  auto root = [&](const Value* v) {
    auto r = roots_.find(v);
    return r == roots_.end() ? v : r->second;
  };
  for (const Instruction& inst : program.instructions) {
    const Node& n = *inst.node;
    bool half_inputs = false, full_inputs = false;
    for (const Value* in : n.inputs()) {
      if (!FloatType(in->type()) || in->type().numel() <= 1) continue;  // indices, scalars
      if (IsHalf(in)) half_inputs = true;
      if (full.count(root(in))) full_inputs = true;
    }
    for (const Value* out : n.outputs()) {
      if (full_inputs) {
        full.insert(out);
      } else if (half_inputs && out->type().dtype == DType::kF32) {
        widened_.insert(out);
      }
    }
  }
}

bool HalfRegions::IsHalf(const Value* v) const {
  auto r = roots_.find(v);
  if (r != roots_.end()) v = r->second;
  return HalfType(v->type()) || widened_.count(v) != 0;
}

double HalfRegions::Bytes(const Value* v) const {
  const double bytes = static_cast<double>(v->type().bytes());
  return v->type().dtype == DType::kF32 && IsHalf(v) ? bytes / 2 : bytes;
}

bool HalfRegions::IsFreeCast(const Instruction& inst) const {
  const Node& n = *inst.node;
  if (n.op() != "cast" || n.inputs().size() != 1 || n.outputs().size() != 1) return false;
  if (inst.outputs.empty() || (inst.outputs[0].space != BufferSpace::kArena &&
                               inst.outputs[0].space != BufferSpace::kWorking)) {
    return false;
  }
  return IsHalf(n.input(0)) && IsHalf(n.output(0)) && !outputs_.count(n.output(0));
}

}  // namespace tg::tiles
