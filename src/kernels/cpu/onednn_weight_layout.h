// Copies f32 convolution weight gradients out of oneDNN's ABcd16b16a / ABcd8b8a layout
// ([O/B][I/B][KH][KW][i][o] blocks) into plain OIHW. oneDNN 2.6 runs that reorder with its
// generic kernel for 1x1 weights: 3.0 ms for a ResNet-50 layer-4 gradient (8 MiB), more than
// the convolution that computed it; this copy takes 0.85 ms. oneDNN's own reorders are as fast
// or faster for every other weight layout and direction it picks (measured: plain to
// ABcd16b16a 0.15 ms, ours 0.54), so OnednnConv2d keeps them there.
#pragma once

#include <cstdint>

#include <oneapi/dnnl/dnnl.hpp>

namespace tg::cpu {

// B when `md` is 4-D f32 weights [O, I, KH, KW] in ABcd<B>b<B>a (the outer dims by strides),
// whole blocks, no offset, B <= 16, KH * KW <= 49; 0 otherwise (use oneDNN's reorder).
int64_t InMajorWeightBlock(const dnnl::memory::desc& md);

void UnblockWeights(const dnnl::memory::desc& md, int64_t block, const float* blocked,
                    float* plain);

}  // namespace tg::cpu
