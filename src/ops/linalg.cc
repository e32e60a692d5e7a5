// Linear algebra op family, on batches of square matrices A [..., n, n] (f32 / f64; half
// operands widened): the semantics of torch.linalg's dense solvers.
//   matrix_inverse(A)            -> (A^-1, info i32[...])
//   linear_solve(A, B) {adjoint} -> (A^-1 B or A^-T B, info)     B [..., n, k]
//   slogdet(A)                   -> (sign, log |det A|)          [...]
//   det(A)                       -> det A                        [...]
//   cholesky(A) {upper}          -> (L with L L^T = sym(A), or U = L^T; info)
//   triangular_solve(A, B) {upper, transpose, unitriangular} -> op(A)^-1 B
//   triangle(X) {upper, diagonal} -> tril / triu of the last two dims (the others zero)
// info is LAPACK's (0, or the first zero pivot / failed minor, 1-based); a failed matrix's
// outputs are NaN. The front end turns a nonzero info into torch's error where torch raises
// (assert_all). cholesky factors the symmetric part sym(A) = (A + A^T) / 2: for every valid
// (symmetric) input that is A itself, and it makes torch's symmetric gradient the exact
// derivative. Gradients are torch's formulas, built from these ops and matmuls; det's, like
// torch's for invertible A, goes through A^-1 (NaN at a singular A, where torch uses an SVD).
#include <cstring>

#include "kernels/cpu/linalg_kernels.h"
#include "ops/builder.h"
#include "ops/dense_common.h"
#include "ops/families.h"
#include "support/error.h"

namespace tg {
namespace {

using cpu::LinalgShape;
using cpu::TriangularSolveFlags;

Shape BatchShape(const TensorType& a) { return Shape(a.shape.begin(), a.shape.end() - 2); }

// Checks that input `i` is a batch of square floating matrices.
const TensorType& CheckSquare(const InferContext& c, size_t i, const std::string& op) {
  const TensorType& a = c.in(i);
  TG_CHECK(IsFloating(a.dtype) && a.rank() >= 2 && a.shape[a.rank() - 1] == a.shape[a.rank() - 2],
           kShape, op, ": expected floating square matrices [..., n, n], got ", a.ToString());
  return a;
}

// Checks B [..., n, k] against A [..., n, n] (same batch dims and dtype); returns B.
const TensorType& CheckRhs(const InferContext& c, const std::string& op) {
  const TensorType& a = CheckSquare(c, 0, op);
  const TensorType& b = c.in(1);
  const int64_t n = a.shape.back();
  TG_CHECK(b.dtype == a.dtype && b.rank() == a.rank() && b.shape[b.rank() - 2] == n &&
               BatchShape(b) == BatchShape(a),
           kShape, op, ": expected right-hand sides B [..., ", n, ", k] with the batch dims and "
           "dtype of A ", a.ToString(), ", got ", b.ToString());
  return b;
}

LinalgShape ShapeOf(const Node& node) {
  const TensorType& a = node.input(0)->type();
  LinalgShape s;
  s.n = a.shape.back();
  s.batch = 1;
  for (int64_t d : BatchShape(a)) s.batch *= d;
  s.k = node.inputs().size() > 1 ? node.input(1)->type().shape.back() : s.n;
  return s;
}

TriangularSolveFlags FlagsOf(const AttrMap& attrs) {
  return {GetFlag(attrs, "upper"), GetFlag(attrs, "transpose"), GetFlag(attrs, "unitriangular")};
}

// A kernel factory dispatching on A's float dtype: run(T{}, args, shape, attrs).
template <typename Run>
KernelFactory LinalgKernel(const std::string& op, Run run) {
  return dense::FloatKernel(op, [run](auto t, const Node& n) -> Kernel {
    const LinalgShape s = ShapeOf(n);
    const AttrMap attrs = n.attrs();
    return [run, s, attrs](const KernelArgs& a) { run(decltype(t){}, a, s, attrs); };
  });
}

// Sets an op's CPU and reference kernels from run(T{}, args, shape, attrs, reference): the
// two differ only in which kernel function they call.
template <typename Run>
void SetKernels(OpDef& d, Run run) {
  for (bool reference : {false, true}) {
    d.kernels[reference ? DeviceKind::kReference : DeviceKind::kCpu] = LinalgKernel(
        d.name, [run, reference](auto t, const KernelArgs& a, const LinalgShape& s,
                                 const AttrMap& at) { run(t, a, s, at, reference); });
  }
}

using dense::In;
using dense::Out;
int32_t* Info(const KernelArgs& a, int i) { return static_cast<int32_t*>(a.outputs[i]); }

// ---- gradient helpers -------------------------------------------------------------------
Value* MatrixTranspose(Builder& b, Value* x) {
  const int64_t r = x->type().rank();
  return b.Transpose(x, r - 2, r - 1);
}

// x [...] as [..., 1, 1], to scale a batch of matrices.
Value* PerMatrix(Builder& b, Value* x) {
  Shape s = x->type().shape;
  s.push_back(1);
  s.push_back(1);
  return b.Reshape(x, s);
}

Value* Triangle(Builder& b, Value* x, bool upper, int64_t diagonal) {
  return b.Op1("triangle", {x}, {{"upper", upper}, {"diagonal", diagonal}});
}

Value* TriSolve(Builder& b, Value* a, Value* rhs, bool upper, bool transpose, bool unit) {
  return b.Op1("triangular_solve", {a, rhs},
               {{"upper", upper}, {"transpose", transpose}, {"unitriangular", unit}});
}

// The gradient of A in X = op(A)^-1 B (gB the gradient of B): -gB X^T, or -X gB^T for A^T.
Value* SolveGradA(Builder& b, Value* x, Value* gb, bool transpose) {
  return b.Neg(transpose ? b.MatMul(x, gb, false, true) : b.MatMul(gb, x, false, true));
}

// ---- samples ----------------------------------------------------------------------------
// Diagonally dominant matrices [batch, n, n] (well conditioned; `negative` flips every other
// diagonal entry, so determinants of either sign occur), row-major values.
std::vector<double> Dominant(int64_t batch, int64_t n, uint32_t seed, bool negative = false) {
  std::vector<double> v(batch * n * n);
  uint32_t state = seed;
  for (int64_t m = 0; m < batch; ++m) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        state = state * 1664525u + 1013904223u;
        const double r = (state >> 8) * (1.0 / 16777216.0) * 2.0 - 1.0;  // [-1, 1)
        double d = (n + 1 + 0.25 * i) * ((negative && (i + m) % 2) ? -1.0 : 1.0);
        v[(m * n + i) * n + j] = i == j ? d : r;
      }
    }
  }
  return v;
}

