// One registration function per op family (each defined in the family's own file).
#pragma once

#include "ops/registry.h"

namespace tg {

void RegisterElementwiseOps(OpRegistry& r);  // elementwise.cc: unary, binary, compare, where, cast
void RegisterRandomOps(OpRegistry& r);       // random.cc: dropout, uniform, normal (Philox)
void RegisterFusedOps(OpRegistry& r);        // fused.cc: fused_elementwise
void RegisterMatmulOps(OpRegistry& r);       // matmul.cc
void RegisterConvOps(OpRegistry& r);         // conv.cc: conv2d and its backward ops
void RegisterConvEpilogueOps(OpRegistry& r); // conv_epilogue.cc: conv2d_epilogue
void RegisterPoolOps(OpRegistry& r);         // pool.cc: max, avg, adaptive avg pooling
void RegisterNormOps(OpRegistry& r);         // norm.cc: batch norm, layer norm
void RegisterReduceOps(OpRegistry& r);       // reduce.cc: sum, mean, amax, var
void RegisterSoftmaxOps(OpRegistry& r);      // softmax.cc: softmax, log_softmax
void RegisterShapeOps(OpRegistry& r);        // shape.cc: reshape, permute, expand, slice, cat, full
void RegisterIndexOps(OpRegistry& r);        // index.cc: gather, index_select, embedding
void RegisterLossOps(OpRegistry& r);         // loss.cc: nll_loss
void RegisterCtcOps(OpRegistry& r);          // ctc.cc: ctc_loss, its backward, beam search
void RegisterPointCloudOps(OpRegistry& r);   // point_cloud.cc: fps, nearest (torch_cluster)
void RegisterRecurrentOps(OpRegistry& r);    // recurrent.cc: LSTM and GRU layers, backwards
void RegisterCollectiveOps(OpRegistry& r);   // collective.cc: all_reduce, reduce_scatter, ...
void RegisterTransferOps(OpRegistry& r);     // transfer.cc: stage_copy
void RegisterCheckOps(OpRegistry& r);        // check.cc: assert_all
void RegisterPadOps(OpRegistry& r);          // pad.cc: constant padding
void RegisterScanOps(OpRegistry& r);         // scan.cc: cumsum, prod
void RegisterSortOps(OpRegistry& r);         // sort.cc: topk (and sort through it)
void RegisterLinalgOps(OpRegistry& r);       // linalg.cc: inverse, solves, det, cholesky
void RegisterAttentionOps(OpRegistry& r);    // attention.cc: fused attention + backward
void RegisterBlockedLayoutOps(OpRegistry& r);  // blocked_layout.cc: squeeze-excite on blocked x

}  // namespace tg
