// The fused elementwise kernel as machine code (see fused_jit.h).
//
// The generated function is
//   void loop(const float* const* arrays, const float* scalars, float* const* outs,
//             int64_t begin, int64_t end)
// over element indices [begin, end), a multiple of the vector width apart. Scalars are
// broadcast into registers once; per vector, each array operand is loaded when a step first
// reads it, every step is one instruction (two for where) on registers, and each output is
// stored at the end of the iteration, after every load of that index: an output may share
// its buffer with an input (in-place updates), as with the interpreter. Registers are given
// out in program order and returned after a value's last use; a program that needs more than
// the register file returns no kernel (the interpreter runs it).
#include "kernels/cpu/fused_jit.h"

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/cast_kernels.h"
#include "kernels/cpu/parallel.h"

#ifndef TILEGRAPH_HAVE_XBYAK
namespace tg::cpu {
std::unique_ptr<FusedJitKernel> CompileFusedJit(const FusedProgram<float>&, JitIsa) {
  return nullptr;  // built without xbyak: the interpreter runs every program
}
}  // namespace tg::cpu
#else
#include <xbyak/xbyak.h>
#include <xbyak/xbyak_util.h>

namespace tg::cpu {
namespace {

using LoopFn = void (*)(const float* const*, const float*, float* const*, int64_t, int64_t);

bool JitDisabledByEnvironment() {
  static const bool disabled = [] {
    const char* v = std::getenv("TILEGRAPH_FUSED_JIT");
    return v != nullptr && std::string(v) == "0";
  }();
  return disabled;
}

JitIsa DetectIsa() {
  static const JitIsa isa = [] {
    Xbyak::util::Cpu cpu;
    if (cpu.has(Xbyak::util::Cpu::tAVX512F)) return JitIsa::kAvx512;
    if (cpu.has(Xbyak::util::Cpu::tAVX)) return JitIsa::kAvx;
    return JitIsa::kAuto;  // neither: no JIT
  }();
  return isa;
}

int64_t NumElements(const Dims& d) {
  int64_t n = 1;
  for (int64_t x : d) n *= x;
  return n;
}

int Arity(JitOp op) {
  switch (op) {
    case JitOp::kNeg:
    case JitOp::kSqrt: return 1;
    case JitOp::kWhere: return 3;
    default: return 2;
  }
}

// How the generated loop reaches each program operand.
struct Layout {
  int width = 0;                   // floats per vector
  std::vector<int> array_loads;    // program load index of each `arrays` entry
  std::vector<int> scalar_loads;   // program load index of each `scalars` entry
  int zero_scalar = -1, sign_scalar = -1;  // extra `scalars` entries: 0.0f and -0.0f
  int num_scalars = 0;
};

// Whether the JIT covers the program, and where its operands go.
bool PlanLayout(const FusedProgram<float>& p, int width, Layout* layout) {
  const int64_t numel = NumElements(p.shape);
  layout->width = width;
  for (size_t i = 0; i < p.loads.size(); ++i) {
    const auto& l = p.loads[i];
    const int64_t n = NumElements(l.shape);
    if (n == 1) {
      layout->scalar_loads.push_back(static_cast<int>(i));
    } else if (n == numel && l.stored == Stored::kCompute) {
      layout->array_loads.push_back(static_cast<int>(i));
    } else {
      return false;  // broadcast gathers, bool / half arrays: the interpreter's
    }
  }
  bool where = false, neg = false;
  for (const auto& s : p.steps) {
    if (s.jit == JitOp::kNone || s.round_to != Stored::kCompute) return false;
    if (static_cast<int>(s.in_slots.size()) != Arity(s.jit)) return false;
    where = where || s.jit == JitOp::kWhere;
    neg = neg || s.jit == JitOp::kNeg;
  }
  for (const auto& s : p.stores) {
    if (s.stored != Stored::kCompute) return false;
  }
  layout->num_scalars = static_cast<int>(layout->scalar_loads.size());
  if (where) layout->zero_scalar = layout->num_scalars++;
  if (neg) layout->sign_scalar = layout->num_scalars++;
  return true;
}

// Emits the loop. Throws Xbyak::Error, or returns with ok() false when registers run out.
class LoopGenerator : public Xbyak::CodeGenerator {
 public:
  LoopGenerator(const FusedProgram<float>& p, const Layout& layout, bool avx512)
      : Xbyak::CodeGenerator(4096 + 64 * (p.steps.size() + p.loads.size() + p.stores.size()),
                             Xbyak::DontSetProtectRWE),
        avx512_(avx512) {
    free_.resize(avx512 ? 32 : 16, true);
    ok_ = Generate(p, layout);
    setProtectModeRE();  // written once: executable, never writable again
  }
  bool ok() const { return ok_; }

 private:
  Xbyak::Xmm V(int r) const {
    return avx512_ ? Xbyak::Xmm(Xbyak::Zmm(r)) : Xbyak::Xmm(Xbyak::Ymm(r));
  }
  int Take() {
    for (size_t r = 0; r < free_.size(); ++r) {
      if (free_[r]) {
        free_[r] = false;
        return static_cast<int>(r);
      }
    }
    return -1;
  }