// Symmetric positive definite matrices M M^T + n I, plus `skew` times an antisymmetric part.
std::vector<double> PositiveDefinite(int64_t batch, int64_t n, uint32_t seed, double skew = 0) {
  std::vector<double> m = Dominant(batch, n, seed), v(batch * n * n);
  for (int64_t b = 0; b < batch; ++b) {
    const double* mb = m.data() + b * n * n;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < n; ++p) s += mb[i * n + p] * mb[j * n + p] * 0.1;
        const double anti = skew * (mb[i * n + j] - mb[j * n + i]);
        v[(b * n + i) * n + j] = s + (i == j ? n : 0) + anti;
      }
    }
  }
  return v;
}

OpSample MatrixSample(Shape shape, std::vector<double> values, AttrMap attrs = {}) {
  OpSample s;
  s.inputs = {TensorType{DType::kF32, std::move(shape)}};
  s.init = {InputInit::Values(std::move(values))};
  s.attrs = std::move(attrs);
  return s;
}

// A [batch, n, n] with values, B [batch, n, k] normal.
OpSample SolveSample(int64_t batch, int64_t n, int64_t k, std::vector<double> a, AttrMap attrs) {
  OpSample s = MatrixSample({batch, n, n}, std::move(a), std::move(attrs));
  s.inputs.push_back(TensorType{DType::kF32, {batch, n, k}});
  s.init.push_back(InputInit::Normal());
  return s;
}

