// ONNX recurrent ops (RNN, GRU, LSTM), unrolled over the (static) sequence at import: the
// input projection X W^T of every step is one matmul, each step adds H R^T and applies the
// gates. Forward, reverse and bidirectional; layout 0 and 1; initial states; LSTM
// peepholes and input_forget; GRU linear_before_reset; clip; activations Sigmoid, Tanh,
// Relu, HardSigmoid. sequence_lens must be absent or equal to the sequence length for every
// batch element (a ragged batch would need per-element masking: refused).
#include <limits>

#include "onnx/converter.h"
#include "support/error.h"

namespace tg {
namespace {

using Outs = std::vector<Value*>;
using Ints = std::vector<int64_t>;

enum class Cell { kRnn, kGru, kLstm };

struct Activation {
  std::string name;
  double alpha = 0, beta = 0;
};

Value* Apply(OnnxNode& n, const Activation& a, Value* x) {
  Builder& b = n.b();
  if (a.name == "Sigmoid") return b.Op1("sigmoid", {x});
  if (a.name == "Tanh") return b.Op1("tanh", {x});
  if (a.name == "Relu") return b.Op1("relu", {x});
  if (a.name == "HardSigmoid") {
    Value* y = b.AddScalar(b.MulScalar(x, a.alpha), a.beta);
    return b.Op1("clamp", {y}, {{"min", 0.0}, {"max", 1.0}});
  }
  n.Unsupported("activation '" + a.name + "'");
}

// Columns [k * h, (k + 1) * h) of the last axis.
Value* Gate(Builder& b, Value* v, int64_t k, int64_t h) {
  return b.Op1("slice", {v}, {{"axis", RankOf(v) - 1}, {"start", k * h}, {"end", (k + 1) * h}});
}

// Row d of a [num_directions, ...] tensor, without the leading axis.
Value* Direction(Builder& b, Value* v, int64_t d) {
  Shape s(v->type().shape.begin() + 1, v->type().shape.end());
  return b.Reshape(b.Op1("slice", {v}, {{"axis", int64_t{0}}, {"start", d}, {"end", d + 1}}), s);
}

Outs Recurrent(OnnxNode& n, Cell cell) {
  Builder& b = n.b();
  const int gates = cell == Cell::kLstm ? 4 : cell == Cell::kGru ? 3 : 1;
  const int64_t hidden = n.attr_int("hidden_size", 0);
  TG_CHECK(hidden > 0, kInvalidInput, n.proto().op_type(), ": hidden_size is required");
  const std::string direction = n.attr_string("direction", "forward");
  if (direction != "forward" && direction != "reverse" && direction != "bidirectional")
    n.Unsupported("direction '" + direction + "'");
  const int64_t dirs = direction == "bidirectional" ? 2 : 1;
  const bool batch_first = n.attr_int("layout", 0) != 0;
  Value* x = n.input(0);
  if (batch_first) x = b.Permute(x, {1, 0, 2});
  const int64_t seq = x->type().shape[0], batch = x->type().shape[1];
  const DType dt = x->type().dtype;
  if (n.has_input(4)) {
    for (int64_t len : n.ints_input(4))
      if (len != seq) n.Unsupported("sequence_lens shorter than the sequence (ragged batches)");
  }
  const double clip = n.attr_float("clip", 0.0);
  const bool has_clip = n.has_attr("clip");

  // Activations per direction: f, g, h (LSTM), f, g (GRU), f (RNN).
  const int per_dir = cell == Cell::kLstm ? 3 : cell == Cell::kGru ? 2 : 1;
  std::vector<std::string> names = {"Sigmoid", "Tanh", "Tanh"};
  if (cell == Cell::kRnn) names = {"Tanh"};
  std::vector<Activation> acts;
  std::vector<std::string> given;
  const onnx::NodeProto& p = n.proto();
  for (const auto& a : p.attribute())
    if (a.name() == "activations") given.assign(a.strings().begin(), a.strings().end());
  std::vector<double> alphas = n.attr_floats("activation_alpha"), betas = n.attr_floats("activation_beta");
  for (int64_t d = 0; d < dirs; ++d)
    for (int k = 0; k < per_dir; ++k) {
      size_t i = static_cast<size_t>(d * per_dir + k);
      Activation a{i < given.size() ? given[i] : names[k]};
      if (a.name == "HardSigmoid") {
        a.alpha = i < alphas.size() ? alphas[i] : 0.2;
        a.beta = i < betas.size() ? betas[i] : 0.5;
      }
      acts.push_back(a);
    }

  std::vector<Value*> y_dirs, h_last, c_last;
  for (int64_t d = 0; d < dirs; ++d) {
    Value* w = Direction(b, n.input(1), d);  // [gates * H, in]
    Value* r = Direction(b, n.input(2), d);  // [gates * H, H]
    Value* bias_w = nullptr;
    Value* bias_r = nullptr;
    if (n.has_input(3)) {
      Value* bias = Direction(b, n.input(3), d);  // [2 * gates * H]
      bias_w = b.Op1("slice", {bias}, {{"axis", int64_t{0}}, {"start", int64_t{0}}, {"end", gates * hidden}});
      bias_r = b.Op1("slice", {bias}, {{"axis", int64_t{0}}, {"start", gates * hidden}, {"end", 2 * gates * hidden}});
    }
    // Input projections of every step at once: [seq, batch, gates * H].
    Value* xw = b.MatMul(x, w, false, true);
    if (bias_w) xw = b.Add(xw, bias_w);
    Value* h = n.has_input(5) ? Direction(b, n.input(5), d) : b.Full({batch, hidden}, 0.0, dt);
    Value* c = nullptr;
    Value* peep = nullptr;
    if (cell == Cell::kLstm) {
      c = n.has_input(6) ? Direction(b, n.input(6), d) : b.Full({batch, hidden}, 0.0, dt);
      if (n.has_input(7)) peep = Direction(b, n.input(7), d);  // [3 * H]: i, o, f
    }
    const Activation* f = &acts[d * per_dir];
    const Activation* g = per_dir > 1 ? &acts[d * per_dir + 1] : nullptr;
    const Activation* hh = per_dir > 2 ? &acts[d * per_dir + 2] : nullptr;
    auto pre = [&](Value* v) { return has_clip ? b.Op1("clamp", {v}, {{"min", -clip}, {"max", clip}}) : v; };
    const bool reverse = direction == "reverse" || d == 1;
    std::vector<Value*> steps(seq);
    for (int64_t s = 0; s < seq; ++s) {
      const int64_t t = reverse ? seq - 1 - s : s;
      Value* xt = b.Reshape(b.Op1("slice", {xw}, {{"axis", int64_t{0}}, {"start", t}, {"end", t + 1}}),
                            {batch, gates * hidden});
      Value* hr = b.MatMul(h, r, false, true);
      if (bias_r) hr = b.Add(hr, bias_r);
      if (cell == Cell::kRnn) {
        h = Apply(n, *f, pre(b.Add(xt, hr)));
      } else if (cell == Cell::kGru) {  // gates z, r, h
        Value* z = Apply(n, *f, pre(b.Add(Gate(b, xt, 0, hidden), Gate(b, hr, 0, hidden))));
        Value* rg = Apply(n, *f, pre(b.Add(Gate(b, xt, 1, hidden), Gate(b, hr, 1, hidden))));
        Value* cand;
        if (n.attr_int("linear_before_reset", 0) != 0) {
          cand = b.Add(Gate(b, xt, 2, hidden), b.Mul(rg, Gate(b, hr, 2, hidden)));
        } else {
          // (r * H) R_h^T: R's rows [2H, 3H) are R_h.
          Value* rh = b.MatMul(b.Mul(rg, h), b.Op1("slice", {r}, {{"axis", int64_t{0}}, {"start", 2 * hidden}, {"end", 3 * hidden}}), false, true);
          cand = b.Add(Gate(b, xt, 2, hidden), rh);
          if (bias_r) cand = b.Add(cand, Gate(b, bias_r, 2, hidden));
        }
        Value* ht = Apply(n, *g, pre(cand));
        h = b.Add(b.Mul(b.Sub(ScalarLike(b, z, 1.0), z), ht), b.Mul(z, h));
      } else {  // LSTM gates i, o, f, c
        Value* sum = b.Add(xt, hr);
        Value* ig = Gate(b, sum, 0, hidden);
        Value* fg = Gate(b, sum, 2, hidden);
        if (peep) {
          ig = b.Add(ig, b.Mul(Gate(b, peep, 0, hidden), c));
          fg = b.Add(fg, b.Mul(Gate(b, peep, 2, hidden), c));
        }
        Value* i_act = Apply(n, *f, pre(ig));
        Value* f_act = n.attr_int("input_forget", 0) != 0 ? b.Sub(ScalarLike(b, i_act, 1.0), i_act)
                                                          : Apply(n, *f, pre(fg));
        Value* c_cand = Apply(n, *g, pre(Gate(b, sum, 3, hidden)));
        c = b.Add(b.Mul(f_act, c), b.Mul(i_act, c_cand));
        Value* og = Gate(b, sum, 1, hidden);
        if (peep) og = b.Add(og, b.Mul(Gate(b, peep, 1, hidden), c));
        Value* o_act = Apply(n, *f, pre(og));
        h = b.Mul(o_act, Apply(n, *hh, c));
      }
      steps[t] = b.Reshape(h, {1, 1, batch, hidden});
    }
    y_dirs.push_back(b.Op1("cat", steps, {{"axis", int64_t{0}}}));  // [seq, 1, batch, H]
    h_last.push_back(b.Reshape(h, {1, batch, hidden}));
    if (c) c_last.push_back(b.Reshape(c, {1, batch, hidden}));
  }
  Value* y = dirs == 1 ? y_dirs[0] : b.Op1("cat", y_dirs, {{"axis", int64_t{1}}});
  Value* yh = dirs == 1 ? h_last[0] : b.Op1("cat", h_last, {{"axis", int64_t{0}}});
  Value* yc = c_last.empty() ? nullptr : dirs == 1 ? c_last[0] : b.Op1("cat", c_last, {{"axis", int64_t{0}}});
  if (batch_first) {
    y = b.Permute(y, {2, 0, 1, 3});  // [batch, seq, dirs, H]
    yh = b.Permute(yh, {1, 0, 2});
    if (yc) yc = b.Permute(yc, {1, 0, 2});
  }
  return {n.wants_output(0) ? y : nullptr, n.wants_output(1) ? yh : nullptr,
          n.wants_output(2) ? yc : nullptr};
}

}  // namespace

void AddRecurrentConverters(OnnxConverterTable& t) {
  t["RNN"] = [](OnnxNode& n) { return Recurrent(n, Cell::kRnn); };
  t["GRU"] = [](OnnxNode& n) { return Recurrent(n, Cell::kGru); };
  t["LSTM"] = [](OnnxNode& n) { return Recurrent(n, Cell::kLstm); };
}

}  // namespace tg
