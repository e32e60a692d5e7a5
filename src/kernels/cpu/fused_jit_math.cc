// The fused JIT's code generator and its vector math (see fused_jit_code.h). Each function
// below mirrors the vmath function or op functor of the same name (kernels/cpu/vector_math.h,
// ops/elementwise_unary.cc, ops/elementwise_activation_backward.cc) operation for operation:
// a product, sum or quotient there is one instruction here, vmath::Fma is one FMA, a select
// is a compare and a blend. Operand order matters where NaN does: x86's min / max return
// their second operand when either is NaN, as Lesser / Greater (a < b ? a : b) do.
#ifdef TILEGRAPH_HAVE_XBYAK
#include "kernels/cpu/fused_jit_code.h"

#include <algorithm>
#include <bit>
#include <limits>

#include "kernels/cpu/vector_math.h"

namespace tg::cpu::jit {

namespace {
constexpr int kTableCapacity = 128;  // constant vectors
}  // namespace

bool IsActivation(JitOp op) { return op >= JitOp::kExp; }

VectorCode::VectorCode(size_t code_bytes, bool avx512)
    : Xbyak::CodeGenerator(code_bytes, Xbyak::DontSetProtectRWE), avx512_(avx512) {
  free_.assign(avx512 ? 32 : 16, true);
  if (!avx512) {  // AVX selects take their mask from a register: the last one, kept out
    free_.back() = false;
    mask_ = V(static_cast<int>(free_.size()) - 1);
  }
  // Vector-aligned (the loads are vmovaps), so 16 spare lanes.
  table_.assign(static_cast<size_t>(kTableCapacity) * (avx512 ? 16 : 8) + 16, 0);
  const uintptr_t at = reinterpret_cast<uintptr_t>(table_.data());
  table_base_ = table_.data() + ((64 - at % 64) % 64) / sizeof(uint32_t);
}

int VectorCode::Take() {
  for (size_t r = 0; r < free_.size(); ++r) {
    if (free_[r]) {
      free_[r] = false;
      return static_cast<int>(r);
    }
  }
  return -1;
}

void VectorCode::Give(int r) { free_[r] = true; }

Xbyak::Address VectorCode::KBits(uint32_t bits) {
  const int width = avx512_ ? 16 : 8;
  auto it = table_index_.find(bits);
  if (it == table_index_.end()) {
    const int index = static_cast<int>(table_index_.size());
    if (index >= kTableCapacity) {
      table_full_ = true;
      return ptr[r9];
    }
    std::fill_n(table_base_ + static_cast<ptrdiff_t>(index) * width, width, bits);
    it = table_index_.emplace(bits, index).first;
  }
  return ptr[r9 + it->second * width * 4];
}

Xbyak::Address VectorCode::K(float v) { return KBits(std::bit_cast<uint32_t>(v)); }

void VectorCode::LoadTableBase() { mov(r9, reinterpret_cast<uintptr_t>(table_base_)); }

void VectorCode::And(const Xmm& d, const Xmm& a, const Operand& b) {
  if (avx512_) vpandd(d, a, b); else vpand(d, a, b);
}
void VectorCode::AndNot(const Xmm& d, const Xmm& a, const Operand& b) {
  if (avx512_) vpandnd(d, a, b); else vpandn(d, a, b);
}
void VectorCode::Or(const Xmm& d, const Xmm& a, const Operand& b) {
  if (avx512_) vpord(d, a, b); else vpor(d, a, b);
}
void VectorCode::Xor(const Xmm& d, const Xmm& a, const Operand& b) {
  if (avx512_) vpxord(d, a, b); else vpxor(d, a, b);
}

void VectorCode::Select(const Xmm& d, const Xmm& a, const Operand& b, int pred,
                        const Operand& if_true, const Xmm& if_false) {
  if (avx512_) {
    vcmpps(k1, a, b, pred);
    vblendmps(d | k1, if_false, if_true);
  } else {
    vcmpps(mask_, a, b, pred);
    vblendvps(d, if_false, if_true, mask_);
  }
}

class VectorCode::Scratch {
 public:
  Scratch(VectorCode* code, int n) : code_(code) {
    for (int i = 0; i < n; ++i) {
      const int r = code->Take();
      if (r < 0) {
        ok_ = false;
        return;
      }
      regs_.push_back(r);
    }
  }
  ~Scratch() {
    for (int r : regs_) code_->Give(r);
  }
  bool ok() const { return ok_; }
  Xmm operator[](int i) const { return code_->V(regs_[i]); }

