// ONNX Attention (opsets 23-25) composed from IR ops: 3-D inputs split into heads, past
// key/value caches concatenated (present_key / present_value), grouped-query heads repeated,
// scale, softcap, boolean or additive masks (padded when shorter than the keys), causal and
// sliding-window masks aligned bottom-right to the cache, per-batch non-padded key lengths,
// fully masked rows giving 0, and the four qk_matmul_output modes, as the ONNX reference
// computes them. (The PyTorch front end's scaled_dot_product_attention uses the fused
// `attention` op instead; this converter keeps every intermediate the ONNX op can return.)
#include <cmath>
#include <limits>

#include "onnx/converter.h"
#include "support/error.h"

namespace tg {
namespace {

using Outs = std::vector<Value*>;
const double kInf = std::numeric_limits<double>::infinity();

// [B, S, heads * H] -> [B, heads, S, H]
Value* SplitHeads(Builder& b, Value* x, int64_t heads) {
  const Shape& s = x->type().shape;
  return b.Permute(b.Reshape(x, {s[0], s[1], heads, s[2] / heads}), {0, 2, 1, 3});
}

// [B, kvh, T, H] -> [B, kvh * reps, T, H], each head repeated `reps` times in place.
Value* RepeatHeads(Builder& b, Value* x, int64_t reps) {
  if (reps == 1) return x;
  const Shape& s = x->type().shape;
  Value* e = b.Expand(b.Reshape(x, {s[0], s[1], 1, s[2], s[3]}), {s[0], s[1], reps, s[2], s[3]});
  return b.Reshape(e, {s[0], s[1] * reps, s[2], s[3]});
}

// A constant [S, T] of (j - i) for query i and key j.
Value* KeyMinusQuery(Builder& b, int64_t q, int64_t t) {
  HostTensor d({DType::kI64, {q, t}});
  for (int64_t i = 0; i < q; ++i)
    for (int64_t j = 0; j < t; ++j) d.as<int64_t>()[i * t + j] = j - i;
  return b.graph().AddConstant(std::move(d));
}

Outs Attention(OnnxNode& n) {
  Builder& b = n.b();
  Value* q = n.input(0);
  Value* k = n.input(1);
  Value* v = n.input(2);
  const DType dt = q->type().dtype;
  const bool three_d = RankOf(q) == 3;
  if (three_d) {
    int64_t qh = n.attr_int("q_num_heads", 0), kvh = n.attr_int("kv_num_heads", 0);
    TG_CHECK(qh > 0 && kvh > 0, kInvalidInput, "Attention: 3-D inputs need q_num_heads and "
             "kv_num_heads");
    q = SplitHeads(b, q, qh);
    k = SplitHeads(b, k, kvh);
    v = SplitHeads(b, v, kvh);
  }
  TG_CHECK(RankOf(q) == 4 && RankOf(k) == 4 && RankOf(v) == 4, kShape,
           "Attention: expected 3-D or 4-D Q, K, V");
  const bool has_past = n.has_input(4) && n.has_input(5);
  if (has_past) {
    k = b.Op1("cat", {n.input(4), k}, {{"axis", int64_t{2}}});
    v = b.Op1("cat", {n.input(5), v}, {{"axis", int64_t{2}}});
  }
  Value* present_k = k;
  Value* present_v = v;
  const int64_t batch = q->type().shape[0], heads = q->type().shape[1];
  const int64_t s_len = q->type().shape[2], t_len = k->type().shape[2];
  const int64_t past = has_past ? n.input(4)->type().shape[2] : 0;

  // The additive bias [.., S, T]: mask, causal, window, padding.
  Value* bias = b.Full({s_len, t_len}, 0.0, dt);
  const bool causal = n.attr_int("is_causal", 0) != 0;
  if (n.has_input(3)) {
    Value* mask = n.input(3);
    const int64_t short_by = t_len - mask->type().shape.back();
    if (short_by > 0) {
      Shape before(RankOf(mask), 0), after(RankOf(mask), 0);
      after.back() = short_by;
      bool is_bool = mask->type().dtype == DType::kBool;
      if (is_bool) mask = b.Cast(mask, DType::kI32);
      mask = b.Op1("pad", {mask}, {{"before", before}, {"after", after},
                                    {"value", is_bool ? 0.0 : -kInf}});
      if (is_bool) mask = b.Cast(mask, DType::kBool);
    }
    if (mask->type().dtype == DType::kBool)
      mask = b.Where(mask, b.Scalar(0.0, dt), b.Scalar(-kInf, dt));
    bias = b.Add(bias, mask);
  }
  Value* key_minus_query = KeyMinusQuery(b, s_len, t_len);
  // Per-batch frontier offsets (nonpad_kv_seqlen - S) or the cache length.
  Value* offset = nullptr;
  if (n.has_input(6)) {
    if (has_past) n.Unsupported("nonpad_kv_seqlen together with a past cache");
    offset = b.Reshape(b.AddScalar(b.Cast(n.input(6), DType::kI64), static_cast<double>(-s_len)),
                       {batch, 1, 1, 1});
  } else {
    offset = b.Scalar(static_cast<double>(past), DType::kI64);
  }
  auto block = [&](Value* allowed) {
    return b.Where(allowed, b.Scalar(0.0, dt), b.Scalar(-kInf, dt));
  };
  if (causal) bias = b.Add(bias, block(b.Op1("le", {key_minus_query, offset})));
  const int64_t left = n.attr_int("left_window_size", -1), right = n.attr_int("right_window_size", -1);
  if (left >= 0) {  // (i + offset) - j <= left
    Value* ok = b.Op1("le", {b.Sub(offset, key_minus_query), b.Scalar(static_cast<double>(left), DType::kI64)});
    bias = b.Add(bias, block(ok));
  }
  if (right >= 0) {  // j - (i + offset) <= right
    Value* ok = b.Op1("le", {b.Sub(key_minus_query, offset), b.Scalar(static_cast<double>(right), DType::kI64)});
    bias = b.Add(bias, block(ok));
  }
  if (n.has_input(6)) {
    HostTensor positions({DType::kI64, {1, 1, 1, t_len}});
    for (int64_t j = 0; j < t_len; ++j) positions.as<int64_t>()[j] = j;
    Value* lengths = b.Reshape(b.Cast(n.input(6), DType::kI64), {batch, 1, 1, 1});
    bias = b.Add(bias, block(b.Op1("lt", {b.graph().AddConstant(std::move(positions)), lengths})));
  }

  const int64_t kv_heads = k->type().shape[1];
  TG_CHECK(heads % kv_heads == 0, kShape, "Attention: ", heads, " query heads over ", kv_heads,
           " key/value heads");
  k = RepeatHeads(b, k, heads / kv_heads);
  v = RepeatHeads(b, v, heads / kv_heads);
  double scale = n.attr_float("scale", 0.0);
  if (!n.has_attr("scale")) scale = 1.0 / std::sqrt(static_cast<double>(q->type().shape[3]));
  const double root = std::sqrt(scale);
  Value* qk = b.MatMul(b.MulScalar(q, root), b.MulScalar(k, root), false, true);
  const double softcap = n.attr_float("softcap", 0.0);
  if (softcap > 0) qk = b.MulScalar(b.Op1("tanh", {b.MulScalar(qk, 1.0 / softcap)}), softcap);
  Value* with_bias = b.Add(qk, bias);
  Value* probs = b.Op1("softmax", {with_bias}, {{"axis", int64_t{-1}}});
  // Rows with every key masked give 0, not NaN.
  Value* row_max = b.Op1("amax", {bias}, {{"axes", std::vector<int64_t>{-1}}, {"keepdim", true}});
  Value* all_masked = b.Op1("eq", {row_max, b.Scalar(-kInf, dt)});
  probs = b.Where(all_masked, b.Scalar(0.0, dt), probs);
  Value* y = b.MatMul(probs, v);
  if (three_d) {
    const Shape& s = y->type().shape;
    y = b.Reshape(b.Permute(y, {0, 2, 1, 3}), {s[0], s[2], s[1] * s[3]});
  }
  const int64_t mode = n.attr_int("qk_matmul_output_mode", 0);
  Value* qk_out = mode == 2 ? with_bias : mode == 3 ? probs : qk;
  return {y, n.wants_output(1) ? present_k : nullptr, n.wants_output(2) ? present_v : nullptr,
          n.wants_output(3) ? qk_out : nullptr};
}

}  // namespace

void AddAttentionConverters(OnnxConverterTable& t) { t["Attention"] = Attention; }

}  // namespace tg
