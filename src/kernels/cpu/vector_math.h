// Vectorizable float exp, erf and tanh. The C library's expf/erff/tanhf are scalar calls, so
// a loop over them runs one element at a time; these are branch-free (selects, not jumps)
// inline functions that GCC vectorizes in the elementwise maps and fused block functions.
// Double keeps the C library: it is the reference precision. Accuracy (float): exp within
// ~2 ulp; erf and tanh within a few 1e-7 relative (coefficients: tools/fit_vector_math.py,
// checked against std:: over dense grids by tests/unit/vector_math_test.cc).
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>

#include "kernels/cpu/float16.h"

// Always inlined: a call per element (GCC's inliner gives up inside large fused block
// functions, where erf calls exp) stops the loop from vectorizing, which costs ~10x.
#define TG_VMATH_INLINE inline __attribute__((always_inline))

namespace tg::vmath {

// Branch-free building blocks. With -fno-trapping-math -fno-math-errno (CMakeLists.txt) GCC
// if-converts selects over computed values and integer compares; std::fmin/fmax/floor and
// x != x would still block the vectorizer.
// Lesser / Greater: b when either is NaN (no compare is true for NaN).
TG_VMATH_INLINE float Lesser(float a, float b) { return a < b ? a : b; }
TG_VMATH_INLINE float Greater(float a, float b) { return a > b ? a : b; }
TG_VMATH_INLINE bool IsNan(float x) {
  return (std::bit_cast<uint32_t>(x) & 0x7fffffffu) > 0x7f800000u;
}

// a * b + c rounded once where the build has FMA (x86-64-v3 and up), else rounded twice.
// Written out wherever vmath means a fused multiply-add: the files that define elementwise
// ops are compiled with -ffp-contract=off (CMakeLists.txt), so every other product and sum
// there is rounded as written, and the fused JIT (fused_jit.cc) emits the same operations:
// its exp, sigmoid, tanh, erf and GELU are bit-identical to these.
TG_VMATH_INLINE float Fma(float a, float b, float c) {
#ifdef __FMA__
  return __builtin_fmaf(a, b, c);
#else
  return a * b + c;
#endif
}

// c[0] t^(N-1) + ... + c[N-1] by Horner's rule (an FMA per term), unrolled at compile time
// (straight-line code for the vectorizer, whatever the unroller decides).
template <size_t N, size_t... I>
TG_VMATH_INLINE float HornerSteps(float t, const float (&c)[N], std::index_sequence<I...>) {
  float p = c[0];
  ((p = Fma(p, t, c[I + 1])), ...);
  return p;
}
template <size_t N>
TG_VMATH_INLINE float Horner(float t, const float (&c)[N]) {
  return HornerSteps(t, c, std::make_index_sequence<N - 1>{});
}

// Coefficients, highest power first: exp's Taylor terms to r^7; erf(x)/x in x^2 on [0, 1],
// erfc(x) e^(x^2) in 1/x on [1, 4], tanh(x)/x in x^2 on [0, 0.625] (fits:
// tools/fit_vector_math.py).
inline constexpr float kExpTaylor[] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24,
                                       1.0f / 6,    0.5f,       1.0f,       1.0f};
inline constexpr float kErfSmall[] = {7.9710484321e-05f, -8.0433740164e-04f, 5.1918332987e-03f,
                                      -2.6855509263e-02f, 1.1283622048e-01f, -3.7612628736e-01f,
                                      1.1283791661e+00f};
inline constexpr float kErfcLarge[] = {
    -3.9965329982e-02f, 2.7474841525e-01f, -8.3613424971e-01f, 1.4612675459e+00f,
    -1.5587186565e+00f, 9.2092193035e-01f, -7.8174774707e-02f, -2.8273612739e-01f,
    2.5891771962e-03f,  5.6376148807e-01f, 2.4153163203e-05f};
inline constexpr float kTanhSmall[] = {2.1656799384e-03f, -8.1998555827e-03f, 2.1708451542e-02f,
                                       -5.3947800438e-02f, 1.3333208684e-01f, -3.3333330478e-01f,
                                       9.9999999989e-01f};

// Constants of the GELU formulas that the elementwise ops and the fused JIT share (doubles:
// f64 kernels use them as they are, f32 ones rounded once): 1/sqrt(2); sqrt(2/pi) and the
// cubic's coefficient of the tanh approximation; 1/sqrt(2 pi), the normal density's scale.
inline constexpr double kSqrt1_2 = 0.70710678118654752440;
inline constexpr double kGeluTanhBeta = 1.41421356237309504880 * 1.12837916709551257390 * 0.5;
inline constexpr double kGeluTanhKappa = 0.044715;
inline constexpr double kGeluPdfScale = 1.12837916709551257390 * kSqrt1_2 * 0.5;