 private:
  VectorCode* code_;
  std::vector<int> regs_;
  bool ok_ = true;
};

// vmath::Horner: p = c[0]; p = Fma(p, t, c[i]) for the rest.
void VectorCode::Horner(const Xmm& p, const Xmm& t, const float* c, size_t n) {
  vmovaps(p, K(c[0]));
  for (size_t i = 1; i < n; ++i) vfmadd213ps(p, t, K(c[i]));  // p = t * p + c[i]
}

// y = std::copysign(y, x).
void VectorCode::CopySign(const Xmm& y, const Xmm& x, const Xmm& scratch) {
  And(y, y, KBits(kMagnitude));
  And(scratch, x, KBits(kSignBit));
  Or(y, y, scratch);
}

bool VectorCode::Exp(const Xmm& y, const Xmm& x) {
  Scratch s(this, 3);
  if (!s.ok()) return false;
  const Xmm xc = s[0], n = s[1], half = s[2];
  vmaxps(xc, x, K(vmath::kExpMin));  // Greater(x, kExpMin)
  vminps(xc, xc, K(vmath::kExpMax));
  vmovaps(n, K(vmath::kLog2e));
  vfmadd213ps(n, xc, K(vmath::kRoundShift));  // Fma(xc, log2e, shift)
  vsubps(n, n, K(vmath::kRoundShift));
  // ExpOfReduced(xc, n), r in xc's register.
  vfnmadd231ps(xc, n, K(vmath::kLn2Hi));  // Fma(-n, hi, xc)
  vfnmadd231ps(xc, n, K(vmath::kLn2Lo));
  Horner(y, xc, vmath::kExpTaylor);
  // 2^n as two factors: ni / 2 (rounded toward zero) and ni - ni / 2.
  const Xmm ni = xc;
  vcvttps2dq(ni, n);
  vpsrld(half, ni, 31);
  vpaddd(half, half, ni);
  vpsrad(half, half, 1);
  vpsubd(ni, ni, half);
  vpaddd(ni, ni, KBits(127));
  vpslld(ni, ni, 23);
  vpaddd(half, half, KBits(127));
  vpslld(half, half, 23);
  vmulps(y, y, half);
  vmulps(y, y, ni);
  Select(y, x, K(vmath::kExpMax), kGtOq, K(std::numeric_limits<float>::infinity()), y);
  Select(y, x, K(vmath::kExpMin), kLtOq, K(0.0f), y);
  Select(y, x, x, kUnord, x, y);
  return true;
}

bool VectorCode::ExpNonPositive(const Xmm& y, const Xmm& x) {
  Scratch s(this, 3);
  if (!s.ok()) return false;
  const Xmm xc = s[0], t = s[1], n = s[2];
  vmovaps(xc, K(vmath::kExpMin));
  vmaxps(xc, xc, x);  // kExpMin > x ? kExpMin : x
  vmovaps(t, K(vmath::kLog2e));
  vfmadd213ps(t, xc, K(vmath::kRoundShift));
  vsubps(n, t, K(vmath::kRoundShift));
  vfnmadd231ps(xc, n, K(vmath::kLn2Hi));
  vfnmadd231ps(xc, n, K(vmath::kLn2Lo));
  Horner(y, xc, vmath::kExpTaylor);
  vpsubd(t, t, K(vmath::kRoundShift));  // n's bits
  vpaddd(t, t, KBits(127));
  vpslld(t, t, 23);
  vmulps(y, y, t);
  Select(y, x, K(vmath::kExpMin), kLtOq, K(0.0f), y);
  return true;
}

bool VectorCode::Sigmoid(const Xmm& y, const Xmm& x) {
  Scratch s(this, 2);
  if (!s.ok()) return false;
  const Xmm u = s[0], e = s[1];
  Or(u, x, KBits(kSignBit));  // -|x|
  if (!ExpNonPositive(e, u)) return false;
  vaddps(u, e, K(1.0f));
  vmovaps(y, K(1.0f));
  vdivps(y, y, u);  // r = 1 / (1 + e)
  vmulps(u, e, y);  // e * r
  Select(y, x, K(0.0f), kGeOq, y, u);
  return true;
}

bool VectorCode::Tanh(const Xmm& y, const Xmm& x) {
  Scratch s(this, 3);
  if (!s.ok()) return false;
  const Xmm a = s[0], small = s[1], t = s[2];
  And(a, x, KBits(kMagnitude));
  vmulps(t, a, a);
  Horner(small, t, vmath::kTanhSmall);
  vmulps(small, a, small);
  vminps(t, a, K(vmath::kTanhMaxArg));  // Lesser(a, 20)
  vmulps(t, t, K(2.0f));
  if (!Exp(y, t)) return false;
  vaddps(y, y, K(1.0f));
  vmovaps(t, K(2.0f));
  vdivps(t, t, y);
  vmovaps(y, K(1.0f));
  vsubps(y, y, t);  // large = 1 - 2 / (e + 1)
  Select(y, a, K(vmath::kTanhSmallBound), kLtOq, small, y);
  CopySign(y, x, t);
  Select(y, x, x, kUnord, x, y);
  return true;
}

bool VectorCode::Erf(const Xmm& y, const Xmm& x) {
  Scratch s(this, 4);
  if (!s.ok()) return false;
  const Xmm a = s[0], sq = s[1], small = s[2], t = s[3];
  And(a, x, KBits(kMagnitude));
  vmulps(sq, a, a);
  Horner(small, sq, vmath::kErfSmall);
  vmulps(small, a, small);
  vmaxps(t, a, K(1.0f));  // Greater(a, 1)
  vmovaps(y, K(1.0f));
  vdivps(t, y, t);
  Horner(y, t, vmath::kErfcLarge);
  Xor(t, sq, KBits(kSignBit));  // -s
  if (!Exp(sq, t)) return false;
  vfnmadd213ps(y, sq, K(1.0f));  // large = Fma(-e, h, 1)
  Select(y, a, K(vmath::kErfSaturate), kNltUq, K(1.0f), y);
  Select(y, a, K(1.0f), kLtOq, small, y);
  CopySign(y, x, t);
  Select(y, x, x, kUnord, x, y);
  return true;
}

bool VectorCode::ErfFast(const Xmm& y, const Xmm& x) {
  Scratch s(this, 2);
  if (!s.ok()) return false;
  const Xmm a = s[0], sq = s[1];
  And(a, x, KBits(kMagnitude));
  vmulps(sq, a, a);
  vminps(sq, sq, K(vmath::kErfFastMaxSquare));  // Lesser(a * a, 3.92^2)
  Horner(y, sq, vmath::kErfRationalP);
  vmulps(y, a, y);
  Horner(a, sq, vmath::kErfRationalQ);
  vdivps(y, y, a);
  vmovaps(a, K(1.0f));
  vminps(y, a, y);  // 1 < y ? 1 : y
  CopySign(y, x, a);
  return true;
}

// Gelu::Eval: x * 0.5 * (1 + erf(x / sqrt 2)), or its tanh approximation
// 0.5 * x * (1 + tanh(beta * (x + kappa * x^3))).
bool VectorCode::Gelu(const Xmm& y, const Xmm& x, bool tanh) {
  Scratch s(this, 1);
  if (!s.ok()) return false;
  const Xmm u = s[0];
  if (tanh) {
    vmulps(u, x, K(static_cast<float>(vmath::kGeluTanhKappa)));
    vmulps(u, u, x);
    vmulps(u, u, x);
    vaddps(u, x, u);
    vmulps(u, u, K(static_cast<float>(vmath::kGeluTanhBeta)));
    if (!Tanh(y, u)) return false;
  } else {
    vmulps(u, x, K(static_cast<float>(vmath::kSqrt1_2)));
    if (!ErfFast(y, u)) return false;
  }
  vaddps(y, y, K(1.0f));
  vmulps(u, x, K(0.5f));
  vmulps(y, u, y);
  return true;
}

// GeluBackward::Eval.
bool VectorCode::GeluBackward(const Xmm& y, const Xmm& go, const Xmm& x, bool tanh) {
  Scratch s(this, 3);
  if (!s.ok()) return false;
  const Xmm u = s[0], v = s[1], w = s[2];
  if (tanh) {
    const float beta = static_cast<float>(vmath::kGeluTanhBeta);
    const float kappa = static_cast<float>(vmath::kGeluTanhKappa);
    vmulps(u, x, x);  // x_sq
    vmulps(v, u, K(kappa));
    vmulps(v, v, x);
    vaddps(v, x, v);
    vmulps(v, v, K(beta));  // inner
    if (!Tanh(y, v)) return false;
    vmulps(v, u, K(3.0f * kappa));
    vaddps(v, v, K(1.0f));
    vmulps(v, v, K(beta));  // inner_derivative
    vmulps(u, y, y);
    vmovaps(w, K(1.0f));
    vsubps(u, w, u);        // 1 - t * t
    vmulps(w, x, K(0.5f));  // left
    vmulps(u, w, u);
    vmulps(u, u, v);        // right_derivative
    vaddps(y, y, K(1.0f));
    vmulps(y, y, K(0.5f));  // left_derivative
    vaddps(y, y, u);
  } else {
    vmulps(u, x, K(static_cast<float>(vmath::kSqrt1_2)));
    if (!ErfFast(v, u)) return false;
    vaddps(v, v, K(1.0f));
    vmulps(v, v, K(0.5f));  // cdf
    vmulps(u, x, x);
    vmulps(u, u, K(-0.5f));
    if (!ExpNonPositive(y, u)) return false;
    vmulps(y, y, K(static_cast<float>(vmath::kGeluPdfScale)));  // pdf
    vmulps(y, x, y);
    vaddps(y, v, y);
  }
  vmulps(y, go, y);
  return true;
}

// std::min(std::max(x + 3, 0), 6): max(a, b) is (a < b) ? b : a, min(a, b) (b < a) ? b : a.
bool VectorCode::Relu6OfXPlus3(const Xmm& y, const Xmm& x) {
  Scratch s(this, 1);
  if (!s.ok()) return false;
  const Xmm c = s[0];
  vaddps(y, x, K(3.0f));
  vmovaps(c, K(0.0f));
  vmaxps(y, c, y);  // 0 > v ? 0 : v
  vmovaps(c, K(6.0f));
  vminps(y, c, y);  // 6 < v ? 6 : v
  return true;
}

bool VectorCode::EmitActivation(JitOp op, const std::vector<double>& params, int d,
                                const int* in) {
  const Xmm y = V(d), x = V(in[0]);
  const Xmm b = op >= JitOp::kThresholdBackward ? V(in[1]) : x;  // (grad_output, x or y)
  const bool mode = !params.empty() && params[0] != 0;
  switch (op) {
    case JitOp::kExp: return Exp(y, x);
    case JitOp::kSigmoid: return Sigmoid(y, x);
    case JitOp::kTanh: return Tanh(y, x);
    case JitOp::kSilu:
      if (!Sigmoid(y, x)) return false;
      vmulps(y, x, y);
      return true;
    case JitOp::kErf: return Erf(y, x);
    case JitOp::kGelu: return Gelu(y, x, mode);
    case JitOp::kReciprocal:
      vmovaps(y, K(1.0f));
      vdivps(y, y, x);
      return true;
    case JitOp::kRsqrt: {
      Scratch s(this, 1);
      if (!s.ok()) return false;
      vsqrtps(s[0], x);
      vmovaps(y, K(1.0f));
      vdivps(y, y, s[0]);
      return true;
    }
    case JitOp::kHardswish:
    case JitOp::kHardsigmoid: {
      Scratch s(this, 1);
      if (!s.ok() || !Relu6OfXPlus3(s[0], x)) return false;
      if (op == JitOp::kHardswish) {
        vmulps(y, x, s[0]);
      } else {
        vmovaps(y, s[0]);
      }
      vdivps(y, y, K(6.0f));
      return true;
    }
    case JitOp::kThresholdBackward:  // x <= threshold ? 0 : go
      if (params.empty()) return false;
      Select(y, b, K(static_cast<float>(params[0])), kLeOq, K(0.0f), x);
      return true;
    case JitOp::kGeluBackward: return GeluBackward(y, x, b, mode);
    case JitOp::kSiluBackward: {  // go * s * (1 + x * (1 - s)), s = sigmoid(x)
      Scratch s(this, 1);
      if (!s.ok() || !Sigmoid(s[0], b)) return false;
      vmovaps(y, K(1.0f));
      vsubps(y, y, s[0]);
      vmulps(y, b, y);
      vaddps(y, y, K(1.0f));
      vmulps(s[0], x, s[0]);
      vmulps(y, s[0], y);
      return true;
    }
    case JitOp::kSigmoidBackward:  // go * (1 - y) * y
      vmovaps(y, K(1.0f));
      vsubps(y, y, b);
      vmulps(y, x, y);
      vmulps(y, y, b);
      return true;
    case JitOp::kTanhBackward: {  // go * (1 - y * y)
      Scratch s(this, 1);
      if (!s.ok()) return false;
      vmulps(s[0], b, b);
      vmovaps(y, K(1.0f));
      vsubps(y, y, s[0]);
      vmulps(y, x, y);
      return true;
    }
    case JitOp::kHardswishBackward:  // x < -3 ? 0 : x <= 3 ? go * (x / 3 + 0.5) : go
      vdivps(y, b, K(3.0f));
      vaddps(y, y, K(0.5f));
      vmulps(y, x, y);
      Select(y, b, K(3.0f), kLeOq, y, x);
      Select(y, b, K(-3.0f), kLtOq, K(0.0f), y);
      return true;
    default: return false;
  }
}

}  // namespace tg::cpu::jit
#endif  // TILEGRAPH_HAVE_XBYAK
