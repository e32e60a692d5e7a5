// The fused elementwise kernel as machine code (see fused_jit.h).
//
// The generated function is
//   void loop(const void* const* arrays, const float* scalars, void* const* outs,
//             int64_t begin, int64_t end)
// over element indices [begin, end), a multiple of the vector width apart. Scalars and the
// constants the code needs are broadcast into registers once; per vector, each array operand
// is loaded (and widened from f16 / bf16) when a step first reads it, every step is a few
// instructions on registers (its result rounded to half where the interpreter rounds it), and
// each output is stored (narrowed to its format) at the end of the iteration, after every
// load of that index: an output may share its buffer with an input (in-place updates), as
// with the interpreter. Registers are given out in program order and returned after a
// value's last use; a program that needs more than the register file returns no kernel (the
// interpreter runs it).
//
// Conversions match float16.h bit for bit on every non-NaN value: f16 through F16C's
// round-to-nearest-even instructions, bf16 with the same integer rounding (u + 0x7fff +
// lsb) >> 16 and quiet NaNs. (AVX-512 BF16's vcvtneps2bf16 would flush subnormals: not used.)
#include "kernels/cpu/fused_jit.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "kernels/cpu/cast_kernels.h"
#include "kernels/cpu/parallel.h"

#ifndef TILEGRAPH_HAVE_XBYAK
namespace tg::cpu {
std::unique_ptr<FusedJitKernel> CompileFusedJit(const FusedProgram<float>&, JitIsa,
                                                std::vector<bool>) {
  return nullptr;  // built without xbyak: the interpreter runs every program
}
}  // namespace tg::cpu
#else
#include <xbyak/xbyak.h>
#include <xbyak/xbyak_util.h>

#include "kernels/cpu/fused_jit_code.h"