// ---- ops --------------------------------------------------------------------------------
void RegisterMatrixInverse(OpRegistry& r) {
  OpDef d;
  d.name = "matrix_inverse";
  d.num_outputs = 2;
  d.doc = "(A^-1, info) of square matrices A [..., n, n] (LU with partial pivoting; info: "
          "first zero pivot, 1-based, 0 when invertible; NaN where singular)";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& a = CheckSquare(c, 0, "matrix_inverse");
    return {a, {DType::kI32, BatchShape(a)}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    if (!g.GO(0)) return {nullptr};
    Builder& b = g.b();
    Value* inv = g.O(0);  // d(A^-1) = -A^-1 dA A^-1: gA = -A^-T g A^-T
    return {b.Neg(b.MatMul(b.MatMul(inv, g.GO(0), true, false), inv, false, true))};
  };
  SetKernels(d, [](auto t, const KernelArgs& a, const LinalgShape& s, const AttrMap& at,
                   bool reference) {
    using T = decltype(t);
    if (reference) cpu::MatrixInverseRef(In<T>(a, 0), Out<T>(a, 0), Info(a, 1), s);
    else cpu::MatrixInverse(In<T>(a, 0), Out<T>(a, 0), Info(a, 1), s);
  });
  d.samples = {MatrixSample({3, 3}, Dominant(1, 3, 1)),
               MatrixSample({2, 4, 4}, Dominant(2, 4, 2, true)),
               MatrixSample({2, 1, 5, 5}, Dominant(2, 5, 3)),
               MatrixSample({24, 24}, Dominant(1, 24, 4, true))};
  r.Register(std::move(d));
}

void RegisterLinearSolve(OpRegistry& r) {
  OpDef d;
  d.name = "linear_solve";
  d.num_inputs = 2;
  d.num_outputs = 2;
  d.attrs = {{"adjoint", Attr(false)}};
  d.doc = "(X, info): X = A^-1 B (A^-T B with adjoint) for A [..., n, n], B [..., n, k] (LU "
          "with partial pivoting; info as matrix_inverse's)";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& b = CheckRhs(c, "linear_solve");
    return {b, {DType::kI32, BatchShape(b)}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    if (!g.GO(0)) return {nullptr, nullptr};
    Builder& b = g.b();
    const bool adjoint = GetFlag(g.attrs(), "adjoint");
    Value* gb = b.Op("linear_solve", {g.I(0), g.GO(0)}, {{"adjoint", !adjoint}})[0];
    return {SolveGradA(b, g.O(0), gb, adjoint), gb};
  };
  SetKernels(d, [](auto t, const KernelArgs& a, const LinalgShape& s, const AttrMap& at,
                   bool reference) {
    using T = decltype(t);
    const bool adjoint = GetFlag(at, "adjoint");
    const T *x = In<T>(a, 0), *y = In<T>(a, 1);
    if (reference) cpu::LinearSolveRef(x, y, Out<T>(a, 0), Info(a, 1), s, adjoint);
    else cpu::LinearSolve(x, y, Out<T>(a, 0), Info(a, 1), s, adjoint);
  });
  d.samples = {SolveSample(1, 3, 2, Dominant(1, 3, 5), {}),
               SolveSample(2, 4, 3, Dominant(2, 4, 6, true), {{"adjoint", true}}),
               SolveSample(3, 5, 1, Dominant(3, 5, 7), {})};
  r.Register(std::move(d));
}

void RegisterDeterminants(OpRegistry& r) {
  {
    OpDef d;
    d.name = "slogdet";
    d.num_outputs = 2;
    d.doc = "(sign, log |det A|) of square matrices A [..., n, n] (0 and -inf when singular)";
    d.infer = [](const InferContext& c) -> std::vector<TensorType> {
      const TensorType& a = CheckSquare(c, 0, "slogdet");
      return {{a.dtype, BatchShape(a)}, {a.dtype, BatchShape(a)}};
    };
    d.grad = [](const GradContext& g) -> std::vector<Value*> {
      if (!g.GO(1)) return {nullptr};  // sign is piecewise constant
      Builder& b = g.b();
      Value* inv = b.Op("matrix_inverse", {g.I(0)})[0];
      return {b.Mul(PerMatrix(b, g.GO(1)), MatrixTranspose(b, inv))};
    };
    SetKernels(d, [](auto t, const KernelArgs& a, const LinalgShape& s, const AttrMap& at,
                     bool reference) {
      using T = decltype(t);
      if (reference) cpu::SlogDetRef(In<T>(a, 0), Out<T>(a, 0), Out<T>(a, 1), s);
      else cpu::SlogDet(In<T>(a, 0), Out<T>(a, 0), Out<T>(a, 1), s);
    });
    d.samples = {MatrixSample({3, 3}, Dominant(1, 3, 8, true)),
                 MatrixSample({4, 4, 4}, Dominant(4, 4, 9, true))};
    r.Register(std::move(d));
  }
  OpDef d;
  d.name = "det";
  d.doc = "det A of square matrices A [..., n, n]";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& a = CheckSquare(c, 0, "det");
    return {{a.dtype, BatchShape(a)}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    Builder& b = g.b();  // d det = det tr(A^-1 dA): gA = g det A^-T
    Value* inv = b.Op("matrix_inverse", {g.I(0)})[0];
    return {b.Mul(PerMatrix(b, b.Mul(g.GO(0), g.O(0))), MatrixTranspose(b, inv))};
  };
  SetKernels(d, [](auto t, const KernelArgs& a, const LinalgShape& s, const AttrMap& at,
                   bool reference) {
    using T = decltype(t);
    if (reference) cpu::DetRef(In<T>(a, 0), Out<T>(a, 0), s);
    else cpu::Det(In<T>(a, 0), Out<T>(a, 0), s);
  });
  d.samples = {MatrixSample({2, 2}, {0.5, 2.0, -1.5, 3.0}),
               MatrixSample({3, 4, 4}, Dominant(3, 4, 10, true))};
  r.Register(std::move(d));
}

