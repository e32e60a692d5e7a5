#include "kernels/cpu/recurrent_kernels.h"

#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/dense_matmul.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/reference_dense.h"
#include "kernels/cpu/vector_math.h"

namespace tg::cpu {

namespace {

// out = op(a) op(b) (+ bias over rows): oneDNN for f32 when fast, MatmulRef's loops otherwise.
struct Product {
  MatmulParams p;
  std::shared_ptr<const DenseMatmul> fast;  // f32 only, with the bias epilogue when `bias`
  bool bias = false;

  Product(int64_t m, int64_t n, int64_t k, bool trans_a, bool trans_b, bool with_bias,
          bool use_fast)
      : bias(with_bias) {
    p.m = m;
    p.n = n;
    p.k = k;
    p.trans_a = trans_a;
    p.trans_b = trans_b;
    if (use_fast) fast = std::make_shared<DenseMatmul>(p, MatmulEpilogue{with_bias});
  }

  template <typename T>
  void Run(const T* a, const T* b, T* out, const T* bias_values = nullptr) const {
    if constexpr (std::is_same_v<T, float>) {
      if (fast) return fast->Run(a, b, out, bias_values);
    }
    MatmulRef(p, a, b, out);
    if (bias) {
      for (int64_t r = 0; r < p.m; ++r)
        for (int64_t j = 0; j < p.n; ++j) out[r * p.n + j] += bias_values[j];
    }
  }
};

// The activations: vmath's vectorizable float functions (the per-step loops over the gates
// vectorize), the C library's in double (the reference precision).
template <typename T>
T Sigmoid(T v) {
  if constexpr (std::is_same_v<T, float>) return vmath::Sigmoid(v);
  return T(1) / (T(1) + std::exp(-v));
}
template <typename T>
T Tanh(T v) {
  if constexpr (std::is_same_v<T, float>) return vmath::Tanh(v);
  return std::tanh(v);
}

// Row r of a [T, B, n] sequence tensor at time t.
template <typename T>
T* At(T* base, const RecurrentParams& p, int64_t t, int64_t n) {
  return base + t * p.b * n;
}

// Sums the rows of a [rows, n] matrix into out [n], accumulating in double.
template <typename T>
void SumRows(const T* m, int64_t rows, int64_t n, T* out) {
  std::vector<double> acc(static_cast<size_t>(n), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) acc[j] += m[r * n + j];
  for (int64_t j = 0; j < n; ++j) out[j] = static_cast<T>(acc[j]);
}

}  // namespace

class RecurrentProducts {
 public:
  RecurrentProducts(const RecurrentParams& p, bool fast)
      : p(p),
        input(p.t * p.b, p.gates * p.h, p.i, false, true, true, fast),
        recurrent(p.b, p.gates * p.h, p.h, false, true, /*bias: GRU's b_hh*/ p.gates == 3, fast),
        recurrent_back(p.b, p.h, p.gates * p.h, false, false, false, fast),
        input_back(p.t * p.b, p.i, p.gates * p.h, false, false, false, fast),
        w_ih_grad(p.gates * p.h, p.i, p.t * p.b, true, false, false, fast),
        w_hh_grad(p.gates * p.h, p.h, p.t * p.b, true, false, false, fast) {}

  RecurrentParams p;  // G = gates * H below
  Product input;           // x [TB, I] w_ih^T + bias -> [TB, G]
  Product recurrent;       // h [B, H] w_hh^T (+ b_hh) -> [B, G]
  Product recurrent_back;  // da [B, G] w_hh -> dh [B, H]
  Product input_back;      // da [TB, G] w_ih -> dx [TB, I]
  Product w_ih_grad;       // da^T x -> [G, I]
  Product w_hh_grad;       // da^T h_prev -> [G, H]

  // The step index of the s-th step processed, and of the step before it (-1: the states
  // h0 / c0).
  int64_t Step(int64_t s) const { return p.reverse ? p.t - 1 - s : s; }
  int64_t Previous(int64_t s) const { return s == 0 ? -1 : Step(s - 1); }
};

std::shared_ptr<const RecurrentProducts> MakeRecurrentProducts(const RecurrentParams& p,
                                                               bool fast) {
  return std::make_shared<RecurrentProducts>(p, fast);
}

template <typename T>
void LstmForward(const RecurrentProducts& mm, const T* x, const T* h0, const T* c0, const T* w_ih,
                 const T* w_hh, const T* bias, T* y, T* c, T* gates) {
  const RecurrentParams& p = mm.p;
  const int64_t H = p.h, G = 4 * p.h;
  mm.input.Run(x, w_ih, gates, bias);  // every step's input part of `a`, in place in gates
  std::vector<T> recurrent(static_cast<size_t>(p.b * G));
  for (int64_t s = 0; s < p.t; ++s) {
    const int64_t t = mm.Step(s), prev = mm.Previous(s);
    const T* h_prev = prev < 0 ? h0 : At(y, p, prev, H);
    const T* c_prev = prev < 0 ? c0 : At(c, p, prev, H);
    mm.recurrent.Run(h_prev, w_hh, recurrent.data());
    T* g_t = At(gates, p, t, G);
    T* c_t = At(c, p, t, H);
    T* y_t = At(y, p, t, H);
    ParallelFor(p.b, 4, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        T* a = g_t + b * G;
        const T* r = recurrent.data() + b * G;
        for (int64_t j = 0; j < H; ++j) {
          const T in = Sigmoid(a[j] + r[j]);
          const T forget = Sigmoid(a[H + j] + r[H + j]);
          const T cell = Tanh(a[2 * H + j] + r[2 * H + j]);
          const T out = Sigmoid(a[3 * H + j] + r[3 * H + j]);
          const T cv = forget * c_prev[b * H + j] + in * cell;
          a[j] = in;
          a[H + j] = forget;
          a[2 * H + j] = cell;
          a[3 * H + j] = out;
          c_t[b * H + j] = cv;
          y_t[b * H + j] = out * Tanh(cv);
        }
      }
    });
  }
}