namespace tg::cpu {
namespace {

using LoopFn = void (*)(const void* const*, const float*, void* const*, int64_t, int64_t);

bool JitDisabledByEnvironment() {
  static const bool disabled = [] {
    const char* v = std::getenv("TILEGRAPH_FUSED_JIT");
    return v != nullptr && std::string(v) == "0";
  }();
  return disabled;
}

// The widest code this CPU runs: AVX-512 (F), else AVX2 with F16C (x86-64-v3), else none.
JitIsa DetectIsa() {
  static const JitIsa isa = [] {
    using Xbyak::util::Cpu;
    Cpu cpu;
    if (cpu.has(Cpu::tAVX512F)) return JitIsa::kAvx512;
    if (cpu.has(Cpu::tAVX2) && cpu.has(Cpu::tF16C)) return JitIsa::kAvx;
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
    case JitOp::kSqrt:
    case JitOp::kAbs:
    case JitOp::kRelu:
    case JitOp::kCast: return 1;
    case JitOp::kWhere: return 3;
    default:  // the activations: unary, their backward helpers (grad_output, x) binary
      if (jit::IsActivation(op)) return op >= JitOp::kThresholdBackward ? 2 : 1;
      return 2;
  }
}

int ElemBytes(Stored s) { return s == Stored::kCompute ? 4 : 2; }

// Bit patterns the generated code keeps in registers.
constexpr uint32_t kZero = 0x00000000u, kSign = jit::kSignBit, kOne = 0x3f800000u;
constexpr uint32_t kRound = 0x00007fffu, kIntOne = 0x00000001u, kQuiet = 0x00000040u;

// How the generated loop reaches each program operand.
struct Layout {
  int width = 0;                      // floats per vector
  std::vector<int> array_loads;       // program load index of each `arrays` entry
  std::vector<int> scalar_loads;      // program load index of each `scalars` entry
  // Row-broadcast operands (a per-channel scale [N, C, 1, 1] over [N, C, H, W]): constant
  // along runs ("rows") of row_length elements of the iteration space, so the loop runs once
  // per row with them as scalars. row_scalars: their `scalars` entries; row_elements[k][r]:
  // the element of operand k that row r reads.
  int64_t row_length = 0;             // 0: no row-broadcast operands (one loop over all)
  std::vector<int> row_scalars;
  std::vector<std::vector<int64_t>> row_elements;
  std::vector<uint32_t> constants;    // further `scalars` entries, as bit patterns
  std::map<uint32_t, int> constant_index;  // bit pattern -> `scalars` entry
  int num_scalars() const { return static_cast<int>(scalar_loads.size() + constants.size()); }
  void Need(uint32_t bits) {
    if (constant_index.count(bits)) return;
    constant_index[bits] = static_cast<int>(scalar_loads.size() + constants.size());
    constants.push_back(bits);
  }
};

// The last dimension of the iteration space along which `shape` (aligned to its right)
// varies, or -1 when it is a single value.
int LastVaryingAxis(const Dims& shape, const Dims& space) {
  const int offset = static_cast<int>(space.size() - shape.size());
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    if (shape[d] != 1) return d + offset;
  }
  return -1;
}

// Plans the row-broadcast operands `rows` (program load indices): rows run over the
// dimensions after the last one any of them varies along. False when the rows would be too
// short for a vector loop (or not a whole number of vectors), or the operand is not a
// broadcast of the iteration space.
bool PlanRows(const FusedProgram<float>& p, const std::vector<int>& rows, Layout* layout) {
  const Dims& space = p.shape;
  int axis = 0;
  for (int i : rows) {
    const Dims& shape = p.loads[i].shape;
    if (shape.size() > space.size()) return false;
    for (size_t d = 0; d < shape.size(); ++d) {
      const int64_t extent = space[space.size() - shape.size() + d];
      if (shape[d] != 1 && shape[d] != extent) return false;
    }
    axis = std::max(axis, LastVaryingAxis(shape, space));
  }
  int64_t length = 1;
  for (size_t d = axis + 1; d < space.size(); ++d) length *= space[d];
  if (length < 4 * layout->width || length % layout->width != 0) return false;
  const int64_t count = NumElements(space) / length;
  layout->row_length = length;
  for (int i : rows) {
    // Element of the operand each row reads: the row's index over dims 0..axis, through
    // the operand's broadcast strides.
    const Dims strides = BroadcastStrides(p.loads[i].shape, space);
    std::vector<int64_t> elements(count);
    for (int64_t r = 0; r < count; ++r) {
      int64_t rest = r, at = 0;
      for (int d = axis; d >= 0; --d) {
        at += rest % space[d] * strides[d];
        rest /= space[d];
      }
      elements[r] = at;
    }
    layout->row_scalars.push_back(static_cast<int>(layout->scalar_loads.size()));
    layout->scalar_loads.push_back(i);
    layout->row_elements.push_back(std::move(elements));
  }
  return true;
}

// Whether the JIT covers the program, and where its operands go.
bool PlanLayout(const FusedProgram<float>& p, int width, Layout* layout) {
  const int64_t numel = NumElements(p.shape);
  layout->width = width;
  bool bf16 = false;
  std::vector<int> rows;
  for (size_t i = 0; i < p.loads.size(); ++i) {
    const auto& l = p.loads[i];
    const int64_t n = NumElements(l.shape);
    if (n == 1) {
      layout->scalar_loads.push_back(static_cast<int>(i));
    } else if (n == numel && l.stored != Stored::kBool) {
      layout->array_loads.push_back(static_cast<int>(i));
    } else {
      rows.push_back(static_cast<int>(i));  // a row broadcast, or the interpreter's
    }
  }
  if (!rows.empty() && !PlanRows(p, rows, layout)) return false;
  for (const auto& s : p.steps) {
    if (s.jit == JitOp::kNone || static_cast<int>(s.in_slots.size()) != Arity(s.jit)) {
      return false;
    }
    if (jit::IsActivation(s.jit) && !jit::kMathMatchesBuild) return false;
    bf16 = bf16 || s.round_to == Stored::kBF16;
    switch (s.jit) {
      case JitOp::kNeg:
      case JitOp::kAbs: layout->Need(kSign); break;
      case JitOp::kRelu:
      case JitOp::kWhere: layout->Need(kZero); break;
      case JitOp::kEq: case JitOp::kNe: case JitOp::kLt:
      case JitOp::kLe: case JitOp::kGt: case JitOp::kGe: layout->Need(kOne); break;
      case JitOp::kCast:
        if (!s.params.empty() && s.params[0] != 0) {
          layout->Need(kZero);
          layout->Need(kOne);
        }
        break;
      default: break;
    }
  }
  for (const auto& s : p.stores) {
    if (s.stored == Stored::kBool) return false;
    bf16 = bf16 || s.stored == Stored::kBF16;
  }
  if (bf16) {
    for (uint32_t c : {kRound, kIntOne, kQuiet}) layout->Need(c);
  }
  return true;
}

// Emits the loop. Throws Xbyak::Error, or returns with ok() false when registers or the
// constant table run out.
class LoopGenerator : public jit::VectorCode {
 public:
  // `streaming[o]`: output o is stored with non-temporal stores (its base 64-byte aligned).
  LoopGenerator(const FusedProgram<float>& p, const Layout& layout, bool avx512,
                const std::vector<bool>& streaming = {})
      : jit::VectorCode(4096 + 160 * (p.steps.size() + p.loads.size() + p.stores.size()) +
                            1024 * NumActivations(p),
                        avx512),
        streaming_(streaming) {
    ok_ = Generate(p, layout) && !table_full();
    setProtectModeRE();  // written once: executable, never writable again
  }
  bool ok() const { return ok_; }

