// CTC loss kernels; see ctc_kernels.h. The fast kernels run one sample per task over the
// batch (OpenMP) with per-thread scratch that is grown once and then reused (no allocation in
// steady state); the reference kernels are plain loops over full alpha / beta tables.
#include "kernels/cpu/ctc_kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "support/error.h"

namespace tg::cpu {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Validates lengths and the labels that will be used (before any parallel region, so that
// errors are thrown on the calling thread).
void CheckInputs(const CtcInputs& in, const CtcParams& p) {
  TG_CHECK(p.blank >= 0 && p.blank < p.c, kRuntime, p.op, ": blank ", p.blank,
           " out of range [0, ", p.c, ")");
  for (int64_t i = 0; i < p.b; ++i) {
    int64_t il = in.input_lengths[i], tl = in.target_lengths[i];
    TG_CHECK(il >= 0 && il <= p.t, kRuntime, p.op, ": input_lengths[", i, "] = ", il,
             " out of range [0, ", p.t, "]");
    TG_CHECK(tl >= 0 && tl <= p.s, kRuntime, p.op, ": target_lengths[", i, "] = ", tl,
             " out of range [0, ", p.s, "]");
    for (int64_t j = 0; j < tl; ++j) {
      int64_t l = in.targets[i * p.s + j];
      TG_CHECK(l >= 0 && l < p.c, kRuntime, p.op, ": target label ", l, " (targets[", i, ", ",
               j, "]) out of range [0, ", p.c, ")");
    }
  }
}

// Extended labels of sample i: l'(s) = blank for even s, targets[i, s / 2] for odd s.
int64_t Label(const CtcInputs& in, const CtcParams& p, int64_t i, int64_t s) {
  return s % 2 == 0 ? p.blank : in.targets[i * p.s + s / 2];
}

double LogAdd3(double a, double b, double c) {
  double m = std::max(a, std::max(b, c));
  if (m == kNegInf) return kNegInf;
  return m + std::log(std::exp(a - m) + std::exp(b - m) + std::exp(c - m));
}

// log p from the last alpha row (or the empty-input rule: p = 1 iff the target is empty).
double LogLikelihood(const double* last_alpha, int64_t n, int64_t il) {
  if (il == 0) return n == 1 ? 0.0 : kNegInf;
  return n == 1 ? last_alpha[0] : LogAdd(last_alpha[n - 1], last_alpha[n - 2]);
}

// ---- fast kernels -----------------------------------------------------------------------

// Per-thread scratch, grown to the largest need seen and reused afterwards.
struct Scratch {
  std::vector<double> alpha;  // [il, n] (backward) or [2, n] (forward)
  std::vector<double> beta;   // [2, n]
  std::vector<double> lc;     // [c]: per-class logsumexp of alpha + beta at one frame
  std::vector<int64_t> label;  // [n]: l'
  std::vector<uint8_t> skip;   // [n]: the jump s-2 -> s is allowed
};

Scratch& ThreadScratch(int64_t alpha_rows, int64_t n, int64_t c) {
  static thread_local Scratch s;
  auto grow = [](auto& v, int64_t size) {
    if (v.size() < static_cast<size_t>(size)) v.resize(static_cast<size_t>(size));
  };
  grow(s.alpha, alpha_rows * n);
  grow(s.beta, 2 * n);
  grow(s.lc, c);
  grow(s.label, n);
  grow(s.skip, n);
  return s;
}

// Batch samples per parallel task: enough alpha cells (~32k) to pay for a thread.
int64_t Grain(const CtcParams& p) {
  return std::max<int64_t>(1, 32768 / (p.t * (2 * p.s + 1) + 1));
}

// Fills l' and the jump flags of sample i; returns n = 2 * target_length + 1.
int64_t Extend(const CtcInputs& in, const CtcParams& p, int64_t i, Scratch& sc) {
  int64_t n = 2 * in.target_lengths[i] + 1;
  for (int64_t s = 0; s < n; ++s) {
    sc.label[s] = Label(in, p, i, s);
    // torch's rule: a jump where l'(s-2) differs (never onto a separating blank; onto a
    // target equal to the blank label, which torch's kernels allow, after another label).
    sc.skip[s] = s >= 2 && sc.label[s] != sc.label[s - 2];
  }
  return n;
}

// Alpha rows of sample i for frames [0, il): row t at alpha + (all_rows ? t : t % 2) * n.
// Returns log p.
template <typename T>
double Alpha(const T* log_probs, const CtcParams& p, int64_t i, int64_t il, int64_t n,
             const Scratch& sc, double* alpha, bool all_rows) {
  if (il == 0) return LogLikelihood(nullptr, n, 0);
  const int64_t frame = p.b * p.c;
  const T* lp = log_probs + i * p.c;
  const int64_t* label = sc.label.data();
  std::fill(alpha, alpha + n, kNegInf);
  alpha[0] = lp[p.blank];
  if (n > 1) alpha[1] = lp[label[1]];
  double* prev = alpha;
  for (int64_t t = 1; t < il; ++t) {
    lp += frame;
    double* cur = alpha + (all_rows ? t : t % 2) * n;
    for (int64_t s = 0; s < n; ++s) {
      double a2 = s > 0 ? prev[s - 1] : kNegInf;
      double a3 = sc.skip[s] ? prev[s - 2] : kNegInf;
      cur[s] = LogAdd3(prev[s], a2, a3) + static_cast<double>(lp[label[s]]);
    }
    prev = cur;
  }
  return LogLikelihood(prev, n, il);
}

}  // namespace

double LogAdd(double a, double b) {
  double m = std::max(a, b);
  if (m == kNegInf) return kNegInf;
  return m + std::log(std::exp(a - m) + std::exp(b - m));
}

template <typename T>
void CtcLoss(const T* log_probs, const CtcInputs& in, T* out, const CtcParams& p) {
  CheckInputs(in, p);
  ParallelFor(p.b, Grain(p), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int64_t n = 2 * in.target_lengths[i] + 1;
      Scratch& sc = ThreadScratch(2, n, p.c);
      Extend(in, p, i, sc);
      double nll = -Alpha(log_probs, p, i, in.input_lengths[i], n, sc, sc.alpha.data(), false);
      if (p.zero_infinity && nll == kInf) nll = 0;
      out[i] = static_cast<T>(nll);
    }
  });
}