void RegisterCholesky(OpRegistry& r) {
  OpDef d;
  d.name = "cholesky";
  d.num_outputs = 2;
  d.attrs = {{"upper", Attr(false)}};
  d.doc = "(L, info): the Cholesky factor of sym(A) = (A + A^T) / 2 for A [..., n, n], lower "
          "(L L^T = sym(A)) or upper (U = L^T); info: first leading minor that is not positive "
          "definite, 1-based; NaN where it fails";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& a = CheckSquare(c, 0, "cholesky");
    return {a, {DType::kI32, BatchShape(a)}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    if (!g.GO(0)) return {nullptr};
    Builder& b = g.b();
    const bool upper = GetFlag(g.attrs(), "upper");
    Value* l = upper ? MatrixTranspose(b, g.O(0)) : g.O(0);
    Value* gl = upper ? MatrixTranspose(b, g.GO(0)) : g.GO(0);
    // torch's cholesky_backward: P = tril(L^T gL), S = (P + tril(P, -1)^T) / 2,
    // gA = L^-T S L^-1 (symmetric).
    Value* p = Triangle(b, b.MatMul(l, gl, true, false), false, 0);
    Value* s = b.MulScalar(b.Add(p, MatrixTranspose(b, Triangle(b, p, false, -1))), 0.5);
    Value* w = TriSolve(b, l, s, false, true, false);                           // L^-T S
    Value* ga = TriSolve(b, l, MatrixTranspose(b, w), false, true, false);      // (W L^-1)^T
    return {MatrixTranspose(b, ga)};
  };
  SetKernels(d, [](auto t, const KernelArgs& a, const LinalgShape& s, const AttrMap& at,
                   bool reference) {
    using T = decltype(t);
    const bool upper = GetFlag(at, "upper");
    if (reference) cpu::CholeskyRef(In<T>(a, 0), Out<T>(a, 0), Info(a, 1), s, upper);
    else cpu::Cholesky(In<T>(a, 0), Out<T>(a, 0), Info(a, 1), s, upper);
  });
  d.samples = {MatrixSample({3, 3}, PositiveDefinite(1, 3, 11)),
               MatrixSample({2, 4, 4}, PositiveDefinite(2, 4, 12), {{"upper", true}}),
               // not symmetric: its symmetric part is factored
               MatrixSample({2, 5, 5}, PositiveDefinite(2, 5, 13, 0.3))};
  r.Register(std::move(d));
}