// Below kExpMin e^x is 0 in float (no denormals), above kExpMax inf; x / ln2 is rounded to
// an integer by adding kRoundShift = 1.5 * 2^23 (which pushes the fraction out of the
// mantissa); ln2 = kLn2Hi + kLn2Lo, with n * kLn2Hi exact in float for the n that occur.
inline constexpr float kExpMin = -87.33654f, kExpMax = 88.72283f;
inline constexpr float kLog2e = 1.44269504088896341f, kRoundShift = 12582912.0f;
inline constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
// e^r for r = x - n ln2 (Cody-Waite: ln2 split so that n * hi is exact in float), |r| <=
// ln2 / 2: the Taylor polynomial that Exp and ExpNonPositive scale by 2^n.
TG_VMATH_INLINE float ExpOfReduced(float x, float n) {
  float r = Fma(-n, kLn2Hi, x);
  r = Fma(-n, kLn2Lo, r);
  return Horner(r, kExpTaylor);
}

// e^x: x = n ln2 + r (Cody-Waite), |r| <= ln2 / 2, Taylor to r^7, scale by 2^n via exponent
// bits. Overflow gives inf, underflow 0 (no denormals), NaN propagates.
TG_VMATH_INLINE float Exp(float x) {
  // Clamped (NaN gives kExpMin: its result is replaced by x at the end); n = xc / ln2 rounded.
  const float xc = Lesser(Greater(x, kExpMin), kExpMax);
  const float n = Fma(xc, kLog2e, kRoundShift) - kRoundShift;
  const float p = ExpOfReduced(xc, n);
  // 2^n in two factors: n reaches 128 at the top of the range and -126 at the bottom, where
  // one biased exponent would be inf or denormal.
  const int32_t ni = static_cast<int32_t>(n);
  const int32_t half = ni / 2;
  const float scale_a = std::bit_cast<float>((half + 127) << 23);
  const float scale_b = std::bit_cast<float>((ni - half + 127) << 23);
  float y = p * scale_a * scale_b;
  y = x > kExpMax ? std::numeric_limits<float>::infinity() : y;
  y = x < kExpMin ? 0.0f : y;
  return IsNan(x) ? x : y;
}

// e^x where the caller knows x <= 0 (softmax's x - max, a log-probability, GELU's -x^2 / 2;
// exact as Exp up to x = 88): no overflow to handle, so 2^n is one exponent field (n >= -126
// once x is clamped at the underflow bound) taken from the rounding constant's bits, not a
// float-to-int conversion, and NaN needs no select (it passes through the clamp and every
// product). The same results as Exp; about a third fewer vector instructions.
TG_VMATH_INLINE float ExpNonPositive(float x) {
  const float xc = kExpMin > x ? kExpMin : x;     // NaN passes
  const float t = Fma(xc, kLog2e, kRoundShift);  // n in the low mantissa bits
  const float n = t - kRoundShift;
  const uint32_t n_bits = std::bit_cast<uint32_t>(t) - std::bit_cast<uint32_t>(kRoundShift);
  const float y = ExpOfReduced(xc, n) * std::bit_cast<float>((n_bits + 127u) << 23);
  return x < kExpMin ? 0.0f : y;
}

// 1 / (1 + e^-x) from e = e^-|x|, which never overflows: 1 / (1 + e) for x >= 0, e / (1 + e)
// below (one division either way), so ExpNonPositive serves both signs. Within 2 ulp of the
// double formula; below x = -87.3 it gives 0 (as 1 / (1 + Exp(-x)) does from -88.7: the
// values between are below 1e-38). NaN passes through e; +-inf give 1 and 0.
TG_VMATH_INLINE float Sigmoid(float x) {
  const float e = ExpNonPositive(-std::fabs(x));
  const float r = 1.0f / (1.0f + e);
  return x >= 0.0f ? r : e * r;
}

// erf: x * P(x^2) for |x| < 1; 1 - exp(-x^2) * Q(1/x) for 1 <= |x| < 4; +-1 beyond (erfc(4)
// = 1.5e-8 is below half an ulp of 1).
inline constexpr float kErfSaturate = 4.0f;
TG_VMATH_INLINE float Erf(float x) {
  const float a = std::fabs(x);
  const float s = a * a;
  const float small = a * Horner(s, kErfSmall);
  const float large = Fma(-Exp(-s), Horner(1.0f / Greater(a, 1.0f), kErfcLarge), 1.0f);
  float y = a < 1.0f ? small : (a < kErfSaturate ? large : 1.0f);
  y = std::copysign(y, x);
  return IsNan(x) ? x : y;
}