 private:
  static size_t NumActivations(const FusedProgram<float>& p) {
    size_t n = 0;
    for (const auto& s : p.steps) n += jit::IsActivation(s.jit) ? 1 : 0;
    return n;
  }

  // f32 lanes of `x` -> their bf16 bits in the low half of each 32-bit lane of `d`, rounded
  // to nearest even, NaNs quieted (float16.h's FloatToBFloat16Bits). `t` is scratch; d != x.
  void ToBf16Bits(const Xmm& d, const Xmm& x, const Xmm& t) {
    vpsrld(d, x, 16);                 // u >> 16
    And(t, d, C(kIntOne));            // its lowest bit
    vpaddd(t, t, x);
    vpaddd(t, t, C(kRound));          // u + 0x7fff + lsb
    vpsrld(t, t, 16);
    Or(d, d, C(kQuiet));              // a NaN's bits, quieted
    Select(d, x, x, jit::kUnord, d, t);  // a NaN
  }
  // Rounds f32 lanes of r (in place) to the format and back, as the interpreter does for a
  // step whose value is half.
  bool RoundTo(Stored format, int r) {
    if (format == Stored::kF16) {
      vcvtps2ph(Half(r), V(r), 0);  // round to nearest even
      vcvtph2ps(V(r), Half(r));
      return true;
    }
    const int bits = Take(), t = Take();
    if (bits < 0 || t < 0) return false;
    ToBf16Bits(V(bits), V(r), V(t));
    vpslld(V(r), V(bits), 16);
    Give(bits);
    Give(t);
    return true;
  }

  const Xmm C(uint32_t bits) const { return V(const_reg_.at(bits)); }

  bool EmitStep(const FusedProgram<float>::Step& s, int d, const int* in) {
    const Xmm D = V(d), a = V(in[0]);
    const Xmm b = s.in_slots.size() > 1 ? V(in[1]) : a;
    switch (s.jit) {
      case JitOp::kAdd: vaddps(D, a, b); break;
      case JitOp::kSub: vsubps(D, a, b); break;
      case JitOp::kMul: vmulps(D, a, b); break;
      case JitOp::kDiv: vdivps(D, a, b); break;
      case JitOp::kSqrt: vsqrtps(D, a); break;
      case JitOp::kNeg: Xor(D, a, C(kSign)); break;
      case JitOp::kAbs: AndNot(D, C(kSign), a); break;
      case JitOp::kRelu:  // x < 0 ? 0 : x (NaN and -0 pass)
        Select(D, a, C(kZero), jit::kLtOq, C(kZero), a);
        break;
      case JitOp::kMaximum:
      case JitOp::kMinimum: return MaxMin(s, d, in);
      case JitOp::kWhere:  // c != 0 (unordered: a NaN condition is true, as in C++)
        Select(D, a, C(kZero), jit::kNeqUq, b, V(in[2]));
        break;
      case JitOp::kEq: case JitOp::kNe: case JitOp::kLt:
      case JitOp::kLe: case JitOp::kGt: case JitOp::kGe: {
        static const std::map<JitOp, int> kPred = {
            {JitOp::kEq, jit::kEqOq}, {JitOp::kNe, jit::kNeqUq}, {JitOp::kLt, jit::kLtOq},
            {JitOp::kLe, jit::kLeOq}, {JitOp::kGt, jit::kGtOq}, {JitOp::kGe, jit::kGeOq}};
        const int pred = kPred.at(s.jit);
        if (avx512_) {
          vcmpps(k1, a, b, pred);
          vmovaps(D | k1 | T_z, C(kOne));
        } else {
          vcmpps(D, a, b, pred);
          And(D, D, C(kOne));
        }
        break;
      }
      case JitOp::kCast:
        if (!s.params.empty() && s.params[0] != 0) {  // to bool: x != 0
          Select(D, a, C(kZero), jit::kNeqUq, C(kOne), C(kZero));
        } else if (d != in[0]) {
          vmovaps(D, a);
        }
        break;
      default: return EmitActivation(s.jit, s.params, d, in);
    }
    return true;
  }

