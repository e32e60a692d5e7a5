// Factories for every pass (each defined in its own file, named as in CreatePass()).
#pragma once

#include <memory>

#include "passes/pass.h"

namespace tg {

std::unique_ptr<Pass> CreateDcePass();               // "dce"            dce.cc
std::unique_ptr<Pass> CreateCsePass();               // "cse"            cse.cc
std::unique_ptr<Pass> CreateConstantFoldPass();      // "constant-fold"  constant_fold.cc
std::unique_ptr<Pass> CreateFoldTransposePass();     // "fold-transpose"  fold_transpose.cc
std::unique_ptr<Pass> CreateFoldExactCastsPass();    // "fold-exact-casts" fold_exact_casts.cc
std::unique_ptr<Pass> CreateHoistScalarsPass();      // "hoist-scalars"   hoist_scalars.cc
std::unique_ptr<Pass> CreateFuseElementwisePass();   // "fuse-elementwise" fuse_elementwise.cc
std::unique_ptr<Pass> CreateRecomputePass();         // "recompute"        recompute.cc
std::unique_ptr<Pass> CreateFuseMatmulEpiloguePass();  // "fuse-matmul-epilogue"
std::unique_ptr<Pass> CreateFuseConvEpiloguePass();    // "fuse-conv-epilogue"
std::unique_ptr<Pass> CreateBlockConvLayoutPass();     // "block-conv-layout"
std::unique_ptr<Pass> CreateFuseNormActivationPass();  // "fuse-norm-activation"
std::unique_ptr<Pass> CreateNarrowHalfDensePass();     // "narrow-half-dense"
std::unique_ptr<Pass> CreateWidenHalfDensePass();      // "widen-half-dense"
std::unique_ptr<Pass> CreateScheduleUpdatesPass();     // "schedule-updates"
std::unique_ptr<Pass> CreateRematElementwisePass();    // "remat-elementwise"
std::unique_ptr<Pass> CreateHalfWeightShadowsPass();   // "half-weight-shadows"
std::unique_ptr<Pass> CreateFoldNormCastsPass();       // "fold-norm-casts"
std::unique_ptr<Pass> CreateStreamUpdateStoresPass();  // "stream-update-stores"
std::unique_ptr<Pass> CreateMoveCastsPass();           // "move-casts"

}  // namespace tg
