// One recurrent layer in one direction over a whole sequence, forward and backward, as two
// kernels instead of a graph unrolled over time steps: torch.nn.LSTM's and torch.nn.GRU's
// cells, gates in PyTorch's orders (i, f, g, o and r, z, n).
//
// LSTM.
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
// GRU. Weights w_ih [3H, I], w_hh [3H, H] and both biases b_ih, b_hh [3H] (b_hh's n part is
// inside r's product), state h0 [B, H]:
//   p     = h_prev w_hh^T + b_hh;          q = x[t] w_ih^T + b_ih           [B, 3H]
//   r, z  = sigmoid(q_r + p_r, q_z + p_z); n = tanh(q_n + r * p_n)
//   y[t]  = (1 - z) * n + z * h_prev
// Outputs: y [T, B, H], gates [T, B, 3H] (r, z, n after their activations) and p_n [T, B, H]
// (what r multiplied); the backward takes the gradients of all three.
//
// Products: the fast kernels of f32 use DenseMatmul (oneDNN), built once per shape
// (RecurrentProducts); f64 and the reference device use MatmulRef's loops.
#pragma once

#include <cstdint>
#include <memory>

namespace tg::cpu {

struct RecurrentParams {
  int64_t t = 0, b = 0, i = 0, h = 0;
  int64_t gates = 4;  // 4 (LSTM) or 3 (GRU)
  bool reverse = false;
};

// The matrix products of one layer's shapes, with oneDNN primitives made once (f32).
class RecurrentProducts;
std::shared_ptr<const RecurrentProducts> MakeRecurrentProducts(const RecurrentParams& p,
                                                               bool fast);

template <typename T>
void LstmForward(const RecurrentProducts& mm, const T* x, const T* h0, const T* c0, const T* w_ih,
                 const T* w_hh, const T* bias, T* y, T* c, T* gates);

template <typename T>
void LstmBackward(const RecurrentProducts& mm, const T* dy, const T* dc, const T* dgates, const T* x,
                  const T* h0, const T* c0, const T* w_ih, const T* w_hh, const T* y, const T* c,
                  const T* gates, T* dx, T* dh0, T* dc0, T* dw_ih, T* dw_hh, T* dbias);

template <typename T>
void GruForward(const RecurrentProducts& mm, const T* x, const T* h0, const T* w_ih,
                const T* w_hh, const T* b_ih, const T* b_hh, T* y, T* gates, T* hn);

template <typename T>
void GruBackward(const RecurrentProducts& mm, const T* dy, const T* dgates, const T* dhn,
                 const T* x, const T* h0, const T* w_ih, const T* w_hh, const T* y,
                 const T* gates, const T* hn, T* dx, T* dh0, T* dw_ih, T* dw_hh, T* db_ih,
                 T* db_hh);

}  // namespace tg::cpu