// erf for GELU: one rational function, x * P(x^2) / Q(x^2), fitted on |x| <= 3.92 for
// relative error (tools/fit_vector_math.py; beyond, erf is 1 to within 4.2e-8). No exp, no
// branch pair: 2.5x cheaper than Erf, at the price of accuracy, within 3.5e-7 absolute and
// relative (Erf: 1.8e-7); GELU's x/2 (1 + erf) then errs by at most 1.8e-7 |x|.
inline constexpr float kErfRationalP[] = {1.9926018280e-08f, -1.9578318337e-06f,
                                          1.4183134959e-04f, 3.7007045440e-03f,
                                          5.0570419981e-02f, 1.9990255528e-01f,
                                          1.1283791094e+00f};
inline constexpr float kErfRationalQ[] = {9.5582806876e-04f, 1.4351342447e-02f,
                                          1.1498933421e-01f, 5.1049068585e-01f, 1.0f};
// Evaluated on a = |x| with the sign put back last, so that one clamp at 1 covers both ends
// (the fit reaches 1 + 3.6e-7 near 3.86): the argument of P and Q is capped at 3.92^2
// instead of clamping x, and a * R(3.92^2) >= 1 - 4e-7 rises past 1 for larger a. The same
// results as clamping x to +-3.92 and y to +-1, with a third fewer vector instructions (GCC
// lowers each NaN-passing clamp to compares and blends, not min / max): GELU 0.63 -> 0.51 ns
// per element on one AVX-512 core. NaN passes through a (no compare is true for it), inf
// gives +-1.
inline constexpr float kErfFastMaxSquare = 3.92f * 3.92f;
TG_VMATH_INLINE float ErfFast(float x) {
  const float a = std::fabs(x);
  const float s = Lesser(a * a, kErfFastMaxSquare);
  const float y = a * Horner(s, kErfRationalP) / Horner(s, kErfRationalQ);
  return std::copysign(1.0f < y ? 1.0f : y, x);
}

// tanh: x * P(x^2) for |x| < 0.625; 1 - 2 / (e^(2|x|) + 1) beyond, with the sign of x.
// (e^40 + 1 is 2.35e17: 2 / it is below half an ulp of 1, so |x| is capped at 20.)
inline constexpr float kTanhSmallBound = 0.625f, kTanhMaxArg = 20.0f;
TG_VMATH_INLINE float Tanh(float x) {
  const float a = std::fabs(x);
  const float s = a * a;
  const float small = a * Horner(s, kTanhSmall);
  const float large = 1.0f - 2.0f / (Exp(2.0f * Lesser(a, kTanhMaxArg)) + 1.0f);
  float y = a < kTanhSmallBound ? small : large;
  y = std::copysign(y, x);
  return IsNan(x) ? x : y;
}

// Sum over k < n of term(k), in double over 8 independent lanes: vectorizable, where one
// serial chain of adds is bound by the add latency. The lane order changes the rounding of
// the double sum only (far below float precision).
template <typename F>
TG_VMATH_INLINE double LaneSum(int64_t n, F term) {
  double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    for (int j = 0; j < 8; ++j) lanes[j] += term(k + j);
  }
  double s = 0;
  for (; k < n; ++k) s += term(k);
  for (double l : lanes) s += l;
  return s;
}

// Float sums at float speed with near-double accuracy: 16 float lanes summed over blocks of
// 256 terms (no lane adds more than 16 terms in float), each block's lanes added into 8
// double lanes. The error is that of a 16-term float sum, not of an n-term one.
// A term is a generic lambda over a loader, e.g. [=](auto at) { return at(x) - mean; }: it is
// called with LanesAt (at(p) = p[j..j+15] as a GCC vector type, scalars broadcast) and for
// the last n % 16 terms with ScalarAt (at(p) = p[j]). Explicit vector types, not loops over
// lanes: GCC leaves lane loops fed by lambdas partly scalar, and lowers these types to
// whatever width the build has (one zmm, two ymm, four xmm). BlockedFloatSums sums several
// terms over the same range in one loop (the operands read once).
typedef float Float16 __attribute__((vector_size(64)));
typedef float Float8 __attribute__((vector_size(32)));
typedef double Double8 __attribute__((vector_size(64)));
inline constexpr int64_t kFloatLanes = 16, kFloatBlock = 256;

