// LSTM op family: one layer of torch.nn.LSTM in one direction over a whole sequence, and its
// backward (kernels/cpu/lstm_kernels.h has the equations). The front end builds multi-layer
// and bidirectional LSTMs from these (python/tilegraph/_recurrent.py); one op per layer and
// direction keeps a long sequence from becoming a graph of thousands of cell ops (compile
// time) and computes every step's input projection as one product.
//   lstm_layer(x [T, B, I], h0 [B, H], c0 [B, H], w_ih [4H, I], w_hh [4H, H], bias [4H])
//     {reverse} -> (y [T, B, H], c [T, B, H], gates [T, B, 4H])
//   lstm_layer_backward(dy, dc, dgates, x, h0, c0, w_ih, w_hh, bias, y, c, gates) {reverse}
//     -> (dx, dh0, dc0, dw_ih, dw_hh, dbias)
// f32 and f64 (half values run widened, as every op that is not half-native).
#include "kernels/cpu/lstm_kernels.h"
#include "ops/builder.h"
#include "ops/dispatch.h"
#include "ops/families.h"
#include "support/error.h"

namespace tg {
namespace {

// Checks lstm_layer's six operands (starting at input `first`); returns the kernel shapes.
cpu::LstmParams CheckLayer(const InferContext& c, size_t first, const char* op) {
  const TensorType& x = c.in(first);
  TG_CHECK(x.rank() == 3 && IsFloating(x.dtype), kShape, op,
           ": expected a floating sequence x [T, B, I], got ", x.ToString());
  TG_CHECK(x.shape[0] >= 1, kShape, op, ": expected at least one time step, got ",
           x.ToString());
  const TensorType& w_hh = c.in(first + 4);
  TG_CHECK(w_hh.rank() == 2 && w_hh.shape[0] == 4 * w_hh.shape[1], kShape, op,
           ": expected w_hh [4H, H], got ", w_hh.ToString());
  cpu::LstmParams p;
  p.t = x.shape[0];
  p.b = x.shape[1];
  p.i = x.shape[2];
  p.h = w_hh.shape[1];
  p.reverse = GetBool(c.attrs, "reverse");
  const Shape state{p.b, p.h};
  const std::pair<size_t, Shape> expected[] = {{first + 1, state},
                                               {first + 2, state},
                                               {first + 3, {4 * p.h, p.i}},
                                               {first + 5, {4 * p.h}}};
  const char* names[] = {"h0", "c0", "w_ih", "bias"};
  for (size_t k = 0; k < 4; ++k) {
    const TensorType& t = c.in(expected[k].first);
    TG_CHECK(t.dtype == x.dtype && t.shape == expected[k].second, kShape, op, ": expected ",
             names[k], " of type ", TensorType{x.dtype, expected[k].second}.ToString(), ", got ",
             t.ToString());
  }
  TG_CHECK(w_hh.dtype == x.dtype, kShape, op, ": expected w_hh of dtype ",
           DTypeName(x.dtype), ", got ", w_hh.ToString());
  return p;
}

cpu::LstmParams ParamsOf(const Node& n, size_t first) {
  const Shape& x = n.input(first)->type().shape;
  return {x[0], x[1], x[2], n.input(first + 4)->type().shape[1], GetBool(n.attrs(), "reverse")};
}

template <typename T>
const T* In(const KernelArgs& a, size_t i) {
  return static_cast<const T*>(a.inputs[i]);
}
template <typename T>
T* Out(const KernelArgs& a, size_t i) {
  return static_cast<T*>(a.outputs[i]);
}

KernelFactory ForwardFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    const DType dtype = n.input(0)->type().dtype;
    auto mm = cpu::MakeLstmProducts(ParamsOf(n, 0), !reference && dtype == DType::kF32);
    return [mm, dtype](const KernelArgs& a) {
      DispatchFloat(dtype, "lstm_layer", [&](auto tag) {
        using T = decltype(tag);
        cpu::LstmForward<T>(*mm, In<T>(a, 0), In<T>(a, 1), In<T>(a, 2), In<T>(a, 3),
                            In<T>(a, 4), In<T>(a, 5), Out<T>(a, 0), Out<T>(a, 1), Out<T>(a, 2));
      });
    };
  };
}

KernelFactory BackwardFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    const DType dtype = n.input(3)->type().dtype;
    auto mm = cpu::MakeLstmProducts(ParamsOf(n, 3), !reference && dtype == DType::kF32);
    return [mm, dtype](const KernelArgs& a) {
      DispatchFloat(dtype, "lstm_layer_backward", [&](auto tag) {
        using T = decltype(tag);
        cpu::LstmBackward<T>(*mm, In<T>(a, 0), In<T>(a, 1), In<T>(a, 2), In<T>(a, 3),
                             In<T>(a, 4), In<T>(a, 5), In<T>(a, 6), In<T>(a, 7), In<T>(a, 9),
                             In<T>(a, 10), In<T>(a, 11), Out<T>(a, 0), Out<T>(a, 1),
                             Out<T>(a, 2), Out<T>(a, 3), Out<T>(a, 4), Out<T>(a, 5));
      });
    };
  };
}

// The products as GEMMs (cost models): forward, [TB, I + H] x [I + H, 4H]; the backward
// computes twice that (dx and dh; dw_ih and dw_hh).
GemmShape Products(const Node& n, size_t first, double groups) {
  const cpu::LstmParams p = ParamsOf(n, first);
  return {groups, static_cast<double>(p.t * p.b), static_cast<double>(4 * p.h),
          static_cast<double>(p.i + p.h)};
}