  bool Generate(const FusedProgram<float>& p, const Layout& layout) {
    using namespace Xbyak;
    const Reg64 arrays = rdi, scalars = rsi, outs = rdx, i = rcx, end = r8, base = rax;
    const int nslots = p.num_slots;
    // Last reader of each slot: a step index, or steps.size() for a stored value.
    const int kStoreTime = static_cast<int>(p.steps.size());
    std::vector<int> last(nslots, -1);
    for (size_t k = 0; k < p.steps.size(); ++k) {
      for (int in : p.steps[k].in_slots) last[in] = static_cast<int>(k);
    }
    for (const auto& s : p.stores) last[s.slot] = kStoreTime;
    std::vector<int> array_of(nslots, -1), scalar_of(nslots, -1), reg(nslots, -1);
    for (size_t a = 0; a < layout.array_loads.size(); ++a) {
      array_of[p.loads[layout.array_loads[a]].slot] = static_cast<int>(a);
    }
    for (size_t s = 0; s < layout.scalar_loads.size(); ++s) {
      scalar_of[p.loads[layout.scalar_loads[s]].slot] = static_cast<int>(s);
    }
    // Scalars, 0 and -0 stay in registers for the whole loop.
    auto broadcast = [&](int index) {
      int r = Take();
      if (r >= 0) vbroadcastss(V(r), dword[scalars + 4 * index]);
      return r;
    };
    for (int slot = 0; slot < nslots; ++slot) {
      if (scalar_of[slot] >= 0 && last[slot] >= 0) {
        if ((reg[slot] = broadcast(scalar_of[slot])) < 0) return false;
      }
    }
    const int zero = layout.zero_scalar >= 0 ? broadcast(layout.zero_scalar) : -2;
    const int sign = layout.sign_scalar >= 0 ? broadcast(layout.sign_scalar) : -2;
    if (zero == -1 || sign == -1) return false;
    // An AVX where needs a register for its mask (AVX-512 uses k1).
    const int mask = !avx512_ && zero >= 0 ? Take() : -2;
    if (mask == -1) return false;

    Label loop, done;
    L(loop);
    cmp(i, end);
    jge(done, T_NEAR);
    std::vector<int> loaded;  // array slots loaded in this iteration (their registers recycle)
    auto operand = [&](int slot) -> int {
      if (reg[slot] < 0 && array_of[slot] >= 0) {
        if ((reg[slot] = Take()) < 0) return -1;
        mov(base, qword[arrays + 8 * array_of[slot]]);
        vmovups(V(reg[slot]), ptr[base + i * 4]);
        loaded.push_back(slot);
      }
      return reg[slot];
    };
    auto release = [&](int slot, int now) {
      if (last[slot] == now && scalar_of[slot] < 0 && reg[slot] >= 0) {
        free_[reg[slot]] = true;
        reg[slot] = -1;
      }
    };
    for (size_t k = 0; k < p.steps.size(); ++k) {
      const auto& s = p.steps[k];
      if (last[s.out_slot] < 0) continue;  // nothing reads it: no instruction
      int in[3] = {-1, -1, -1};
      for (size_t j = 0; j < s.in_slots.size(); ++j) {
        if ((in[j] = operand(s.in_slots[j])) < 0) return false;
      }
      for (int slot : s.in_slots) release(slot, static_cast<int>(k));
      const int out = Take();
      if (out < 0) return false;
      reg[s.out_slot] = out;
      const Xmm d = V(out), a = V(in[0]);
      switch (s.jit) {
        case JitOp::kAdd: vaddps(d, a, V(in[1])); break;
        case JitOp::kSub: vsubps(d, a, V(in[1])); break;
        case JitOp::kMul: vmulps(d, a, V(in[1])); break;
        case JitOp::kDiv: vdivps(d, a, V(in[1])); break;
        case JitOp::kSqrt: vsqrtps(d, a); break;
        case JitOp::kNeg:
          if (avx512_) vpxord(d, a, V(sign));
          else vxorps(d, a, V(sign));
          break;
        case JitOp::kWhere:  // c != 0 (unordered: a NaN condition is true, as in C++)
          if (avx512_) {
            vcmpps(k1, a, V(zero), 4);
            vblendmps(d | k1, V(in[2]), V(in[1]));
          } else {
            vcmpps(V(mask), a, V(zero), 4);
            vblendvps(d, V(in[2]), V(in[1]), V(mask));
          }
          break;
        case JitOp::kNone: return false;
      }
    }
    for (const auto& s : p.stores) {
      const int r = operand(s.slot);  // a stored input is loaded here
      if (r < 0) return false;
      mov(base, qword[outs + 8 * s.arg]);
      vmovups(ptr[base + i * 4], V(r));
    }
    // Every per-iteration register back for the next one.
    for (int slot = 0; slot < nslots; ++slot) {
      if (scalar_of[slot] < 0 && reg[slot] >= 0) {
        free_[reg[slot]] = true;
        reg[slot] = -1;
      }
    }
    add(i, layout.width);
    jmp(loop, T_NEAR);
    L(done);
    vzeroupper();
    ret();
    return true;
  }