template <typename T>
void CtcLossBackward(const T* go, const T* log_probs, const CtcInputs& in, T* grad,
                     const CtcParams& p) {
  CheckInputs(in, p);
  ParallelFor(p.b, Grain(p), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t il = in.input_lengths[i], n = 2 * in.target_lengths[i] + 1;
      const int64_t frame = p.b * p.c;
      Scratch& sc = ThreadScratch(std::max<int64_t>(il, 1), n, p.c);
      Extend(in, p, i, sc);
      double ll = Alpha(log_probs, p, i, il, n, sc, sc.alpha.data(), true);
      // Frames past the input, and every frame of an infinite-loss sample, get 0.
      int64_t first_zero = ll == kNegInf ? 0 : il;
      for (int64_t t = first_zero; t < p.t; ++t) std::fill_n(grad + t * frame + i * p.c, p.c, T(0));
      if (first_zero == 0) continue;
      const int64_t* label = sc.label.data();
      double g = static_cast<double>(go[i]);
      double* next = sc.beta.data();  // beta_{t+1}
      double* cur = next + n;         // beta_t
      for (int64_t t = il - 1; t >= 0; --t) {
        const T* lp = log_probs + t * frame + i * p.c;
        if (t == il - 1) {
          std::fill(cur, cur + n, kNegInf);
          cur[n - 1] = lp[p.blank];
          if (n > 1) cur[n - 2] = lp[label[n - 2]];
        } else {
          for (int64_t s = 0; s < n; ++s) {
            double b2 = s + 1 < n ? next[s + 1] : kNegInf;
            double b3 = s + 2 < n && sc.skip[s + 2] ? next[s + 2] : kNegInf;
            cur[s] = LogAdd3(next[s], b2, b3) + static_cast<double>(lp[label[s]]);
          }
        }
        double* lc = sc.lc.data();
        std::fill(lc, lc + p.c, kNegInf);
        const double* alpha = sc.alpha.data() + t * n;
        for (int64_t s = 0; s < n; ++s) lc[label[s]] = LogAdd(lc[label[s]], alpha[s] + cur[s]);
        T* out = grad + t * frame + i * p.c;
        for (int64_t c = 0; c < p.c; ++c) {
          out[c] = lc[c] == kNegInf
                       ? T(0)
                       : static_cast<T>(-g * std::exp(lc[c] - ll - static_cast<double>(lp[c])));
        }
        std::swap(next, cur);
      }
    }
  });
}

