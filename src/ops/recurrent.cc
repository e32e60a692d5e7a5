// LSTM op family: one layer of torch.nn.LSTM in one direction over a whole sequence, and its
// backward (kernels/cpu/recurrent_kernels.h has the equations). The front end builds multi-layer
// and bidirectional LSTMs from these (python/tilegraph/_recurrent.py); one op per layer and
// direction keeps a long sequence from becoming a graph of thousands of cell ops (compile
// time) and computes every step's input projection as one product.
//   lstm_layer(x [T, B, I], h0 [B, H], c0 [B, H], w_ih [4H, I], w_hh [4H, H], bias [4H])
//     {reverse} -> (y [T, B, H], c [T, B, H], gates [T, B, 4H])
//   lstm_layer_backward(dy, dc, dgates, x, h0, c0, w_ih, w_hh, bias, y, c, gates) {reverse}
//     -> (dx, dh0, dc0, dw_ih, dw_hh, dbias)
//   gru_layer / gru_layer_backward: see the GRU section below.
// f32 and f64 (half values run widened, as every op that is not half-native).
#include "kernels/cpu/recurrent_kernels.h"
#include "ops/builder.h"
#include "ops/dispatch.h"
#include "ops/families.h"
#include "support/error.h"

namespace tg {
namespace {

// Checks lstm_layer's six operands (starting at input `first`); returns the kernel shapes.
cpu::RecurrentParams CheckLayer(const InferContext& c, size_t first, const char* op) {
  const TensorType& x = c.in(first);
  TG_CHECK(x.rank() == 3 && IsFloating(x.dtype), kShape, op,
           ": expected a floating sequence x [T, B, I], got ", x.ToString());
  TG_CHECK(x.shape[0] >= 1, kShape, op, ": expected at least one time step, got ",
           x.ToString());
  const TensorType& w_hh = c.in(first + 4);
  TG_CHECK(w_hh.rank() == 2 && w_hh.shape[0] == 4 * w_hh.shape[1], kShape, op,
           ": expected w_hh [4H, H], got ", w_hh.ToString());
  cpu::RecurrentParams p;
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

// The kernel shapes of a node whose sequence x is input `x_index` and w_hh input `w_hh_index`.
cpu::RecurrentParams ParamsOf(const Node& n, size_t x_index, size_t w_hh_index, int64_t gates) {
  const Shape& x = n.input(x_index)->type().shape;
  return {x[0], x[1], x[2], n.input(w_hh_index)->type().shape[1], gates,
          GetBool(n.attrs(), "reverse")};
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
    auto mm = cpu::MakeRecurrentProducts(ParamsOf(n, 0, 4, 4), !reference && dtype == DType::kF32);
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
    auto mm = cpu::MakeRecurrentProducts(ParamsOf(n, 3, 7, 4), !reference && dtype == DType::kF32);
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
GemmShape Products(const Node& n, size_t x_index, size_t w_hh_index, int64_t gates,
                   double groups) {
  const cpu::RecurrentParams p = ParamsOf(n, x_index, w_hh_index, gates);
  return {groups, static_cast<double>(p.t * p.b), static_cast<double>(gates * p.h),
          static_cast<double>(p.i + p.h)};
}

// A layer op's gradient rule: its backward op reads the gradients of the three outputs
// (zeros where the loss does not read one), the six inputs and the three outputs.
GradFn LayerGradient(const char* backward) {
  return [backward](const GradContext& g) -> std::vector<Value*> {
    Builder& b = g.b();
    std::vector<Value*> ins;
    for (size_t k = 0; k < 3; ++k) ins.push_back(g.GO(k) ? g.GO(k) : b.ZerosLike(g.O(k)));
    for (size_t k = 0; k < 6; ++k) ins.push_back(g.I(k));
    for (size_t k = 0; k < 3; ++k) ins.push_back(g.O(k));
    return b.Op(backward, ins, g.attrs());
  };
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
    const cpu::RecurrentParams p = CheckLayer(c, 0, "lstm_layer");
    const DType dt = c.in(0).dtype;
    return {{dt, {p.t, p.b, p.h}}, {dt, {p.t, p.b, p.h}}, {dt, {p.t, p.b, 4 * p.h}}};
  };
  d.grad = LayerGradient("lstm_layer_backward");
  d.kernels[DeviceKind::kCpu] = ForwardFactory(false);
  d.kernels[DeviceKind::kReference] = ForwardFactory(true);
  d.gemm = [](const Node& n) { return Products(n, 0, 4, 4, 1); };
  d.flops = [](const Node& n) { return 2 * Products(n, 0, 4, 4, 1).macs(); };
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
    const cpu::RecurrentParams p = CheckLayer(c, 3, "lstm_layer_backward");
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
  d.gemm = [](const Node& n) { return Products(n, 3, 7, 4, 2); };
  d.flops = [](const Node& n) { return 2 * Products(n, 3, 7, 4, 2).macs(); };
  d.kernels[DeviceKind::kCpu] = BackwardFactory(false);
  d.kernels[DeviceKind::kReference] = BackwardFactory(true);
  d.samples = Samples(true);
  r.Register(std::move(d));
}


// ---- GRU ----------------------------------------------------------------------------------
// gru_layer(x [T, B, I], h0 [B, H], w_ih [3H, I], w_hh [3H, H], b_ih [3H], b_hh [3H])
//   {reverse} -> (y [T, B, H], gates [T, B, 3H], p_n [T, B, H])

// Checks gru_layer's six operands (starting at input `first`); returns the kernel shapes.
cpu::RecurrentParams CheckGruLayer(const InferContext& c, size_t first, const char* op) {
  const TensorType& x = c.in(first);
  TG_CHECK(x.rank() == 3 && IsFloating(x.dtype), kShape, op,
           ": expected a floating sequence x [T, B, I], got ", x.ToString());
  TG_CHECK(x.shape[0] >= 1, kShape, op, ": expected at least one time step, got ",
           x.ToString());
  const TensorType& w_hh = c.in(first + 3);
  TG_CHECK(w_hh.rank() == 2 && w_hh.shape[0] == 3 * w_hh.shape[1] && w_hh.dtype == x.dtype,
           kShape, op, ": expected w_hh [3H, H] of dtype ", DTypeName(x.dtype), ", got ",
           w_hh.ToString());
  cpu::RecurrentParams p{x.shape[0], x.shape[1], x.shape[2], w_hh.shape[1], 3,
                         GetBool(c.attrs, "reverse")};
  const std::pair<size_t, Shape> expected[] = {{first + 1, {p.b, p.h}},
                                               {first + 2, {3 * p.h, p.i}},
                                               {first + 4, {3 * p.h}},
                                               {first + 5, {3 * p.h}}};
  const char* names[] = {"h0", "w_ih", "b_ih", "b_hh"};
  for (size_t k = 0; k < 4; ++k) {
    const TensorType& t = c.in(expected[k].first);
    TG_CHECK(t.dtype == x.dtype && t.shape == expected[k].second, kShape, op, ": expected ",
             names[k], " of type ", TensorType{x.dtype, expected[k].second}.ToString(), ", got ",
             t.ToString());
  }
  return p;
}

KernelFactory GruForwardFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    const DType dtype = n.input(0)->type().dtype;
    auto mm = cpu::MakeRecurrentProducts(ParamsOf(n, 0, 3, 3), !reference && dtype == DType::kF32);
    return [mm, dtype](const KernelArgs& a) {
      DispatchFloat(dtype, "gru_layer", [&](auto tag) {
        using T = decltype(tag);
        cpu::GruForward<T>(*mm, In<T>(a, 0), In<T>(a, 1), In<T>(a, 2), In<T>(a, 3), In<T>(a, 4),
                           In<T>(a, 5), Out<T>(a, 0), Out<T>(a, 1), Out<T>(a, 2));
      });
    };
  };
}

KernelFactory GruBackwardFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    const DType dtype = n.input(3)->type().dtype;
    auto mm = cpu::MakeRecurrentProducts(ParamsOf(n, 3, 6, 3), !reference && dtype == DType::kF32);
    return [mm, dtype](const KernelArgs& a) {
      DispatchFloat(dtype, "gru_layer_backward", [&](auto tag) {
        using T = decltype(tag);
        cpu::GruBackward<T>(*mm, In<T>(a, 0), In<T>(a, 1), In<T>(a, 2), In<T>(a, 3),
                            In<T>(a, 4), In<T>(a, 5), In<T>(a, 6), In<T>(a, 9), In<T>(a, 10),
                            In<T>(a, 11), Out<T>(a, 0), Out<T>(a, 1), Out<T>(a, 2),
                            Out<T>(a, 3), Out<T>(a, 4), Out<T>(a, 5));
      });
    };
  };
}