  bool avx512_;
  bool ok_ = false;
  std::vector<bool> free_;
};

class CompiledLoop : public FusedJitKernel {
 public:
  CompiledLoop(const FusedProgram<float>& p, Layout layout, std::unique_ptr<LoopGenerator> code)
      : p_(p), layout_(std::move(layout)), code_(std::move(code)),
        fn_(code_->getCode<LoopFn>()), numel_(NumElements(p.shape)) {}

  void Run(const void* const* inputs, void* const* outputs) const override {
    if (numel_ == 0) return;
    const int w = layout_.width;
    const size_t num_arrays = layout_.array_loads.size(), num_outs = p_.stores.size();
    // Per-thread argument arrays, grown on first use: steps allocate nothing.
    static thread_local std::vector<const float*> arrays;
    static thread_local std::vector<float*> outs;
    static thread_local std::vector<float> scalars, pad;
    arrays.resize(2 * num_arrays);  // [arrays | their zero-padded tails]
    outs.resize(2 * num_outs);
    scalars.resize(layout_.num_scalars);
    for (size_t a = 0; a < num_arrays; ++a) {
      arrays[a] = static_cast<const float*>(Source(layout_.array_loads[a], inputs));
    }
    for (size_t s = 0; s < layout_.scalar_loads.size(); ++s) {
      const auto& l = p_.loads[layout_.scalar_loads[s]];
      const void* src = Source(layout_.scalar_loads[s], inputs);
      switch (l.stored) {
        case Stored::kBool: scalars[s] = *static_cast<const bool*>(src) ? 1.0f : 0.0f; break;
        case Stored::kF16: CastBuffer(src, ElemType::kF16, &scalars[s], ElemType::kF32, 1); break;
        case Stored::kBF16: CastBuffer(src, ElemType::kBF16, &scalars[s], ElemType::kF32, 1); break;
        case Stored::kCompute: scalars[s] = *static_cast<const float*>(src); break;
      }
    }
    if (layout_.zero_scalar >= 0) scalars[layout_.zero_scalar] = 0.0f;
    if (layout_.sign_scalar >= 0) scalars[layout_.sign_scalar] = -0.0f;
    for (size_t s = 0; s < num_outs; ++s) {
      outs[s] = static_cast<float*>(outputs[p_.stores[s].arg]);
    }
    const int64_t vectors = numel_ / w;
    const int64_t grain = std::max<int64_t>(1, 32 * kFusedBlock / w);
    const float* const* in = arrays.data();
    float* const* out = outs.data();
    const float* sc = scalars.data();
    const LoopFn fn = fn_;
    ParallelFor(vectors, grain, [&](int64_t b, int64_t e) { fn(in, sc, out, b * w, e * w); });
    const int64_t done = vectors * w, rest = numel_ - done;
    if (rest == 0) return;
    // The last partial vector: through zero-padded copies, one vector long.
    pad.assign((num_arrays + num_outs) * w, 0.0f);
    for (size_t a = 0; a < num_arrays; ++a) {
      float* buf = pad.data() + a * w;
      std::memcpy(buf, arrays[a] + done, rest * sizeof(float));
      arrays[num_arrays + a] = buf;
    }
    for (size_t s = 0; s < num_outs; ++s) outs[num_outs + s] = pad.data() + (num_arrays + s) * w;
    fn(arrays.data() + num_arrays, sc, outs.data() + num_outs, 0, w);
    for (size_t s = 0; s < num_outs; ++s) {
      std::memcpy(outs[s] + done, outs[num_outs + s], rest * sizeof(float));
    }
  }

 private:
  const void* Source(int load, const void* const* inputs) const {
    const auto& l = p_.loads[load];
    return l.arg >= 0 ? inputs[l.arg] : l.constant;
  }

  FusedProgram<float> p_;
  Layout layout_;
  std::unique_ptr<LoopGenerator> code_;
  LoopFn fn_;
  int64_t numel_;
};

}  // namespace

std::unique_ptr<FusedJitKernel> CompileFusedJit(const FusedProgram<float>& program, JitIsa isa) {
  if (JitDisabledByEnvironment()) return nullptr;
  const JitIsa cpu = DetectIsa();
  if (cpu == JitIsa::kAuto) return nullptr;
  if (isa == JitIsa::kAuto) isa = cpu;
  if (isa == JitIsa::kAvx512 && cpu != JitIsa::kAvx512) return nullptr;
  const bool avx512 = isa == JitIsa::kAvx512;
  Layout layout;
  if (!PlanLayout(program, avx512 ? 16 : 8, &layout)) return nullptr;
  try {
    auto code = std::make_unique<LoopGenerator>(program, layout, avx512);
    if (!code->ok()) return nullptr;
    return std::make_unique<CompiledLoop>(program, std::move(layout), std::move(code));
  } catch (const Xbyak::Error&) {
    return nullptr;  // e.g. no executable memory: the interpreter still runs the program
  }
}

}  // namespace tg::cpu
#endif  // TILEGRAPH_HAVE_XBYAK