// ---- reference kernels ------------------------------------------------------------------
namespace {

// Full log-space alpha and beta tables [il][n] of sample i, the textbook recursions.
struct RefTables {
  std::vector<int64_t> label;
  std::vector<std::vector<double>> alpha, beta;
  double log_likelihood = 0;
};

template <typename T>
RefTables RefAlphaBeta(const T* log_probs, const CtcInputs& in, const CtcParams& p, int64_t i) {
  RefTables r;
  int64_t il = in.input_lengths[i], n = 2 * in.target_lengths[i] + 1;
  for (int64_t s = 0; s < n; ++s) r.label.push_back(Label(in, p, i, s));
  auto lp = [&](int64_t t, int64_t s) {
    return static_cast<double>(log_probs[(t * p.b + i) * p.c + r.label[s]]);
  };
  auto jump = [&](int64_t s) {  // s-2 -> s allowed
    return s >= 2 && r.label[s] != r.label[s - 2];
  };
  r.alpha.assign(il, std::vector<double>(n, kNegInf));
  r.beta.assign(il, std::vector<double>(n, kNegInf));
  for (int64_t t = 0; t < il; ++t) {
    for (int64_t s = 0; s < n; ++s) {
      double sum = kNegInf;
      if (t == 0) {
        sum = s <= 1 ? 0.0 : kNegInf;
      } else {
        sum = r.alpha[t - 1][s];
        if (s >= 1) sum = LogAdd(sum, r.alpha[t - 1][s - 1]);
        if (jump(s)) sum = LogAdd(sum, r.alpha[t - 1][s - 2]);
      }
      r.alpha[t][s] = sum + lp(t, s);
    }
  }
  for (int64_t t = il - 1; t >= 0; --t) {
    for (int64_t s = 0; s < n; ++s) {
      double sum = kNegInf;
      if (t == il - 1) {
        sum = s >= n - 2 ? 0.0 : kNegInf;
      } else {
        sum = r.beta[t + 1][s];
        if (s + 1 < n) sum = LogAdd(sum, r.beta[t + 1][s + 1]);
        if (s + 2 < n && jump(s + 2)) sum = LogAdd(sum, r.beta[t + 1][s + 2]);
      }
      r.beta[t][s] = sum + lp(t, s);
    }
  }
  r.log_likelihood = LogLikelihood(il > 0 ? r.alpha[il - 1].data() : nullptr, n, il);
  return r;
}

}  // namespace

template <typename T>
void CtcLossRef(const T* log_probs, const CtcInputs& in, T* out, const CtcParams& p) {
  CheckInputs(in, p);
  for (int64_t i = 0; i < p.b; ++i) {
    double nll = -RefAlphaBeta(log_probs, in, p, i).log_likelihood;
    out[i] = static_cast<T>(p.zero_infinity && std::isinf(nll) ? 0.0 : nll);
  }
}

template <typename T>
void CtcLossBackwardRef(const T* go, const T* log_probs, const CtcInputs& in, T* grad,
                        const CtcParams& p) {
  CheckInputs(in, p);
  for (int64_t i = 0; i < p.b; ++i) {
    RefTables r = RefAlphaBeta(log_probs, in, p, i);
    int64_t il = in.input_lengths[i];
    for (int64_t t = 0; t < p.t; ++t) {
      for (int64_t c = 0; c < p.c; ++c) {
        double lcab = kNegInf;
        if (t < il) {
          for (size_t s = 0; s < r.label.size(); ++s) {
            if (r.label[s] == c) lcab = LogAdd(lcab, r.alpha[t][s] + r.beta[t][s]);
          }
        }
        double lp = static_cast<double>(log_probs[(t * p.b + i) * p.c + c]);
        double g = 0;
        if (lcab != kNegInf && r.log_likelihood != kNegInf) {
          g = -static_cast<double>(go[i]) * std::exp(lcab - r.log_likelihood - lp);
        }
        grad[(t * p.b + i) * p.c + c] = static_cast<T>(g);
      }
    }
  }
}

#define TG_INSTANTIATE(T)                                                                 \
  template void CtcLoss<T>(const T*, const CtcInputs&, T*, const CtcParams&);             \
  template void CtcLossRef<T>(const T*, const CtcInputs&, T*, const CtcParams&);          \
  template void CtcLossBackward<T>(const T*, const T*, const CtcInputs&, T*,              \
                                   const CtcParams&);                                     \
  template void CtcLossBackwardRef<T>(const T*, const T*, const CtcInputs&, T*,           \
                                      const CtcParams&);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu
