// Ops on activations in oneDNN's channel-blocked layout (nChw8c / nChw16c:
// cpu::ActivationBlock() channels per block, element (n, c, s) at
// ((n * C/B + c/B) * H*W + s) * B + c%B; with the attribute channels_last, B = C: NHWC),
// made by block-conv-layout
// (passes/block_conv_layout.cc) where a squeeze-excite gate reads a convolution's blocked
// output, so that the gate does not need the activation in NCHW:
//   blocked_spatial_mean(x){keepdim}: the mean over H and W -> [N, C, 1, 1] ([N, C] without
//     keepdim). With C divisible by 16 and one position per channel, NCHW and the blocked
//     layout are the same bytes, so the result is an ordinary tensor.
//   blocked_channel_scale(x, g): x * g with g [N or 1, C, 1, 1] (an ordinary tensor, as
//     above), x and the result blocked.
//   blocked_channel_sum(x){keepdim}: the sum over N, H and W -> [C] ([1, C, 1, 1] with
//     keepdim): a convolution's bias gradient from its blocked dy.
// and the reorders at the edges of a blocked group, where a value in the group is made by a
// node that writes NCHW or read by one that reads NCHW (any dtype):
//   block_channels(x): x [N, C, H, W] in NCHW -> the same tensor blocked.
//   unblock_channels(x): blocked -> NCHW.
// Made after autodiff: not differentiable.
#include <cstring>
#include <vector>

#include "kernels/cpu/channel_blocking.h"
#include "kernels/cpu/onednn_kernels.h"
#include "kernels/cpu/parallel.h"
#include "ops/dispatch.h"
#include "ops/families.h"

