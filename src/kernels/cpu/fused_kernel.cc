// The fused elementwise kernel (see fused_kernel.h).
#include "kernels/cpu/fused_kernel.h"

#include <cstring>
#include <type_traits>

#include "kernels/cpu/cast_kernels.h"
#include "kernels/cpu/elementwise_kernels.h"
#include "kernels/cpu/parallel.h"
#include "support/error.h"

namespace tg::cpu {
namespace {

enum class LoadKind { kDirect, kScalar, kContiguous, kBroadcast };

// Per-thread block buffers, grown on first use and reused by every later run.
template <typename T>
struct BlockScratch {
  std::vector<T> buf;
  std::vector<const T*> slot, args;
  std::vector<uint16_t> bits;  // a gathered block of half values
};

bool IsHalf(Stored s) { return s == Stored::kF16 || s == Stored::kBF16; }
ElemType HalfElem(Stored s) { return s == Stored::kF16 ? ElemType::kF16 : ElemType::kBF16; }

// n half values (bits) -> the compute type, and back (round to nearest even).
template <typename T>
void FromHalf(const uint16_t* src, Stored s, T* dst, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    CastBuffer(src, HalfElem(s), dst, ElemType::kF32, n);
  } else {
    TG_ASSERT(false, "fused_elementwise: half values need the f32 compute type");
  }
}
template <typename T>
void ToHalf(const T* src, Stored s, uint16_t* dst, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    CastBuffer(src, ElemType::kF32, dst, HalfElem(s), n);
  } else {
    TG_ASSERT(false, "fused_elementwise: half values need the f32 compute type");
  }
}

template <typename T>
BlockScratch<T>& ThreadScratch() {
  static thread_local BlockScratch<T> scratch;
  return scratch;
}

}  // namespace

template <typename T>
void RunFused(const FusedProgram<T>& p, const void* const* inputs, void* const* outputs) {
  int64_t numel = 1;
  for (int64_t d : p.shape) numel *= d;
  if (numel == 0) return;
  // Classify each load once per program (shapes are fixed at compile time).
  if (p.prepared.size() != p.loads.size()) {
    p.prepared.clear();
    for (const auto& l : p.loads) {
      typename FusedProgram<T>::PreparedLoad pl{static_cast<int>(LoadKind::kBroadcast), {}};
      int64_t n = 1;
      for (int64_t d : l.shape) n *= d;
      if (n == 1) {
        pl.kind = static_cast<int>(LoadKind::kScalar);
      } else if (n == numel) {
        pl.kind = static_cast<int>(l.stored == Stored::kCompute ? LoadKind::kDirect
                                                               : LoadKind::kContiguous);
      } else {
        pl.plan = MakeBroadcastPlan(p.shape, {l.shape});
      }
      p.prepared.push_back(std::move(pl));
    }
  }
  struct Resolved {
    LoadKind kind;
    const void* src;
    const BroadcastPlan* plan;
  };
  const auto resolve = [&](size_t i) {
    const auto& l = p.loads[i];
    return Resolved{static_cast<LoadKind>(p.prepared[i].kind),
                    l.arg >= 0 ? inputs[l.arg] : l.constant, &p.prepared[i].plan};
  };
  const int64_t blocks = (numel + kFusedBlock - 1) / kFusedBlock;
  ParallelFor(blocks, 32, [&](int64_t b0, int64_t b1) {
    BlockScratch<T>& scratch = ThreadScratch<T>();
    const size_t need = static_cast<size_t>(p.num_slots) * kFusedBlock;
    if (scratch.buf.size() < need) scratch.buf.resize(need);
    if (scratch.slot.size() < static_cast<size_t>(p.num_slots)) scratch.slot.resize(p.num_slots);
    if (scratch.bits.size() < static_cast<size_t>(kFusedBlock)) scratch.bits.resize(kFusedBlock);
    T* buf_base = scratch.buf.data();
    const T** slot = scratch.slot.data();
    std::vector<const T*>& args = scratch.args;
    auto slot_buf = [&](int s) { return buf_base + static_cast<int64_t>(s) * kFusedBlock; };
    const size_t num_loads = p.loads.size();
    // Scalars are the same for every block: fill them once.
    for (size_t i = 0; i < num_loads; ++i) {
      const Resolved r = resolve(i);
      if (r.kind != LoadKind::kScalar) continue;
      const auto& l = p.loads[i];
      T v;
      if (l.stored == Stored::kBool) {
        v = T(*static_cast<const bool*>(r.src) ? 1 : 0);
      } else if (IsHalf(l.stored)) {
        FromHalf(static_cast<const uint16_t*>(r.src), l.stored, &v, 1);
      } else {
        v = *static_cast<const T*>(r.src);
      }
      T* dst = slot_buf(l.slot);
      for (int64_t j = 0; j < kFusedBlock; ++j) dst[j] = v;
      slot[l.slot] = dst;
    }
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t start = blk * kFusedBlock;
      const int64_t n = std::min(kFusedBlock, numel - start);
      for (size_t i = 0; i < num_loads; ++i) {
        const auto& l = p.loads[i];
        const Resolved pl = resolve(i);
        T* dst = slot_buf(l.slot);
        switch (pl.kind) {
          case LoadKind::kScalar: break;
          case LoadKind::kDirect: slot[l.slot] = static_cast<const T*>(pl.src) + start; break;
          case LoadKind::kContiguous: {
            if (IsHalf(l.stored)) {
              FromHalf(static_cast<const uint16_t*>(pl.src) + start, l.stored, dst, n);
            } else {
              const bool* src = static_cast<const bool*>(pl.src) + start;
              for (int64_t j = 0; j < n; ++j) dst[j] = src[j] ? T(1) : T(0);
            }
            slot[l.slot] = dst;
            break;
          }
          case LoadKind::kBroadcast:
            if (l.stored == Stored::kBool) {
              GatherRun(static_cast<const bool*>(pl.src), *pl.plan, start, n, dst);
            } else if (IsHalf(l.stored)) {
              GatherRun(static_cast<const uint16_t*>(pl.src), *pl.plan, start, n,
                        scratch.bits.data());
              FromHalf(scratch.bits.data(), l.stored, dst, n);
            } else {
              GatherRun(static_cast<const T*>(pl.src), *pl.plan, start, n, dst);
            }
            slot[l.slot] = dst;
            break;
        }
      }
      for (const auto& s : p.steps) {
        args.clear();
        for (int in : s.in_slots) args.push_back(slot[in]);
        T* out = slot_buf(s.out_slot);
        s.fn(args.data(), out, n, s.params.data());
        if (s.round_to != Stored::kCompute) {  // the op's result in its half dtype
          ToHalf(out, s.round_to, scratch.bits.data(), n);
          FromHalf(scratch.bits.data(), s.round_to, out, n);
        }
        slot[s.out_slot] = out;
      }
      for (const auto& s : p.stores) {
        const T* src = slot[s.slot];
        if (s.stored == Stored::kBool) {
          bool* dst = static_cast<bool*>(outputs[s.arg]) + start;
          for (int64_t j = 0; j < n; ++j) dst[j] = src[j] != T(0);
        } else if (IsHalf(s.stored)) {
          ToHalf(src, s.stored, static_cast<uint16_t*>(outputs[s.arg]) + start, n);
        } else {
          std::memcpy(static_cast<T*>(outputs[s.arg]) + start, src, n * sizeof(T));
        }
      }
    }
  });
}

template void RunFused<float>(const FusedProgram<float>&, const void* const*, void* const*);
template void RunFused<double>(const FusedProgram<double>&, const void* const*, void* const*);

}  // namespace tg::cpu
