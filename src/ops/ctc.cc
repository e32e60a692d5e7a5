// CTC op family: ctc_loss (connectionist temporal classification, reduction none, the
// semantics of torch.nn.functional.ctc_loss(reduction="none")) and its backward
// ctc_loss_backward, which recomputes alpha and beta from the inputs (no saved state) and is
// the true gradient w.r.t. log_probs (see kernels/cpu/ctc_kernels.h for the formula and the
// choices where the loss is infinite).
//   ctc_loss(log_probs [T, B, C] f32/f64, targets [B, S], input_lengths [B],
//            target_lengths [B]) -> [B]; integers are i64 or i32; attrs blank, zero_infinity.
// And ctc_beam_search_decoder (PopTorch's): the most likely label sequences by prefix beam
// search (kernels/cpu/ctc_decoder_kernels.h), not differentiable:
//   ctc_beam_search_decoder(log_probs [T, B, C], lengths [B]) {blank, beam_width, top_paths}
//     -> (log probabilities [B, top_paths], lengths i32 [B, top_paths], labels i32 [B, top_paths, T])
#include "kernels/cpu/ctc_decoder_kernels.h"
#include "kernels/cpu/ctc_kernels.h"
#include "ops/builder.h"
#include "ops/dispatch.h"
#include "ops/families.h"
#include "support/error.h"

namespace tg {
namespace {

bool IsIndex(DType d) { return d == DType::kI64 || d == DType::kI32; }

// Checks the four ctc_loss operands (log_probs at `lp_index`) and the blank attribute; returns
// the log_probs type.
const TensorType& CheckCtcInputs(const InferContext& c, size_t lp_index, const std::string& op) {
  const TensorType& lp = c.in(lp_index);
  TG_CHECK(lp.rank() == 3 && IsFloating(lp.dtype), kShape, op,
           ": expected floating log_probs [T, B, C], got ", lp.ToString());
  int64_t b = lp.shape[1], classes = lp.shape[2];
  const TensorType& targets = c.in(lp_index + 1);
  TG_CHECK(IsIndex(targets.dtype) && targets.rank() == 2 && targets.shape[0] == b, kShape, op,
           ": expected integer targets [", b, ", S], got ", targets.ToString());
  for (size_t k : {lp_index + 2, lp_index + 3}) {
    const TensorType& len = c.in(k);
    TG_CHECK(IsIndex(len.dtype) && len.shape == Shape{b}, kShape, op,
             ": expected integer lengths of shape [", b, "], got ", len.ToString());
  }
  int64_t blank = GetInt(c.attrs, "blank");
  TG_CHECK(blank >= 0 && blank < classes, kInvalidInput, op, ": blank ", blank,
           " out of range [0, ", classes, ")");
  return lp;
}

// Kernel parameters and integer views from the node (log_probs is input `lp_index`).
cpu::CtcParams ParamsOf(const Node& n, size_t lp_index, const char* op) {
  const Shape& lp = n.input(lp_index)->type().shape;
  cpu::CtcParams p;
  p.t = lp[0];
  p.b = lp[1];
  p.c = lp[2];
  p.s = n.input(lp_index + 1)->type().shape[1];
  p.blank = GetInt(n.attrs(), "blank");
  p.zero_infinity = GetBool(n.attrs(), "zero_infinity");
  p.op = op;
  return p;
}

cpu::CtcInputs IntInputs(const KernelArgs& a, size_t lp_index, const bool (&is64)[3]) {
  cpu::CtcInputs in;
  in.targets = {a.inputs[lp_index + 1], is64[0]};
  in.input_lengths = {a.inputs[lp_index + 2], is64[1]};
  in.target_lengths = {a.inputs[lp_index + 3], is64[2]};
  return in;
}

KernelFactory ForwardFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    cpu::CtcParams p = ParamsOf(n, 0, "ctc_loss");
    DType dtype = n.input(0)->type().dtype;
    bool is64[3];
    for (int k = 0; k < 3; ++k) is64[k] = n.input(k + 1)->type().dtype == DType::kI64;
    return [=](const KernelArgs& a) {
      cpu::CtcInputs in = IntInputs(a, 0, is64);
      DispatchFloat(dtype, "ctc_loss", [&](auto t) {
        using T = decltype(t);
        auto* lp = static_cast<const T*>(a.inputs[0]);
        auto* out = static_cast<T*>(a.outputs[0]);
        if (reference) cpu::CtcLossRef(lp, in, out, p);
        else cpu::CtcLoss(lp, in, out, p);
      });
    };
  };
}