typedef uint16_t U16x16 __attribute__((vector_size(32)));
typedef uint32_t U32x16 __attribute__((vector_size(64)));
struct LanesAt {
  int64_t j;
  TG_VMATH_INLINE Float16 operator()(const float* p) const {
    Float16 v;
    __builtin_memcpy(&v, p + j, sizeof(v));
    return v;
  }
  // bf16 elements widened (their bits are a float's top half).
  TG_VMATH_INLINE Float16 operator()(const cpu::BFloat16Value* p) const {
    U16x16 h;
    __builtin_memcpy(&h, p + j, sizeof(h));
    const U32x16 u = __builtin_convertvector(h, U32x16) << 16;
    Float16 v;
    __builtin_memcpy(&v, &u, sizeof(v));
    return v;
  }
  TG_VMATH_INLINE Float16 operator()(const cpu::HalfValue* p) const {
    Float16 v;
    for (int l = 0; l < 16; ++l) v[l] = p[j + l];
    return v;
  }
};
struct ScalarAt {
  int64_t j;
  template <typename T>
  TG_VMATH_INLINE float operator()(const T* p) const { return p[j]; }
};

TG_VMATH_INLINE void AddBlock(Double8& total, const Float16& lanes) {
  const Float8 lo = __builtin_shufflevector(lanes, lanes, 0, 1, 2, 3, 4, 5, 6, 7);
  const Float8 hi = __builtin_shufflevector(lanes, lanes, 8, 9, 10, 11, 12, 13, 14, 15);
  total += __builtin_convertvector(lo, Double8) + __builtin_convertvector(hi, Double8);
}
TG_VMATH_INLINE double SumLanes8(const Double8& v) {
  double s = 0;
  for (int l = 0; l < 8; ++l) s += v[l];
  return s;
}

// sums[t] = the sum over k < n of terms[t](k), all terms in one loop.
template <typename... F>
TG_VMATH_INLINE void BlockedFloatSums(int64_t n, double* sums, F... terms) {
  constexpr size_t kTerms = sizeof...(F);
  Double8 total[kTerms] = {};
  int64_t j = 0;
  while (j + kFloatLanes <= n) {
    const int64_t end = j + kFloatBlock < n ? j + kFloatBlock : n;
    Float16 lanes[kTerms] = {};
    for (; j + kFloatLanes <= end; j += kFloatLanes) {
      size_t t = 0;
      ((lanes[t++] += terms(LanesAt{j})), ...);
    }
    for (size_t t = 0; t < kTerms; ++t) AddBlock(total[t], lanes[t]);
  }
  double rest[kTerms] = {};
  for (; j < n; ++j) {
    size_t t = 0;
    ((rest[t++] += terms(ScalarAt{j})), ...);
  }
  for (size_t t = 0; t < kTerms; ++t) sums[t] = SumLanes8(total[t]) + rest[t];
}
template <typename F>
TG_VMATH_INLINE double BlockedFloatSum(int64_t n, F term) {
  double sum = 0;
  BlockedFloatSums(n, &sum, term);
  return sum;
}

// The largest of p[0..n), 16 lanes at a time: a serial chain of compares runs at their
// latency (~3 cycles per element; a softmax over rows of 70 spent most of its time there).
// -inf when n == 0; with a NaN in p, the result may be NaN or the largest other value.
TG_VMATH_INLINE float MaxOf(const float* p, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  int64_t j = 0;
  if (n >= kFloatLanes) {
    Float16 lanes = LanesAt{0}(p);
    for (j = kFloatLanes; j + kFloatLanes <= n; j += kFloatLanes) {
      const Float16 v = LanesAt{j}(p);
      lanes = lanes > v ? lanes : v;
    }
    for (int l = 0; l < kFloatLanes; ++l) m = Greater(m, lanes[l]);
  }
  for (; j < n; ++j) m = Greater(m, p[j]);
  return m;
}

// Sum of v; of (v - mean)^2; of a * (b - mean).
template <typename T>
double SumLanes(const T* v, int64_t n) {
  return LaneSum(n, [v](int64_t k) { return static_cast<double>(v[k]); });
}
template <typename T>
double SumSquaredDeviation(const T* v, int64_t n, double mean) {
  return LaneSum(n, [v, mean](int64_t k) { return (v[k] - mean) * (v[k] - mean); });
}
template <typename A, typename B>
double SumProductDeviation(const A* a, const B* b, int64_t n, double mean) {
  return LaneSum(n, [a, b, mean](int64_t k) { return a[k] * (b[k] - mean); });
}

inline double Exp(double x) { return std::exp(x); }
inline double Erf(double x) { return std::erf(x); }
inline double ErfFast(double x) { return std::erf(x); }
inline double ExpNonPositive(double x) { return std::exp(x); }
inline double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
inline double Tanh(double x) { return std::tanh(x); }

}  // namespace tg::vmath