  // maximum / minimum: NaN in either -> a + b, else a > b ? a : b (a < b for minimum).
  bool MaxMin(const FusedProgram<float>::Step& s, int d, const int* in) {
    const int sum = Take();
    if (sum < 0) return false;
    const Xmm a = V(in[0]), b = V(in[1]);
    const int pred = s.jit == JitOp::kMaximum ? jit::kGtOq : jit::kLtOq;
    vaddps(V(sum), a, b);
    Select(V(d), a, b, pred, a, b);
    Select(V(d), a, b, jit::kUnord, V(sum), V(d));  // a NaN in either
    Give(sum);
    return true;
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
    std::vector<Stored> format(nslots, Stored::kCompute);
    for (size_t a = 0; a < layout.array_loads.size(); ++a) {
      const auto& l = p.loads[layout.array_loads[a]];
      array_of[l.slot] = static_cast<int>(a);
      format[l.slot] = l.stored;
    }
    for (size_t s = 0; s < layout.scalar_loads.size(); ++s) {
      scalar_of[p.loads[layout.scalar_loads[s]].slot] = static_cast<int>(s);
    }
    // Scalars and constants stay in registers for the whole loop.
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
    for (const auto& [bits, index] : layout.constant_index) {
      if ((const_reg_[bits] = broadcast(index)) < 0) return false;
    }
    LoadTableBase();

    Label loop, done;
    L(loop);
    cmp(i, end);
    jge(done, T_NEAR);
    auto operand = [&](int slot) -> int {
      if (reg[slot] < 0 && array_of[slot] >= 0) {
        const int r = Take();
        if (r < 0) return -1;
        reg[slot] = r;
        mov(base, qword[arrays + 8 * array_of[slot]]);
        switch (format[slot]) {
          case Stored::kF16: vcvtph2ps(V(r), ptr[base + i * 2]); break;
          case Stored::kBF16:
            vpmovzxwd(V(r), ptr[base + i * 2]);
            vpslld(V(r), V(r), 16);
            break;
          default: vmovups(V(r), ptr[base + i * 4]); break;
        }
      }
      return reg[slot];
    };
    auto release = [&](int slot, int now) {
      if (last[slot] == now && scalar_of[slot] < 0 && reg[slot] >= 0) {
        Give(reg[slot]);
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
      // max / min and the activations read their operands after writing; the others may
      // overwrite one.
      const bool late_release =
          s.jit == JitOp::kMaximum || s.jit == JitOp::kMinimum || jit::IsActivation(s.jit);
      if (!late_release) {
        for (int slot : s.in_slots) release(slot, static_cast<int>(k));
      }
      const int out = Take();
      if (out < 0) return false;
      reg[s.out_slot] = out;
      if (!EmitStep(s, out, in)) return false;
      if (late_release) {
        for (int slot : s.in_slots) release(slot, static_cast<int>(k));
      }
      if (s.round_to != Stored::kCompute && !RoundTo(s.round_to, out)) return false;
    }
    bool streams_any = false;
    for (const auto& s : p.stores) {
      const int r = operand(s.slot);  // a stored input is loaded here
      if (r < 0) return false;
      const bool stream = Streams(s.arg);
      streams_any |= stream;
      mov(base, qword[outs + 8 * s.arg]);
      switch (s.stored) {
        case Stored::kF16:
          if (stream) {
            const int bits = Take();
            if (bits < 0) return false;
            vcvtps2ph(Half(bits), V(r), 0);
            vmovntdq(ptr[base + i * 2], Half(bits));
            Give(bits);
          } else {
            vcvtps2ph(ptr[base + i * 2], V(r), 0);
          }
          break;
        case Stored::kBF16: {
          const int bits = Take(), t = Take();
          if (bits < 0 || t < 0) return false;
          ToBf16Bits(V(bits), V(r), V(t));
          if (avx512_) {
            if (stream) {
              vpmovdw(Half(bits), V(bits));
              vmovntdq(ptr[base + i * 2], Half(bits));
            } else {
              vpmovdw(ptr[base + i * 2], V(bits));
            }
          } else {  // 8 x 32-bit -> 8 x 16-bit: pack within lanes, then gather the halves
            vpackusdw(V(bits), V(bits), V(bits));
            vpermq(Ymm(bits), Ymm(bits), 0x08);
            if (stream) vmovntdq(ptr[base + i * 2], Xmm(bits));
            else vmovdqu(ptr[base + i * 2], Xmm(bits));
          }
          Give(bits);
          Give(t);
          break;
        }
        default:
          if (stream) vmovntps(ptr[base + i * 4], V(r));
          else vmovups(ptr[base + i * 4], V(r));
          break;
      }
    }
    // Every per-iteration register back for the next one.
    for (int slot = 0; slot < nslots; ++slot) {
      if (scalar_of[slot] < 0 && reg[slot] >= 0) {
        Give(reg[slot]);
        reg[slot] = -1;
      }
    }
    add(i, layout.width);
    jmp(loop, T_NEAR);
    L(done);
    if (streams_any) sfence();  // the streamed lines are globally visible before the caller goes on
    vzeroupper();
    ret();
    return true;
  }

  bool Streams(int out) const {
    return out < static_cast<int>(streaming_.size()) && streaming_[out];
  }

  bool ok_ = false;
  std::vector<bool> streaming_;
  std::map<uint32_t, int> const_reg_;
};

class CompiledLoop : public FusedJitKernel {
 public:
  // `streaming_code`: the same loop with non-temporal stores to the outputs `streaming` names
  // (null: none).
  CompiledLoop(const FusedProgram<float>& p, Layout layout, std::unique_ptr<LoopGenerator> code,
               std::unique_ptr<LoopGenerator> streaming_code, std::vector<bool> streaming)
      : p_(p), layout_(std::move(layout)), code_(std::move(code)),
        streaming_code_(std::move(streaming_code)), streaming_(std::move(streaming)),
        fn_(code_->getCode<LoopFn>()),
        streaming_fn_(streaming_code_ ? streaming_code_->getCode<LoopFn>() : nullptr),
        numel_(NumElements(p.shape)) {}