OpSample GruSample(int64_t t, int64_t b, int64_t i, int64_t h, bool reverse, bool backward,
                   double tolerance = 1e-5) {
  OpSample s;
  const TensorType seq{DType::kF32, {t, b, h}}, gates{DType::kF32, {t, b, 3 * h}};
  if (backward) s.inputs = {seq, gates, seq};
  s.inputs.insert(s.inputs.end(), {{DType::kF32, {t, b, i}},
                                   {DType::kF32, {b, h}},
                                   {DType::kF32, {3 * h, i}},
                                   {DType::kF32, {3 * h, h}},
                                   {DType::kF32, {3 * h}},
                                   {DType::kF32, {3 * h}}});
  const size_t first = backward ? 3 : 0;
  s.init.assign(first + 6, InputInit::Normal());
  if (backward) {  // the forward's results: any values serve a kernel comparison
    s.inputs.insert(s.inputs.end(), {seq, gates, seq});
    s.init.insert(s.init.end(), {InputInit::Normal(), InputInit::Uniform(0.05, 0.95),
                                 InputInit::Normal()});
  }
  if (t * b > 16) {  // torch.nn.GRU's initial weights (see the LSTM samples)
    for (size_t k : {first + 2, first + 3, first + 4, first + 5})
      s.init[k] = InputInit::Uniform(-0.2, 0.2);
  }
  s.attrs = {{"reverse", reverse}};
  s.tolerance = tolerance;
  return s;
}