KernelFactory BackwardFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    cpu::CtcParams p = ParamsOf(n, 1, "ctc_loss_backward");
    DType dtype = n.input(1)->type().dtype;
    bool is64[3];
    for (int k = 0; k < 3; ++k) is64[k] = n.input(k + 2)->type().dtype == DType::kI64;
    return [=](const KernelArgs& a) {
      cpu::CtcInputs in = IntInputs(a, 1, is64);
      DispatchFloat(dtype, "ctc_loss_backward", [&](auto t) {
        using T = decltype(t);
        auto* go = static_cast<const T*>(a.inputs[0]);
        auto* lp = static_cast<const T*>(a.inputs[1]);
        auto* grad = static_cast<T*>(a.outputs[0]);
        if (reference) cpu::CtcLossBackwardRef(go, lp, in, grad, p);
        else cpu::CtcLossBackward(go, lp, in, grad, p);
      });
    };
  };
}

std::vector<AttrSpec> CtcAttrs() {
  return {{"blank", Attr(int64_t{0})}, {"zero_infinity", Attr(false)}};
}

// ---- samples ----------------------------------------------------------------------------
// Lengths and (where it matters) labels are explicit so that every row is valid; labels
// avoid the blank. T >= 2 * target_length + 1 keeps rows feasible unless a sample wants
// otherwise.
struct CtcCase {
  int64_t t, b, c, s;
  InputInit targets;
  std::vector<double> input_lengths, target_lengths;
  AttrMap attrs;
  DType index = DType::kI64;
  bool skip_grad = false;  // an infinite loss (or too large for finite differences)
};

std::vector<CtcCase> CtcCases() {
  auto attrs = [](int64_t blank, bool zero_inf) {
    return AttrMap{{"blank", blank}, {"zero_infinity", zero_inf}};
  };
  return {
      // one shorter target and one shorter input
      {6, 2, 4, 2, InputInit::Ints(1, 4), {6, 5}, {2, 1}, attrs(0, false)},
      // repeated consecutive labels; row 1 is tight (3 frames for [3, 3] need blank between)
      {5, 2, 4, 2, InputInit::Values({2, 2, 3, 3}), {5, 3}, {2, 2}, attrs(0, false)},
      // blank = C - 1, i32 integers, an empty target and an empty input
      {7, 3, 5, 3, InputInit::Ints(0, 4), {7, 6, 0}, {3, 0, 0}, attrs(4, false), DType::kI32},
      // zero_infinity with an infeasible row ([1, 1, 1] needs 5 frames): loss and grad 0
      {4, 2, 3, 3, InputInit::Values({1, 2, 1, 1, 1, 1}), {4, 4}, {2, 3}, attrs(0, true)},
      // the same infeasible row without zero_infinity: +inf (no gradient check)
      {4, 2, 3, 3, InputInit::Values({1, 2, 1, 1, 1, 1}), {4, 4}, {2, 3}, attrs(0, false),
       DType::kI64, true},
  };
}

// A larger case that exercises the parallel path (kernel check only).
CtcCase LargeCase() {
  std::vector<double> il, tl;
  for (int64_t i = 0; i < 32; ++i) {
    il.push_back(100 - (i % 7) * 5);
    tl.push_back(20 - (i % 5) * 3);
  }
  return {100, 32, 20, 20, InputInit::Ints(1, 20), il, tl, AttrMap{}, DType::kI64, true};
}

