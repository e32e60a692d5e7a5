#include "ops/op_test_util.h"

#include <cmath>
#include <limits>

#include "ops/builder.h"
#include "support/error.h"

namespace tg::testing {

std::vector<HostTensor> MakeSampleInputs(const OpSample& sample, DType float_dtype,
                                         std::mt19937_64& rng) {
  std::vector<HostTensor> inputs;
  for (size_t i = 0; i < sample.inputs.size(); ++i) {
    TensorType type = sample.inputs[i];
    if (IsFloating(type.dtype)) type.dtype = float_dtype;
    InputInit init = i < sample.init.size() ? sample.init[i] : InputInit::Normal();
    TG_CHECK(init.kind != InputInit::kValues ||
                 static_cast<int64_t>(init.values.size()) == type.numel(),
             kInternal, "sample input ", i, ": ", init.values.size(), " values for ",
             type.ToString());
    HostTensor t(type);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> uniform(init.lo, init.hi);
    for (int64_t k = 0; k < type.numel(); ++k) {
      double v = 0;
      switch (init.kind) {
        case InputInit::kNormal: v = normal(rng); break;
        case InputInit::kUniform: v = uniform(rng); break;
        case InputInit::kIntRange:
          v = std::floor(uniform(rng));
          if (v >= init.hi) v = init.hi - 1;
          break;
        case InputInit::kBool: v = (rng() & 1) ? 1.0 : 0.0; break;
        case InputInit::kValues: v = init.values[k]; break;
      }
      t.SetFromDouble(k, v);
    }
    inputs.push_back(std::move(t));
  }
  return inputs;
}

double MaxRelativeError(const HostTensor& a, const HostTensor& b) {
  if (!(a.type() == b.type())) return std::numeric_limits<double>::infinity();
  double worst = 0;
  for (int64_t i = 0; i < a.type().numel(); ++i) {
    double x = a.GetAsDouble(i), y = b.GetAsDouble(i);
    if (std::isnan(x) || std::isnan(y)) {
      if (std::isnan(x) != std::isnan(y)) return std::numeric_limits<double>::infinity();
      continue;
    }
    if (std::isinf(x) || std::isinf(y)) {
      if (x != y) return std::numeric_limits<double>::infinity();
      continue;
    }
    worst = std::max(worst, std::fabs(x - y) / (1.0 + std::fabs(y)));
  }
  return worst;
}

Node* BuildSingleOpGraph(Graph& g, const std::string& op, const std::vector<HostTensor>& inputs,
                         const AttrMap& attrs) {
  Builder b(g);
  std::vector<Value*> ins;
  for (size_t i = 0; i < inputs.size(); ++i) {
    ins.push_back(g.AddInput("in" + std::to_string(i), inputs[i].type()));
  }
  Node* n = b.OpNode(op, ins, attrs);
  for (Value* out : n->outputs()) g.AddOutput(out);
  return n;
}

}  // namespace tg::testing