void RegisterTriangularSolve(OpRegistry& r) {
  OpDef d;
  d.name = "triangular_solve";
  d.num_inputs = 2;
  d.attrs = {{"upper", Attr(false)}, {"transpose", Attr(false)}, {"unitriangular", Attr(false)}};
  d.doc = "X = op(A)^-1 B for triangular A [..., n, n] (only its upper / lower triangle read, "
          "a unit diagonal not read) and B [..., n, k]; op(A) = A^T with transpose";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    return {CheckRhs(c, "triangular_solve")};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    Builder& b = g.b();
    const TriangularSolveFlags f = FlagsOf(g.attrs());
    Value* gb = TriSolve(b, g.I(0), g.GO(0), f.upper, !f.transpose, f.unitriangular);
    // Only the triangle that is read gets a gradient (without a unit diagonal's).
    const int64_t diagonal = f.unitriangular ? (f.upper ? 1 : -1) : 0;
    return {Triangle(b, SolveGradA(b, g.O(0), gb, f.transpose), f.upper, diagonal), gb};
  };
  SetKernels(d, [](auto t, const KernelArgs& a, const LinalgShape& s, const AttrMap& at,
                   bool reference) {
    using T = decltype(t);
    const TriangularSolveFlags f = FlagsOf(at);
    if (reference) cpu::TriangularSolveRef(In<T>(a, 0), In<T>(a, 1), Out<T>(a, 0), s, f);
    else cpu::TriangularSolve(In<T>(a, 0), In<T>(a, 1), Out<T>(a, 0), s, f);
  });
  auto flags = [](bool upper, bool transpose, bool unit) {
    return AttrMap{{"upper", upper}, {"transpose", transpose}, {"unitriangular", unit}};
  };
  d.samples = {SolveSample(1, 3, 2, Dominant(1, 3, 14), flags(false, false, false)),
               SolveSample(2, 4, 3, Dominant(2, 4, 15, true), flags(true, false, false)),
               SolveSample(2, 4, 2, Dominant(2, 4, 16), flags(false, true, false)),
               SolveSample(1, 5, 2, Dominant(1, 5, 17), flags(true, true, true)),
               SolveSample(2, 3, 4, Dominant(2, 3, 18), flags(false, false, true))};
  r.Register(std::move(d));
}

// triangle: keeps x[..., i, j] where j - i <= diagonal (lower) or >= diagonal (upper).
KernelFactory TriangleKernel() {
  return [](const Node& n) -> Kernel {
    const TensorType& t = n.input(0)->type();
    const int64_t rows = t.shape[t.rank() - 2], cols = t.shape.back();
    const int64_t mats = rows * cols == 0 ? 0 : t.numel() / (rows * cols);
    const size_t size = SizeOf(t.dtype);
    const bool upper = GetFlag(n.attrs(), "upper");
    const int64_t diagonal = GetInt(n.attrs(), "diagonal");
    return [=](const KernelArgs& a) {
      const char* x = static_cast<const char*>(a.inputs[0]);
      char* y = static_cast<char*>(a.outputs[0]);
      for (int64_t m = 0; m < mats; ++m) {
        for (int64_t i = 0; i < rows; ++i) {
          for (int64_t j = 0; j < cols; ++j) {
            const int64_t at = ((m * rows + i) * cols + j) * size;
            const bool keep = upper ? j - i >= diagonal : j - i <= diagonal;
            if (keep) std::memcpy(y + at, x + at, size);
            else std::memset(y + at, 0, size);
          }
        }
      }
    };
  };
}

void RegisterTriangle(OpRegistry& r) {
  OpDef d;
  d.name = "triangle";
  d.attrs = {{"upper", Attr(false)}, {"diagonal", Attr(int64_t{0})}};
  d.doc = "tril (x where j - i <= diagonal) or triu (upper: j - i >= diagonal) of the last two "
          "dims, zeros elsewhere";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    TG_CHECK(c.in(0).rank() >= 2, kShape, "triangle: expected matrices [..., m, n], got ",
             c.in(0).ToString());
    return {c.in(0)};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    return {g.b().Op1("triangle", {g.GO(0)}, g.attrs())};
  };
  d.traits.half_native = true;
  d.kernels[DeviceKind::kCpu] = TriangleKernel();
  d.kernels[DeviceKind::kReference] = TriangleKernel();
  auto sample = [](Shape shape, bool upper, int64_t diagonal) {
    OpSample s;
    s.inputs = {TensorType{DType::kF32, std::move(shape)}};
    s.attrs = {{"upper", upper}, {"diagonal", diagonal}};
    return s;
  };
  d.samples = {sample({4, 4}, false, 0), sample({2, 3, 5}, true, 1), sample({5, 3}, false, -1),
               sample({2, 4, 4}, true, -2)};
  r.Register(std::move(d));
}

}  // namespace

void RegisterLinalgOps(OpRegistry& r) {
  RegisterMatrixInverse(r);
  RegisterLinearSolve(r);
  RegisterDeterminants(r);
  RegisterCholesky(r);
  RegisterTriangularSolve(r);
  RegisterTriangle(r);
}

}  // namespace tg