namespace tg {
namespace {

// x [n, c, plane] in blocks of `block` channels (ActivationBlock(), or c when channels
// last); the CPU kernels work on `lanes` (ActivationBlock()) channels of one block at a time.
struct Dims {
  int64_t n, c, plane, block, lanes;
};

// x's dims in the layout the node's attributes name (any dtype: the reorders move bytes).
Dims LayoutDims(const TensorType& x, const AttrMap& attrs) {
  return {x.shape[0], x.shape[1], x.shape[2] * x.shape[3],
          cpu::LayoutBlock(GetFlag(attrs, "channels_last"), x.shape[1]), cpu::ActivationBlock()};
}

// The same, checked for the ops that compute on x (floating, whole channel blocks).
Dims DimsOf(const TensorType& x, const AttrMap& attrs, const std::string& op) {
  TG_CHECK(x.rank() == 4 && x.shape[1] % 16 == 0, kShape, op, ": expected x [N, C, H, W] "
           "with C divisible by 16 (whole channel blocks), got ", x.ToString());
  CheckFloating(x, op, "x");
  return LayoutDims(x, attrs);
}

// Where element (n, c, s) of a blocked [N, C, H, W] tensor is.
int64_t BlockedIndex(const Dims& d, int64_t n, int64_t c, int64_t s) {
  return cpu::BlockedIndex(d.c, d.plane, d.block, n, c, s);
}

// Lane group u of (batch, lanes channels) pairs: its first element; its channels are the L
// contiguous lanes at each position, positions `d.block` elements apart.
int64_t LaneGroupStart(const Dims& d, int L, int64_t u) {
  const int64_t groups = d.c / L;
  return BlockedIndex(d, u / groups, (u % groups) * L, 0);
}

// Lane groups [begin, end) of (batch, L channels): the mean over the positions of each of
// their L channels, in double lanes (a compile-time L, so the lanes are vector registers).
template <typename T, int L>
void MeanOfBlocks(const T* x, T* y, const Dims& d, int64_t begin, int64_t end) {
  for (int64_t u = begin; u < end; ++u) {
    const T* p = x + LaneGroupStart(d, L, u);
    double sum[L] = {};
    for (int64_t s = 0; s < d.plane; ++s) {
      for (int l = 0; l < L; ++l) sum[l] += p[s * d.block + l];
    }
    for (int l = 0; l < L; ++l) y[u * L + l] = static_cast<T>(sum[l] / d.plane);
  }
}

// Channel groups [begin, end) of L channels: the sums over every image and position of
// their L channels, in double lanes.
template <typename T, int L>
void SumOfChannelBlocks(const T* x, T* y, const Dims& d, int64_t begin, int64_t end) {
  const int64_t groups = d.c / L;
  for (int64_t k = begin; k < end; ++k) {
    double sum[L] = {};
    for (int64_t n = 0; n < d.n; ++n) {
      const T* p = x + LaneGroupStart(d, L, n * groups + k);
      for (int64_t s = 0; s < d.plane; ++s) {
        for (int l = 0; l < L; ++l) sum[l] += p[s * d.block + l];
      }
    }
    for (int l = 0; l < L; ++l) y[k * L + l] = static_cast<T>(sum[l]);
  }
}

// Lane groups [begin, end) of (batch, L channels) scaled by their L gates (g [N or 1, C]).
template <typename T, int L>
void ScaleBlocks(const T* x, const T* g, T* y, const Dims& d, bool per_sample, int64_t begin,
                 int64_t end) {
  const int64_t groups = d.c / L;
  for (int64_t u = begin; u < end; ++u) {
    const T* gate = g + (per_sample ? (u / groups) * d.c : 0) + (u % groups) * L;
    const int64_t start = LaneGroupStart(d, L, u);
    const T* p = x + start;
    T* q = y + start;
    for (int64_t s = 0; s < d.plane; ++s) {
      for (int l = 0; l < L; ++l) q[s * d.block + l] = p[s * d.block + l] * gate[l];
    }
  }
}

// The CPU kernels: one (batch, channel block) per task, the block's channels as the inner
// loop (contiguous, vectorized). `serial`: the reference kernels' loop order, one element
// at a time through BlockedIndex.
KernelFactory SpatialMeanFactory(bool serial) {
  return [serial](const Node& node) -> Kernel {
    const Dims d = DimsOf(node.input(0)->type(), node.attrs(), node.op());
    return [d, serial, dtype = node.input(0)->type().dtype](const KernelArgs& a) {
      DispatchFloat(dtype, "blocked_spatial_mean", [&](auto t) {
        using T = decltype(t);
        const T* x = static_cast<const T*>(a.inputs[0]);
        T* y = static_cast<T*>(a.outputs[0]);
        if (serial) {
          for (int64_t n = 0; n < d.n; ++n) {
            for (int64_t c = 0; c < d.c; ++c) {
              double sum = 0;
              for (int64_t s = 0; s < d.plane; ++s) sum += x[BlockedIndex(d, n, c, s)];
              y[n * d.c + c] = static_cast<T>(sum / d.plane);
            }
          }
          return;
        }
        cpu::ParallelFor(d.n * (d.c / d.lanes), 1, [&](int64_t begin, int64_t end) {
          if (d.lanes == 16) {
            MeanOfBlocks<T, 16>(x, y, d, begin, end);
          } else {
            MeanOfBlocks<T, 8>(x, y, d, begin, end);
          }
        });
      });
    };
  };
}

KernelFactory ChannelSumFactory(bool serial) {
  return [serial](const Node& node) -> Kernel {
    const Dims d = DimsOf(node.input(0)->type(), node.attrs(), node.op());
    return [d, serial, dtype = node.input(0)->type().dtype](const KernelArgs& a) {
      DispatchFloat(dtype, "blocked_channel_sum", [&](auto t) {
        using T = decltype(t);
        const T* x = static_cast<const T*>(a.inputs[0]);
        T* y = static_cast<T*>(a.outputs[0]);
        if (serial) {
          for (int64_t c = 0; c < d.c; ++c) {
            double sum = 0;
            for (int64_t n = 0; n < d.n; ++n) {
              for (int64_t s = 0; s < d.plane; ++s) sum += x[BlockedIndex(d, n, c, s)];
            }
            y[c] = static_cast<T>(sum);
          }
          return;
        }
        cpu::ParallelFor(d.c / d.lanes, 1, [&](int64_t begin, int64_t end) {
          if (d.lanes == 16) {
            SumOfChannelBlocks<T, 16>(x, y, d, begin, end);
          } else {
            SumOfChannelBlocks<T, 8>(x, y, d, begin, end);
          }
        });
      });
    };
  };
}

KernelFactory ChannelScaleFactory(bool serial) {
  return [serial](const Node& node) -> Kernel {
    const Dims d = DimsOf(node.input(0)->type(), node.attrs(), node.op());
    const bool per_sample = node.input(1)->type().shape[0] == d.n && d.n != 1;
    return [d, serial, per_sample, dtype = node.input(0)->type().dtype](const KernelArgs& a) {
      DispatchFloat(dtype, "blocked_channel_scale", [&](auto t) {
        using T = decltype(t);
        const T* x = static_cast<const T*>(a.inputs[0]);
        const T* g = static_cast<const T*>(a.inputs[1]);
        T* y = static_cast<T*>(a.outputs[0]);
        if (serial) {
          for (int64_t n = 0; n < d.n; ++n) {
            for (int64_t c = 0; c < d.c; ++c) {
              const T gate = g[(per_sample ? n * d.c : 0) + c];
              for (int64_t s = 0; s < d.plane; ++s) {
                const int64_t i = BlockedIndex(d, n, c, s);
                y[i] = x[i] * gate;
              }
            }
          }
          return;
        }
        cpu::ParallelFor(d.n * (d.c / d.lanes), 1, [&](int64_t begin, int64_t end) {
          if (d.lanes == 16) {
            ScaleBlocks<T, 16>(x, g, y, d, per_sample, begin, end);
          } else {
            ScaleBlocks<T, 8>(x, g, y, d, per_sample, begin, end);
          }
        });
      });
    };
  };
}

// block_channels (to_blocked) / unblock_channels: the CPU kernel's tiled transposes, or
// (serial, the reference) one element at a time through BlockedIndex.
KernelFactory ReblockFactory(bool to_blocked, bool serial) {
  return [to_blocked, serial](const Node& node) -> Kernel {
    const TensorType& x = node.input(0)->type();
    const Dims d = LayoutDims(x, node.attrs());
    const size_t size = SizeOf(x.dtype);
    return [d, size, to_blocked, serial](const KernelArgs& a) {
      const char* in = static_cast<const char*>(a.inputs[0]);
      char* out = static_cast<char*>(a.outputs[0]);
      if (!serial) {
        cpu::ReblockActivation(in, out, size, d.n, d.c, d.plane, to_blocked, true, d.block);
        return;
      }
      for (int64_t n = 0; n < d.n; ++n) {
        for (int64_t c = 0; c < d.c; ++c) {
          for (int64_t s = 0; s < d.plane; ++s) {
            const int64_t plain = (n * d.c + c) * d.plane + s, blocked = BlockedIndex(d, n, c, s);
            std::memcpy(out + (to_blocked ? blocked : plain) * size,
                        in + (to_blocked ? plain : blocked) * size, size);
          }
        }
      }
    };
  };
}

void RegisterReblock(OpRegistry& r, bool to_blocked) {
  OpDef d;
  d.name = to_blocked ? "block_channels" : "unblock_channels";
  d.doc = to_blocked ? "x [N, C, H, W] (C divisible by 16, any dtype) from NCHW into oneDNN's "
                       "channel-blocked layout; made by block-conv-layout"
                     : "x [N, C, H, W] (C divisible by 16, any dtype) from oneDNN's "
                       "channel-blocked layout back to NCHW; made by block-conv-layout";
  d.attrs = {{"channels_last", false}};
  d.not_differentiable = true;
  d.traits.half_native = true;  // moves elements: any dtype
  d.infer = [name = d.name](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& x = c.in(0);
    TG_CHECK(x.rank() == 4 && x.shape[1] % 16 == 0, kShape, name, ": expected x [N, C, H, W] "
             "with C divisible by 16 (whole channel blocks), got ", x.ToString());
    return {x};
  };
  d.kernels[DeviceKind::kCpu] = ReblockFactory(to_blocked, false);
  d.kernels[DeviceKind::kReference] = ReblockFactory(to_blocked, true);
  OpSample f32, f16, nhwc;
  f32.inputs = {{DType::kF32, {2, 32, 3, 5}}};
  f16.inputs = {{DType::kF16, {1, 16, 17, 1}}};
  nhwc.inputs = {{DType::kBF16, {2, 48, 5, 19}}};  // more than one 16 x 16 tile each way
  nhwc.attrs = {{"channels_last", true}};
  d.samples = {f32, f16, nhwc};
  r.Register(std::move(d));
}

OpSample Sample(std::vector<Shape> shapes, AttrMap attrs = {}) {
  OpSample s;
  for (Shape& shape : shapes) s.inputs.push_back({DType::kF32, std::move(shape)});
  s.attrs = std::move(attrs);
  return s;
}

}  // namespace

void RegisterBlockedLayoutOps(OpRegistry& r) {
  OpDef mean;
  mean.name = "blocked_spatial_mean";
  mean.attrs = {{"keepdim", true}, {"channels_last", false}};
  mean.doc = "mean over H and W of x [N, C, H, W] in oneDNN's channel-blocked layout "
             "(C divisible by 16): [N, C, 1, 1], or [N, C] without keepdim";
  mean.not_differentiable = true;
  mean.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const Dims d = DimsOf(c.in(0), c.attrs, "blocked_spatial_mean");
    Shape out = GetBool(c.attrs, "keepdim") ? Shape{d.n, d.c, 1, 1} : Shape{d.n, d.c};
    return {{c.in(0).dtype, out}};
  };
  mean.kernels[DeviceKind::kCpu] = SpatialMeanFactory(false);
  mean.kernels[DeviceKind::kReference] = SpatialMeanFactory(true);
  mean.samples = {Sample({{2, 16, 3, 3}}, {{"keepdim", true}}),
                  Sample({{1, 32, 2, 5}}, {{"keepdim", false}}),
                  Sample({{2, 48, 2, 3}}, {{"keepdim", true}, {"channels_last", true}})};
  r.Register(std::move(mean));