  void Run(const void* const* inputs, void* const* outputs) const override {
    if (numel_ == 0) return;
    const int w = layout_.width;
    const size_t num_arrays = layout_.array_loads.size(), num_outs = p_.stores.size();
    // Per-thread argument arrays, grown on first use: steps allocate nothing.
    static thread_local std::vector<const void*> arrays;
    static thread_local std::vector<void*> outs;
    static thread_local std::vector<float> scalars, pad;
    arrays.resize(2 * num_arrays);  // [arrays | their zero-padded tails]
    outs.resize(2 * num_outs);
    scalars.resize(layout_.num_scalars());
    for (size_t a = 0; a < num_arrays; ++a) arrays[a] = Source(layout_.array_loads[a], inputs);
    for (size_t s = 0; s < layout_.scalar_loads.size(); ++s) {
      scalars[s] = ValueAt(layout_.scalar_loads[s], inputs, 0);
    }
    for (const auto& [bits, index] : layout_.constant_index) {
      std::memcpy(&scalars[index], &bits, sizeof(float));
    }
    for (size_t s = 0; s < num_outs; ++s) outs[s] = outputs[p_.stores[s].arg];
    const int64_t vectors = numel_ / w;
    const int64_t grain = std::max<int64_t>(1, 32 * kFusedBlock / w);
    const void* const* in = arrays.data();
    void* const* out = outs.data();
    const float* sc = scalars.data();
    const LoopFn fn = CanStream(in, out) ? streaming_fn_ : fn_;
    if (layout_.row_length > 0) {  // a loop per row, the row-broadcast operands as scalars
      const int64_t length = layout_.row_length, rows = numel_ / length;
      const size_t count = scalars.size();
      ParallelFor(rows, std::max<int64_t>(1, 32 * kFusedBlock / length),
                  [&](int64_t b, int64_t e) {
        static thread_local std::vector<float> mine;
        mine.assign(sc, sc + count);
        for (int64_t r = b; r < e; ++r) {
          for (size_t k = 0; k < layout_.row_scalars.size(); ++k) {
            const int s = layout_.row_scalars[k];
            mine[s] = ValueAt(layout_.scalar_loads[s], inputs, layout_.row_elements[k][r]);
          }
          fn(in, mine.data(), out, r * length, (r + 1) * length);
        }
      });
      return;  // (rows are whole vectors: no tail)
    }
    ParallelFor(vectors, grain, [&](int64_t b, int64_t e) { fn(in, sc, out, b * w, e * w); });
    const int64_t done = vectors * w, rest = numel_ - done;
    if (rest == 0) return;
    // The last partial vector: through zero-padded copies, one vector long (w floats each).
    pad.assign((num_arrays + num_outs) * w, 0.0f);
    for (size_t a = 0; a < num_arrays; ++a) {
      const int bytes = ElemBytes(p_.loads[layout_.array_loads[a]].stored);
      float* buf = pad.data() + a * w;
      std::memcpy(buf, static_cast<const char*>(arrays[a]) + done * bytes, rest * bytes);
      arrays[num_arrays + a] = buf;
    }
    for (size_t s = 0; s < num_outs; ++s) outs[num_outs + s] = pad.data() + (num_arrays + s) * w;
    fn_(arrays.data() + num_arrays, sc, outs.data() + num_outs, 0, w);  // plain stores
    for (size_t s = 0; s < num_outs; ++s) {
      const int bytes = ElemBytes(p_.stores[s].stored);
      std::memcpy(static_cast<char*>(outs[s]) + done * bytes, outs[num_outs + s], rest * bytes);
    }
  }