OpSample SampleOf(const CtcCase& k, bool with_go) {
  OpSample s;
  TensorType idx_b{k.index, {k.b}};
  if (with_go) s.inputs.push_back({DType::kF32, {k.b}});
  s.inputs.insert(s.inputs.end(),
                  {{DType::kF32, {k.t, k.b, k.c}}, {k.index, {k.b, k.s}}, idx_b, idx_b});
  if (with_go) s.init.push_back(InputInit::Normal());
  s.init.insert(s.init.end(), {InputInit::Normal(), k.targets, InputInit::Values(k.input_lengths),
                               InputInit::Values(k.target_lengths)});
  s.attrs = k.attrs;
  s.skip_grad_check = k.skip_grad;
  return s;
}

std::vector<OpSample> Samples(bool with_go) {
  std::vector<OpSample> out;
  for (const CtcCase& k : CtcCases()) out.push_back(SampleOf(k, with_go));
  out.push_back(SampleOf(LargeCase(), with_go));
  return out;
}

// ---- ops --------------------------------------------------------------------------------
void RegisterCtcLoss(OpRegistry& r) {
  OpDef d;
  d.name = "ctc_loss";
  d.num_inputs = 4;
  d.attrs = CtcAttrs();
  d.doc = "Per-sample CTC negative log-likelihood [B] of targets [B, S] under log_probs "
          "[T, B, C] with input/target lengths (reduction none; +inf when infeasible, 0 with "
          "zero_infinity).";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& lp = CheckCtcInputs(c, 0, "ctc_loss");
    return {{lp.dtype, {lp.shape[1]}}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    Value* grad = g.b().Op1("ctc_loss_backward", {g.GO(0), g.I(0), g.I(1), g.I(2), g.I(3)},
                            g.attrs());
    return {grad, nullptr, nullptr, nullptr};
  };
  d.kernels[DeviceKind::kCpu] = ForwardFactory(false);
  d.kernels[DeviceKind::kReference] = ForwardFactory(true);
  d.samples = Samples(false);
  r.Register(std::move(d));
}

void RegisterCtcLossBackward(OpRegistry& r) {
  OpDef d;
  d.name = "ctc_loss_backward";
  d.num_inputs = 5;
  d.attrs = CtcAttrs();
  d.doc = "Gradient of ctc_loss w.r.t. log_probs [T, B, C] from GO [B] and ctc_loss's inputs "
          "(recomputes alpha and beta; 0 past each input length and for infinite losses).";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& lp = CheckCtcInputs(c, 1, "ctc_loss_backward");
    const TensorType& go = c.in(0);
    TG_CHECK(go.dtype == lp.dtype && go.shape == Shape{lp.shape[1]}, kShape,
             "ctc_loss_backward: expected a gradient of type ",
             TensorType{lp.dtype, {lp.shape[1]}}.ToString(), ", got ", go.ToString());
    return {lp};
  };
  d.not_differentiable = true;
  d.kernels[DeviceKind::kCpu] = BackwardFactory(false);
  d.kernels[DeviceKind::kReference] = BackwardFactory(true);
  d.samples = Samples(true);
  r.Register(std::move(d));
}

// ---- beam-search decoder -------------------------------------------------------------------
KernelFactory DecoderFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    const Shape& lp = n.input(0)->type().shape;
    cpu::CtcDecodeParams p;
    p.t = lp[0];
    p.b = lp[1];
    p.c = lp[2];
    p.blank = GetInt(n.attrs(), "blank");
    p.beam_width = GetInt(n.attrs(), "beam_width");
    p.top_paths = GetInt(n.attrs(), "top_paths");
    const DType dtype = n.input(0)->type().dtype;
    const bool is64 = n.input(1)->type().dtype == DType::kI64;
    return [=](const KernelArgs& a) {
      cpu::IntView lengths{a.inputs[1], is64};
      auto* path_lengths = static_cast<int32_t*>(a.outputs[1]);
      auto* paths = static_cast<int32_t*>(a.outputs[2]);
      DispatchFloat(dtype, "ctc_beam_search_decoder", [&](auto t) {
        using T = decltype(t);
        auto* lp = static_cast<const T*>(a.inputs[0]);
        auto* scores = static_cast<T*>(a.outputs[0]);
        if (reference) cpu::CtcBeamSearchRef(lp, lengths, scores, path_lengths, paths, p);
        else cpu::CtcBeamSearch(lp, lengths, scores, path_lengths, paths, p);
      });
    };
  };
}