// ---- samples ----------------------------------------------------------------------------
OpSample LayerSample(int64_t t, int64_t b, int64_t i, int64_t h, bool reverse, bool backward,
                     double tolerance = 1e-5) {
  OpSample s;
  const TensorType seq{DType::kF32, {t, b, h}}, state{DType::kF32, {b, h}};
  if (backward) s.inputs = {seq, seq, {DType::kF32, {t, b, 4 * h}}};
  s.inputs.insert(s.inputs.end(), {{DType::kF32, {t, b, i}},
                                   state,
                                   state,
                                   {DType::kF32, {4 * h, i}},
                                   {DType::kF32, {4 * h, h}},
                                   {DType::kF32, {4 * h}}});
  if (backward) {  // the forward's results: any values serve a kernel comparison
    s.inputs.insert(s.inputs.end(), {seq, seq, {DType::kF32, {t, b, 4 * h}}});
    for (int k = 0; k < 3; ++k) s.init.push_back(InputInit::Normal());
    for (int k = 0; k < 6; ++k) s.init.push_back(InputInit::Normal());
    s.init.insert(s.init.end(), {InputInit::Normal(), InputInit::Normal(),
                                 InputInit::Uniform(0.05, 0.95)});
  }
  s.attrs = {{"reverse", reverse}};
  s.tolerance = tolerance;
  return s;
}

std::vector<OpSample> Samples(bool backward) {
  return {LayerSample(3, 2, 3, 2, false, backward), LayerSample(4, 2, 2, 3, true, backward),
          LayerSample(1, 1, 1, 1, false, backward),
          // larger: the parallel loops and oneDNN's products (kernel check only)
          [&] {
            OpSample s = LayerSample(20, 16, 32, 24, backward, backward, 1e-4);
            s.skip_grad_check = true;
            // torch.nn.LSTM's initial weights, U(-1/sqrt(H), 1/sqrt(H)): with N(0, 1)
            // weights the gradients grow ~10x a step back through 20 steps.
            const size_t first = backward ? 3 : 0;  // x's position
            if (s.init.empty()) s.init.assign(6, InputInit::Normal());
            for (size_t k : {first + 3, first + 4, first + 5})
              s.init[k] = InputInit::Uniform(-0.2, 0.2);
            return s;
          }()};
}

// ---- ops --------------------------------------------------------------------------------
void RegisterLstmLayer(OpRegistry& r) {
  OpDef d;
  d.name = "lstm_layer";
  d.num_inputs = 6;
  d.num_outputs = 3;
  d.attrs = {{"reverse", Attr(false)}};
  d.doc = "One LSTM layer in one direction over a sequence x [T, B, I] from states h0, c0: "
          "outputs y [T, B, H], cell states [T, B, H] and activated gates [T, B, 4H].";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const cpu::LstmParams p = CheckLayer(c, 0, "lstm_layer");
    const DType dt = c.in(0).dtype;
    return {{dt, {p.t, p.b, p.h}}, {dt, {p.t, p.b, p.h}}, {dt, {p.t, p.b, 4 * p.h}}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    Builder& b = g.b();
    std::vector<Value*> ins;
    for (size_t k = 0; k < 3; ++k) ins.push_back(g.GO(k) ? g.GO(k) : b.ZerosLike(g.O(k)));
    for (size_t k = 0; k < 6; ++k) ins.push_back(g.I(k));
    for (size_t k = 0; k < 3; ++k) ins.push_back(g.O(k));
    return b.Op("lstm_layer_backward", ins, g.attrs());
  };
  d.kernels[DeviceKind::kCpu] = ForwardFactory(false);
  d.kernels[DeviceKind::kReference] = ForwardFactory(true);
  d.gemm = [](const Node& n) { return Products(n, 0, 1); };
  d.flops = [](const Node& n) { return 2 * Products(n, 0, 1).macs(); };
  d.samples = Samples(false);
  r.Register(std::move(d));
}

void RegisterLstmLayerBackward(OpRegistry& r) {
  OpDef d;
  d.name = "lstm_layer_backward";
  d.num_inputs = 12;
  d.num_outputs = 6;
  d.attrs = {{"reverse", Attr(false)}};
  d.doc = "Gradients of lstm_layer w.r.t. x, h0, c0, w_ih, w_hh and bias from the gradients "
          "of its three outputs, its inputs and its outputs (backpropagation through time).";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const cpu::LstmParams p = CheckLayer(c, 3, "lstm_layer_backward");
    const DType dt = c.in(3).dtype;
    const Shape seq{p.t, p.b, p.h}, gates{p.t, p.b, 4 * p.h};
    const std::pair<size_t, Shape> expected[] = {{0, seq}, {1, seq}, {2, gates},
                                                 {9, seq}, {10, seq}, {11, gates}};
    for (const auto& [index, shape] : expected) {
      const TensorType& t = c.in(index);
      TG_CHECK(t.dtype == dt && t.shape == shape, kShape, "lstm_layer_backward: expected input ",
               index, " of type ", TensorType{dt, shape}.ToString(), ", got ", t.ToString());
    }
    std::vector<TensorType> out;
    for (size_t k = 3; k < 9; ++k) out.push_back(c.in(k));
    return out;
  };
  d.not_differentiable = true;
  d.gemm = [](const Node& n) { return Products(n, 3, 2); };
  d.flops = [](const Node& n) { return 2 * Products(n, 3, 2).macs(); };
  d.kernels[DeviceKind::kCpu] = BackwardFactory(false);
  d.kernels[DeviceKind::kReference] = BackwardFactory(true);
  d.samples = Samples(true);
  r.Register(std::move(d));
}

}  // namespace

void RegisterLstmOps(OpRegistry& r) {
  RegisterLstmLayer(r);
  RegisterLstmLayerBackward(r);
}

}  // namespace tg