std::vector<OpSample> GruSamples(bool backward) {
  OpSample large = GruSample(20, 16, 32, 24, backward, backward, 1e-4);
  large.skip_grad_check = true;
  return {GruSample(3, 2, 3, 2, false, backward), GruSample(4, 2, 2, 3, true, backward),
          GruSample(1, 1, 1, 1, false, backward), large};
}

void RegisterGruLayer(OpRegistry& r) {
  OpDef d;
  d.name = "gru_layer";
  d.num_inputs = 6;
  d.num_outputs = 3;
  d.attrs = {{"reverse", Attr(false)}};
  d.doc = "One GRU layer in one direction over a sequence x [T, B, I] from state h0: outputs "
          "y [T, B, H], activated gates r, z, n [T, B, 3H] and h_prev w_hn^T + b_hn [T, B, H].";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const cpu::RecurrentParams p = CheckGruLayer(c, 0, "gru_layer");
    const DType dt = c.in(0).dtype;
    return {{dt, {p.t, p.b, p.h}}, {dt, {p.t, p.b, 3 * p.h}}, {dt, {p.t, p.b, p.h}}};
  };
  d.grad = LayerGradient("gru_layer_backward");
  d.kernels[DeviceKind::kCpu] = GruForwardFactory(false);
  d.kernels[DeviceKind::kReference] = GruForwardFactory(true);
  d.gemm = [](const Node& n) { return Products(n, 0, 3, 3, 1); };
  d.flops = [](const Node& n) { return 2 * Products(n, 0, 3, 3, 1).macs(); };
  d.samples = GruSamples(false);
  r.Register(std::move(d));
}

void RegisterGruLayerBackward(OpRegistry& r) {
  OpDef d;
  d.name = "gru_layer_backward";
  d.num_inputs = 12;
  d.num_outputs = 6;
  d.attrs = {{"reverse", Attr(false)}};
  d.doc = "Gradients of gru_layer w.r.t. x, h0, w_ih, w_hh, b_ih and b_hh from the gradients "
          "of its three outputs, its inputs and its outputs (backpropagation through time).";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const cpu::RecurrentParams p = CheckGruLayer(c, 3, "gru_layer_backward");
    const DType dt = c.in(3).dtype;
    const Shape seq{p.t, p.b, p.h}, gates{p.t, p.b, 3 * p.h};
    const std::pair<size_t, Shape> expected[] = {{0, seq}, {1, gates}, {2, seq},
                                                 {9, seq}, {10, gates}, {11, seq}};
    for (const auto& [index, shape] : expected) {
      const TensorType& t = c.in(index);
      TG_CHECK(t.dtype == dt && t.shape == shape, kShape, "gru_layer_backward: expected input ",
               index, " of type ", TensorType{dt, shape}.ToString(), ", got ", t.ToString());
    }
    std::vector<TensorType> out;
    for (size_t k = 3; k < 9; ++k) out.push_back(c.in(k));
    return out;
  };
  d.not_differentiable = true;
  d.gemm = [](const Node& n) { return Products(n, 3, 6, 3, 2); };
  d.flops = [](const Node& n) { return 2 * Products(n, 3, 6, 3, 2).macs(); };
  d.kernels[DeviceKind::kCpu] = GruBackwardFactory(false);
  d.kernels[DeviceKind::kReference] = GruBackwardFactory(true);
  d.samples = GruSamples(true);
  r.Register(std::move(d));
}

}  // namespace

void RegisterRecurrentOps(OpRegistry& r) {
  RegisterLstmLayer(r);
  RegisterLstmLayerBackward(r);
  RegisterGruLayer(r);
  RegisterGruLayerBackward(r);
}

}  // namespace tg