OpSample DecoderSample(int64_t t, int64_t b, int64_t c, std::vector<double> lengths,
                       AttrMap attrs, DType index = DType::kI64) {
  OpSample s;
  s.inputs = {{DType::kF32, {t, b, c}}, {index, {b}}};
  s.init = {InputInit::Normal(), InputInit::Values(std::move(lengths))};
  s.attrs = std::move(attrs);
  return s;
}

void RegisterCtcBeamSearchDecoder(OpRegistry& r) {
  OpDef d;
  d.name = "ctc_beam_search_decoder";
  d.num_inputs = 2;
  d.num_outputs = 3;
  d.attrs = {{"blank", Attr(int64_t{0})}, {"beam_width", Attr(int64_t{100})},
             {"top_paths", Attr(int64_t{1})}};
  d.doc = "The top_paths most likely label sequences of log_probs [T, B, C] (prefix beam "
          "search, beam_width beams; sample i reads lengths[i] frames): their log "
          "probabilities [B, top_paths], lengths [B, top_paths] i32 and labels [B, top_paths, "
          "T] i32 (then zeros).";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& lp = c.in(0);
    const char* op = "ctc_beam_search_decoder";
    TG_CHECK(lp.rank() == 3 && IsFloating(lp.dtype), kShape, op,
             ": expected floating log_probs [T, B, C], got ", lp.ToString());
    const int64_t t = lp.shape[0], b = lp.shape[1], classes = lp.shape[2];
    const TensorType& len = c.in(1);
    TG_CHECK(IsIndex(len.dtype) && len.shape == Shape{b}, kShape, op,
             ": expected integer lengths of shape [", b, "], got ", len.ToString());
    const int64_t blank = GetInt(c.attrs, "blank"), beam = GetInt(c.attrs, "beam_width"),
                  top = GetInt(c.attrs, "top_paths");
    TG_CHECK(blank >= 0 && blank < classes, kInvalidInput, op, ": blank ", blank,
             " out of range [0, ", classes, ")");
    TG_CHECK(beam >= 1 && top >= 1 && top <= beam, kInvalidInput, op,
             ": expected 1 <= top_paths <= beam_width, got top_paths ", top, " and beam_width ",
             beam);
    return {{lp.dtype, {b, top}}, {DType::kI32, {b, top}}, {DType::kI32, {b, top, t}}};
  };
  d.not_differentiable = true;
  d.kernels[DeviceKind::kCpu] = DecoderFactory(false);
  d.kernels[DeviceKind::kReference] = DecoderFactory(true);
  auto attrs = [](int64_t blank, int64_t beam, int64_t top) {
    return AttrMap{{"blank", blank}, {"beam_width", beam}, {"top_paths", top}};
  };
  d.samples = {DecoderSample(9, 3, 10, {7, 5, 9}, attrs(0, 100, 1)),
               DecoderSample(6, 2, 4, {6, 0}, attrs(3, 5, 3), DType::kI32),
               DecoderSample(20, 4, 5, {20, 13, 1, 17}, attrs(1, 1, 1)),
               DecoderSample(30, 5, 6, {30, 29, 28, 3, 30}, attrs(0, 16, 4))};
  r.Register(std::move(d));
}

}  // namespace

void RegisterCtcOps(OpRegistry& r) {
  RegisterCtcLoss(r);
  RegisterCtcLossBackward(r);
  RegisterCtcBeamSearchDecoder(r);
}

}  // namespace tg
