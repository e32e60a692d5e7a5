// The fused JIT's code generator (fused_jit.cc builds its loop on it): xbyak over AVX-512
// (zmm, 16 floats) or AVX2 (ymm, 8 floats), with a pool of vector registers, a table of
// constants in memory (one full vector each, addressed from r9: functions like exp need more
// constants than there are registers) and the vector math of the activation ops
// (fused_jit_math.cc): vector_math.h's exp, sigmoid, tanh, erf and the ops built on them,
// operation for operation as the C++ computes them. The files that define elementwise ops are
// compiled with -ffp-contract=off and vmath writes its FMAs out (vmath::Fma), so the C++
// rounds exactly where the source says and this code rounds at the same places: results are
// bit-identical to the interpreter's. Only for builds with FMA (kMathMatchesBuild).
// Internal to kernels/cpu; included only where TILEGRAPH_HAVE_XBYAK is defined.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include <xbyak/xbyak.h>

#include "kernels/cpu/fused_kernel.h"

namespace tg::cpu::jit {

// Whether the interpreter's vector math rounds as this code does: its FMAs are FMAs only
// where the build targets FMA (x86-64-v3 and up); elsewhere the JIT leaves it to the
// interpreter.
#ifdef __FMA__
inline constexpr bool kMathMatchesBuild = true;
#else
inline constexpr bool kMathMatchesBuild = false;
#endif

// Bit patterns and vcmpps predicates both halves of the generator use.
inline constexpr uint32_t kSignBit = 0x80000000u, kMagnitude = 0x7fffffffu;
inline constexpr int kEqOq = 0x00, kUnord = 0x03, kNeqUq = 0x04, kNltUq = 0x05, kLtOq = 0x11,
                     kLeOq = 0x12, kGeOq = 0x1D, kGtOq = 0x1E;

// The activation steps (exp .. hardswish_backward in JitOp), emitted by EmitActivation.
bool IsActivation(JitOp op);

class VectorCode : public Xbyak::CodeGenerator {
 public:
  using Xmm = Xbyak::Xmm;
  using Operand = Xbyak::Operand;
  VectorCode(size_t code_bytes, bool avx512);

 protected:
  // A full-width register, and its lower half (the register a vector of 16-bit values fits).
  Xmm V(int r) const { return avx512_ ? Xmm(Xbyak::Zmm(r)) : Xmm(Xbyak::Ymm(r)); }
  Xmm Half(int r) const { return avx512_ ? Xmm(Xbyak::Ymm(r)) : Xmm(r); }
  int Take();  // a free register, or -1
  void Give(int r);

  // A constant vector in the table (every lane `bits`); K(v) for a float. The generated
  // function must start with LoadTableBase(). Past the table's capacity table_full() turns
  // true and the code must be discarded.
  Xbyak::Address KBits(uint32_t bits);
  Xbyak::Address K(float v);
  void LoadTableBase();
  bool table_full() const { return table_full_; }

  // Bitwise ops (the EVEX forms on zmm); b may be a register or a table constant.
  void And(const Xmm& d, const Xmm& a, const Operand& b);
  void AndNot(const Xmm& d, const Xmm& a, const Operand& b);  // ~a & b
  void Or(const Xmm& d, const Xmm& a, const Operand& b);
  void Xor(const Xmm& d, const Xmm& a, const Operand& b);
  // d = (a <pred> b) ? if_true : if_false, lane by lane (vcmpps predicates); the mask in k1
  // (AVX-512) or the reserved mask register (AVX). d may be any of the registers.
  void Select(const Xmm& d, const Xmm& a, const Operand& b, int pred, const Operand& if_true,
              const Xmm& if_false);

  // The activation step `op` with the op's params on the values in registers `in` (one, or
  // two for the backward helpers: grad_output first), into register `d`, which must not be
  // one of them. False when registers or the constant table run out.
  bool EmitActivation(JitOp op, const std::vector<double>& params, int d, const int* in);

  bool avx512_;

 private:
  // Registers for one emitter, given back when it returns; ok() false if too few were free.
  class Scratch;

  // vmath's functions: y = f(x), y != x, x unchanged. False when registers run out.
  void Horner(const Xmm& p, const Xmm& t, const float* c, size_t n);
  template <size_t N>
  void Horner(const Xmm& p, const Xmm& t, const float (&c)[N]) { Horner(p, t, c, N); }
  void CopySign(const Xmm& y, const Xmm& x, const Xmm& scratch);
  bool Exp(const Xmm& y, const Xmm& x);
  bool ExpNonPositive(const Xmm& y, const Xmm& x);
  bool Sigmoid(const Xmm& y, const Xmm& x);
  bool Tanh(const Xmm& y, const Xmm& x);
  bool Erf(const Xmm& y, const Xmm& x);
  bool ErfFast(const Xmm& y, const Xmm& x);
  // The ops whose formulas take more than one vmath call.
  bool Gelu(const Xmm& y, const Xmm& x, bool tanh);
  bool GeluBackward(const Xmm& y, const Xmm& go, const Xmm& x, bool tanh);
  bool Relu6OfXPlus3(const Xmm& y, const Xmm& x);

  std::vector<bool> free_;
  Xmm mask_;                              // AVX: the select mask's register
  std::vector<uint32_t> table_;           // kTableCapacity vectors of `width` lanes
  uint32_t* table_base_ = nullptr;        // its first 64-byte aligned lane
  std::map<uint32_t, int> table_index_;   // bits -> vector index
  bool table_full_ = false;
};

}  // namespace tg::cpu::jit
