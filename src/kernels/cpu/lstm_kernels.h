// One LSTM layer in one direction over a whole sequence (torch.nn.LSTM's cell, gates in
// PyTorch's order i, f, g, o), forward and backward, as two kernels instead of a graph
// unrolled over time steps.
//
// Forward, time-major x [T, B, I], weights w_ih [4H, I], w_hh [4H, H], bias [4H]
// (b_ih + b_hh), states h0, c0 [B, H]. Steps run t = 0 .. T-1, or T-1 .. 0 when `reverse`;
// "the previous step" of t is t - 1 (t + 1 reversed), and h0 / c0 before the first:
//   a     = x[t] w_ih^T + bias + h_prev w_hh^T                 [B, 4H]
//   i, f, o = sigmoid(a_i, a_f, a_o);  g = tanh(a_g)
//   c[t]  = f * c_prev + i * g;        y[t] = o * tanh(c[t])
// Outputs: y [T, B, H], c [T, B, H] (every step's cell state) and gates [T, B, 4H] (i, f, g, o
// after their activations), which the backward reads instead of recomputing them.
//
// Backward: the gradients of a loss with respect to x, h0, c0, w_ih, w_hh and bias, from
// its gradients with respect to all three outputs (dy, dc, dgates; zeros where the loss does
// not read an output), by backpropagation through time: one recurrent product per step,
// then the input and weight gradients as three products over the whole sequence.
//
// Products: the fast kernels of f32 use DenseMatmul (oneDNN), built once per shape
// (LstmProducts); f64 and the reference device use MatmulRef's loops.
#pragma once

#include <cstdint>
#include <memory>

namespace tg::cpu {

struct LstmParams {
  int64_t t = 0, b = 0, i = 0, h = 0;
  bool reverse = false;
};

// The matrix products of one layer's shapes, with oneDNN primitives made once (f32).
class LstmProducts;
std::shared_ptr<const LstmProducts> MakeLstmProducts(const LstmParams& p, bool fast);

template <typename T>
void LstmForward(const LstmProducts& mm, const T* x, const T* h0, const T* c0, const T* w_ih,
                 const T* w_hh, const T* bias, T* y, T* c, T* gates);

template <typename T>
void LstmBackward(const LstmProducts& mm, const T* dy, const T* dc, const T* dgates, const T* x,
                  const T* h0, const T* c0, const T* w_ih, const T* w_hh, const T* y, const T* c,
                  const T* gates, T* dx, T* dh0, T* dc0, T* dw_ih, T* dw_hh, T* dbias);

}  // namespace tg::cpu