template <typename T>
void LstmBackward(const RecurrentProducts& mm, const T* dy, const T* dc, const T* dgates, const T* x,
                  const T* h0, const T* c0, const T* w_ih, const T* w_hh, const T* y, const T* c,
                  const T* gates, T* dx, T* dh0, T* dc0, T* dw_ih, T* dw_hh, T* dbias) {
  const RecurrentParams& p = mm.p;
  const int64_t H = p.h, G = 4 * p.h, BH = p.b * p.h;
  std::vector<T> da(static_cast<size_t>(p.t * p.b * G));  // d loss / d a, every step
  std::vector<T> h_prev_all(static_cast<size_t>(p.t * BH));  // h_prev of every step
  std::vector<T> dh_rec(static_cast<size_t>(BH), T(0)), dc_rec(static_cast<size_t>(BH), T(0));
  for (int64_t s = p.t - 1; s >= 0; --s) {
    const int64_t t = mm.Step(s), prev = mm.Previous(s);
    const T* h_prev = prev < 0 ? h0 : At(y, p, prev, H);
    const T* c_prev = prev < 0 ? c0 : At(c, p, prev, H);
    std::memcpy(At(h_prev_all.data(), p, t, H), h_prev, sizeof(T) * BH);
    const T* g_t = At(gates, p, t, G);
    const T* dg_t = At(dgates, p, t, G);
    const T* c_t = At(c, p, t, H);
    const T* dy_t = At(dy, p, t, H);
    const T* dc_t = At(dc, p, t, H);
    T* da_t = At(da.data(), p, t, G);
    ParallelFor(p.b, 4, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const T* g = g_t + b * G;
        const T* dg = dg_t + b * G;
        T* d = da_t + b * G;
        for (int64_t j = 0; j < H; ++j) {
          const int64_t k = b * H + j;
          const T in = g[j], forget = g[H + j], cell = g[2 * H + j], out = g[3 * H + j];
          const T tc = Tanh(c_t[k]);
          const T dh = dy_t[k] + dh_rec[k];
          const T dcell_state = dc_t[k] + dc_rec[k] + dh * out * (T(1) - tc * tc);
          const T d_in = dcell_state * cell + dg[j];
          const T d_forget = dcell_state * c_prev[k] + dg[H + j];
          const T d_cell = dcell_state * in + dg[2 * H + j];
          const T d_out = dh * tc + dg[3 * H + j];
          d[j] = d_in * in * (T(1) - in);
          d[H + j] = d_forget * forget * (T(1) - forget);
          d[2 * H + j] = d_cell * (T(1) - cell * cell);
          d[3 * H + j] = d_out * out * (T(1) - out);
          dc_rec[k] = dcell_state * forget;
        }
      }
    });
    mm.recurrent_back.Run(da_t, w_hh, dh_rec.data());
  }
  std::memcpy(dh0, dh_rec.data(), sizeof(T) * BH);
  std::memcpy(dc0, dc_rec.data(), sizeof(T) * BH);
  mm.input_back.Run(da.data(), w_ih, dx);
  mm.w_ih_grad.Run(da.data(), x, dw_ih);
  mm.w_hh_grad.Run(da.data(), h_prev_all.data(), dw_hh);
  SumRows(da.data(), p.t * p.b, G, dbias);
}

template <typename T>
void GruForward(const RecurrentProducts& mm, const T* x, const T* h0, const T* w_ih,
                const T* w_hh, const T* b_ih, const T* b_hh, T* y, T* gates, T* hn) {
  const RecurrentParams& p = mm.p;
  const int64_t H = p.h, G = 3 * p.h;
  mm.input.Run(x, w_ih, gates, b_ih);  // q of every step, in place in gates
  std::vector<T> recurrent(static_cast<size_t>(p.b * G));
  for (int64_t s = 0; s < p.t; ++s) {
    const int64_t t = mm.Step(s), prev = mm.Previous(s);
    const T* h_prev = prev < 0 ? h0 : At(y, p, prev, H);
    mm.recurrent.Run(h_prev, w_hh, recurrent.data(), b_hh);
    T* g_t = At(gates, p, t, G);
    T* hn_t = At(hn, p, t, H);
    T* y_t = At(y, p, t, H);
    ParallelFor(p.b, 4, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        T* q = g_t + b * G;
        const T* r = recurrent.data() + b * G;
        for (int64_t j = 0; j < H; ++j) {
          const T reset = Sigmoid(q[j] + r[j]);
          const T update = Sigmoid(q[H + j] + r[H + j]);
          const T cand = Tanh(q[2 * H + j] + reset * r[2 * H + j]);
          q[j] = reset;
          q[H + j] = update;
          q[2 * H + j] = cand;
          hn_t[b * H + j] = r[2 * H + j];
          y_t[b * H + j] = (T(1) - update) * cand + update * h_prev[b * H + j];
        }
      }
    });
  }
}