  OpDef sum;
  sum.name = "blocked_channel_sum";
  sum.attrs = {{"keepdim", false}, {"channels_last", false}};
  sum.doc = "sum over N, H and W of x [N, C, H, W] in oneDNN's channel-blocked layout "
            "(C divisible by 16): [C], or [1, C, 1, 1] with keepdim";
  sum.not_differentiable = true;
  sum.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const Dims d = DimsOf(c.in(0), c.attrs, "blocked_channel_sum");
    Shape out = GetBool(c.attrs, "keepdim") ? Shape{1, d.c, 1, 1} : Shape{d.c};
    return {{c.in(0).dtype, out}};
  };
  sum.kernels[DeviceKind::kCpu] = ChannelSumFactory(false);
  sum.kernels[DeviceKind::kReference] = ChannelSumFactory(true);
  sum.samples = {Sample({{2, 16, 3, 3}}, {{"keepdim", false}}),
                 Sample({{3, 32, 2, 5}}, {{"keepdim", true}}),
                 Sample({{2, 48, 2, 3}}, {{"keepdim", false}, {"channels_last", true}})};
  r.Register(std::move(sum));

  OpDef scale;
  scale.name = "blocked_channel_scale";
  scale.num_inputs = 2;
  scale.attrs = {{"channels_last", false}};
  scale.doc = "x * g per channel: x [N, C, H, W] in oneDNN's channel-blocked layout (C "
              "divisible by 16, the result too), g [N or 1, C, 1, 1]";
  scale.not_differentiable = true;
  scale.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& x = c.in(0);
    const Dims d = DimsOf(x, c.attrs, "blocked_channel_scale");
    const TensorType& g = c.in(1);
    TG_CHECK(g.dtype == x.dtype && g.rank() == 4 && (g.shape[0] == d.n || g.shape[0] == 1) &&
                 g.shape[1] == d.c && g.shape[2] == 1 && g.shape[3] == 1,
             kShape, "blocked_channel_scale: expected g [", d.n, " or 1, ", d.c,
             ", 1, 1] of x's dtype, got ", g.ToString());
    return {x};
  };
  scale.kernels[DeviceKind::kCpu] = ChannelScaleFactory(false);
  scale.kernels[DeviceKind::kReference] = ChannelScaleFactory(true);
  scale.samples = {Sample({{2, 16, 3, 3}, {2, 16, 1, 1}}),
                   Sample({{2, 32, 2, 3}, {1, 32, 1, 1}}),
                   Sample({{2, 48, 2, 3}, {2, 48, 1, 1}}, {{"channels_last", true}})};
  r.Register(std::move(scale));

  RegisterReblock(r, true);
  RegisterReblock(r, false);
}

}  // namespace tg