  bool Streams(const void* const* inputs, void* const* outputs) const override {
    std::vector<const void*> arrays;
    for (int load : layout_.array_loads) arrays.push_back(Source(load, inputs));
    std::vector<void*> outs;
    for (const auto& s : p_.stores) outs.push_back(outputs[s.arg]);
    return CanStream(arrays.data(), outs.data());
  }

 private:
  const void* Source(int load, const void* const* inputs) const {
    const auto& l = p_.loads[load];
    return l.arg >= 0 ? inputs[l.arg] : l.constant;
  }

  // Element `i` of program load `load`, as f32.
  float ValueAt(int load, const void* const* inputs, int64_t i) const {
    const void* src = Source(load, inputs);
    float v = 0.0f;
    switch (p_.loads[load].stored) {
      case Stored::kBool: v = static_cast<const bool*>(src)[i] ? 1.0f : 0.0f; break;
      case Stored::kF16:
        CastBuffer(static_cast<const uint16_t*>(src) + i, ElemType::kF16, &v, ElemType::kF32, 1);
        break;
      case Stored::kBF16:
        CastBuffer(static_cast<const uint16_t*>(src) + i, ElemType::kBF16, &v, ElemType::kF32, 1);
        break;
      case Stored::kCompute: v = static_cast<const float*>(src)[i]; break;
    }
    return v;
  }

  // The streaming loop runs when every streamed output starts 64-byte aligned (each thread's
  // range then starts on a vector boundary) and none shares its buffer with an input (an
  // in-place update: its lines were just read, and streaming them measured slower).
  // `arrays` and `outs` as Run's (by array load and by store).
  bool CanStream(const void* const* arrays, void* const* outs) const {
    if (streaming_fn_ == nullptr) return false;
    for (size_t s = 0; s < p_.stores.size(); ++s) {
      if (!streaming_[p_.stores[s].arg]) continue;
      if (reinterpret_cast<uintptr_t>(outs[s]) % 64 != 0) return false;
      for (size_t a = 0; a < layout_.array_loads.size(); ++a) {
        if (arrays[a] == outs[s]) return false;
      }
    }
    return true;
  }

  FusedProgram<float> p_;
  Layout layout_;
  std::unique_ptr<LoopGenerator> code_, streaming_code_;
  std::vector<bool> streaming_;  // by output index
  LoopFn fn_, streaming_fn_;
  int64_t numel_;
};

}  // namespace

std::unique_ptr<FusedJitKernel> CompileFusedJit(const FusedProgram<float>& program, JitIsa isa,
                                                std::vector<bool> streaming) {
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
    std::unique_ptr<LoopGenerator> streaming_code;
    streaming.resize(program.stores.size(), false);
    if (std::find(streaming.begin(), streaming.end(), true) != streaming.end()) {
      streaming_code = std::make_unique<LoopGenerator>(program, layout, avx512, streaming);
      if (!streaming_code->ok()) streaming_code = nullptr;
    }
    return std::make_unique<CompiledLoop>(program, std::move(layout), std::move(code),
                                          std::move(streaming_code), std::move(streaming));
  } catch (const std::exception&) {  // Xbyak::Error, e.g. no executable memory
    return nullptr;  // the interpreter still runs the program
  }
}

}  // namespace tg::cpu
#endif  // TILEGRAPH_HAVE_XBYAK