template <typename T>
void GruBackward(const RecurrentProducts& mm, const T* dy, const T* dgates, const T* dhn,
                 const T* x, const T* h0, const T* w_ih, const T* w_hh, const T* y,
                 const T* gates, const T* hn, T* dx, T* dh0, T* dw_ih, T* dw_hh, T* db_ih,
                 T* db_hh) {
  const RecurrentParams& p = mm.p;
  const int64_t H = p.h, G = 3 * p.h, BH = p.b * p.h;
  // d loss / d q and d loss / d p of every step (they differ in the n part: r * p_n).
  std::vector<T> dq(static_cast<size_t>(p.t * p.b * G)), dp(dq.size());
  std::vector<T> h_prev_all(static_cast<size_t>(p.t * BH));
  std::vector<T> dh_rec(static_cast<size_t>(BH), T(0)), dh_back(static_cast<size_t>(BH));
  for (int64_t s = p.t - 1; s >= 0; --s) {
    const int64_t t = mm.Step(s), prev = mm.Previous(s);
    const T* h_prev = prev < 0 ? h0 : At(y, p, prev, H);
    std::memcpy(At(h_prev_all.data(), p, t, H), h_prev, sizeof(T) * BH);
    const T* g_t = At(gates, p, t, G);
    const T* dg_t = At(dgates, p, t, G);
    const T* hn_t = At(hn, p, t, H);
    const T* dhn_t = At(dhn, p, t, H);
    const T* dy_t = At(dy, p, t, H);
    T* dq_t = At(dq.data(), p, t, G);
    T* dp_t = At(dp.data(), p, t, G);
    ParallelFor(p.b, 4, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const T* g = g_t + b * G;
        const T* dg = dg_t + b * G;
        for (int64_t j = 0; j < H; ++j) {
          const int64_t k = b * H + j;
          const T reset = g[j], update = g[H + j], cand = g[2 * H + j];
          const T dh = dy_t[k] + dh_rec[k];
          const T d_cand = dh * (T(1) - update) + dg[2 * H + j];
          const T d_update = dh * (h_prev[k] - cand) + dg[H + j];
          const T da_cand = d_cand * (T(1) - cand * cand);
          const T d_reset = da_cand * hn_t[k] + dg[j];
          const T da_reset = d_reset * reset * (T(1) - reset);
          const T da_update = d_update * update * (T(1) - update);
          dq_t[b * G + j] = dp_t[b * G + j] = da_reset;
          dq_t[b * G + H + j] = dp_t[b * G + H + j] = da_update;
          dq_t[b * G + 2 * H + j] = da_cand;
          dp_t[b * G + 2 * H + j] = da_cand * reset + dhn_t[k];
          dh_rec[k] = dh * update;  // the direct path; the product's part is added below
        }
      }
    });
    mm.recurrent_back.Run(dp_t, w_hh, dh_back.data());
    for (int64_t k = 0; k < BH; ++k) dh_rec[k] += dh_back[k];
  }
  std::memcpy(dh0, dh_rec.data(), sizeof(T) * BH);
  mm.input_back.Run(dq.data(), w_ih, dx);
  mm.w_ih_grad.Run(dq.data(), x, dw_ih);
  mm.w_hh_grad.Run(dp.data(), h_prev_all.data(), dw_hh);
  SumRows(dq.data(), p.t * p.b, G, db_ih);
  SumRows(dp.data(), p.t * p.b, G, db_hh);
}

#define TG_INSTANTIATE(T)                                                                     \
  template void LstmForward<T>(const RecurrentProducts&, const T*, const T*, const T*, const T*,   \
                               const T*, const T*, T*, T*, T*);                               \
  template void LstmBackward<T>(const RecurrentProducts&, const T*, const T*, const T*, const T*,  \
                                const T*, const T*, const T*, const T*, const T*, const T*,   \
                                const T*, T*, T*, T*, T*, T*, T*);
#define TG_INSTANTIATE_GRU(T)                                                                 \
  template void GruForward<T>(const RecurrentProducts&, const T*, const T*, const T*,          \
                              const T*, const T*, const T*, T*, T*, T*);                       \
  template void GruBackward<T>(const RecurrentProducts&, const T*, const T*, const T*,         \
                               const T*, const T*, const T*, const T*, const T*, const T*,     \
                               const T*, T*, T*, T*, T*, T*, T*);
TG_INSTANTIATE_GRU(float)
TG_INSTANTIATE_GRU(double)
#undef TG_INSTANTIATE_GRU
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu
