// The f32 norm kernels against the same formulas in double on the same float inputs.
// Layer norm (float statistics in blocked sums; dweight / dbias accumulated per row chunk):
// rows whose mean is far from zero, lengths with a tail (777 = 3 blocks of 256 + 9), a row
// count that does not divide by the row blocks, two threads; dweight / dbias have the same
// bits on every call and every thread count. Batch norm (double statistics, channel chunks streamed in memory order,
// float normalization with the mean in two floats): channels that do not divide by the
// threads, a mean far from zero, a constant channel.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/norm_kernels.h"
#include "kernels/cpu/parallel.h"

namespace tg::cpu {
namespace {

struct Rows {
  int64_t rows, d;
  std::vector<float> x, dy, w, b;
};

Rows MakeRows(int64_t rows, int64_t d, float mean, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Rows r{rows, d, {}, {}, {}, {}};
  r.x.resize(rows * d);
  r.dy.resize(rows * d);
  for (float& v : r.x) v = mean + normal(rng);
  for (float& v : r.dy) v = normal(rng);
  for (int64_t i = 0; i < d; ++i) {
    r.w.push_back(1.0f + 0.1f * normal(rng));
    r.b.push_back(0.1f * normal(rng));
  }
  return r;
}

// Row r's mean and 1/sqrt(var + eps), in double from the float inputs.
void DoubleMoments(const Rows& r, int64_t row, double eps, double* mean, double* rstd) {
  double m = 0, v = 0;
  for (int64_t i = 0; i < r.d; ++i) m += r.x[row * r.d + i];
  m /= r.d;
  for (int64_t i = 0; i < r.d; ++i) v += (r.x[row * r.d + i] - m) * (r.x[row * r.d + i] - m);
  *mean = m;
  *rstd = 1.0 / std::sqrt(v / r.d + eps);
}

TEST(LayerNormKernel, ForwardKeepsFloatPrecisionFarFromZero) {
  SetNumThreads(2);
  for (float mean : {0.0f, 3.0f, 1e4f}) {
    const Rows r = MakeRows(37, 777, mean, 5);
    LayerNormParams p;
    p.rows = r.rows, p.d = r.d;
    std::vector<float> y(r.x.size()), m(r.rows), rs(r.rows);
    LayerNormForward<float>(p, r.x.data(), r.w.data(), r.b.data(), y.data(), m.data(), rs.data(),
                            /*parallel=*/true);
    double worst = 0;
    for (int64_t row = 0; row < r.rows; ++row) {
      double dm = 0, drs = 0;
      DoubleMoments(r, row, p.eps, &dm, &drs);
      EXPECT_NEAR(rs[row], drs, 1e-6 * drs) << "mean " << mean;
      for (int64_t i = 0; i < r.d; ++i) {
        const double want = (r.x[row * r.d + i] - dm) * drs * r.w[i] + r.b[i];
        worst = std::max(worst, std::abs(y[row * r.d + i] - want));
      }
    }
    // y ~ N(0, 1): a few float ulps. A mean rounded to float before x - mean would be off by
    // up to 5e-4 at mean 1e4.
    EXPECT_LT(worst, 2e-6) << "mean " << mean;
  }
}

TEST(LayerNormKernel, ConstantRowGivesExactlyTheBias) {
  LayerNormParams p;
  p.rows = 2, p.d = 300;
  std::vector<float> x(600, 0.1f), w(300, 2.0f), b(300), y(600), m(2), rs(2);
  for (int i = 0; i < 300; ++i) b[i] = 0.01f * i;
  LayerNormForward<float>(p, x.data(), w.data(), b.data(), y.data(), m.data(), rs.data(), false);
  for (int i = 0; i < 600; ++i) EXPECT_EQ(y[i], b[i % 300]) << i;
}

TEST(LayerNormKernel, BackwardMatchesDoubleAndIsDeterministicOverThreadCounts) {
  SetNumThreads(2);
  const Rows r = MakeRows(37, 777, 3.0f, 9);
  LayerNormParams p;
  p.rows = r.rows, p.d = r.d;
  std::vector<float> y(r.x.size()), m(r.rows), rs(r.rows);
  LayerNormForward<float>(p, r.x.data(), r.w.data(), r.b.data(), y.data(), m.data(), rs.data(),
                          true);
  std::vector<float> dx(r.x.size()), dw(r.d), db(r.d), dx2(r.x.size()), dw2(r.d), db2(r.d);
  LayerNormBackward<float>(p, r.dy.data(), r.x.data(), r.w.data(), m.data(), rs.data(),
                           dx.data(), dw.data(), db.data(), true);
  LayerNormBackward<float>(p, r.dy.data(), r.x.data(), r.w.data(), m.data(), rs.data(),
                           dx2.data(), dw2.data(), db2.data(), true);
  EXPECT_EQ(dx, dx2);
  EXPECT_EQ(dw, dw2);
  EXPECT_EQ(db, db2);
  // The same bits on one thread and unparallelized (a pipeline stage runs with fewer threads
  // than the whole program and must give the same numbers).
  SetNumThreads(1);
  LayerNormBackward<float>(p, r.dy.data(), r.x.data(), r.w.data(), m.data(), rs.data(),
                           dx2.data(), dw2.data(), db2.data(), true);
  EXPECT_EQ(dw, dw2);
  EXPECT_EQ(db, db2);
  LayerNormBackward<float>(p, r.dy.data(), r.x.data(), r.w.data(), m.data(), rs.data(),
                           dx2.data(), dw2.data(), db2.data(), false);
  EXPECT_EQ(dw, dw2);
  EXPECT_EQ(db, db2);
  SetNumThreads(2);

  std::vector<double> want_dw(r.d, 0.0), want_db(r.d, 0.0);
  double worst_dx = 0;
  for (int64_t row = 0; row < r.rows; ++row) {
    const double mean = m[row], rstd = rs[row];  // the saved statistics, as the kernel uses
    const float* xr = r.x.data() + row * r.d;
    const float* dyr = r.dy.data() + row * r.d;
    double sum_g = 0, sum_gx = 0;
    for (int64_t i = 0; i < r.d; ++i) {
      const double xhat = (xr[i] - mean) * rstd, g = static_cast<double>(dyr[i]) * r.w[i];
      sum_g += g;
      sum_gx += g * xhat;
      want_dw[i] += dyr[i] * xhat;
      want_db[i] += dyr[i];
    }
    for (int64_t i = 0; i < r.d; ++i) {
      const double xhat = (xr[i] - mean) * rstd, g = static_cast<double>(dyr[i]) * r.w[i];
      const double want = rstd * (g - sum_g / r.d - xhat * sum_gx / r.d);
      worst_dx = std::max(worst_dx, std::abs(dx[row * r.d + i] - want));
    }
  }
  EXPECT_LT(worst_dx, 1e-5);  // dx ~ N(0, 1)
  for (int64_t i = 0; i < r.d; ++i) {
    EXPECT_NEAR(dw[i], want_dw[i], 1e-5 * (1 + std::abs(want_dw[i]))) << i;
    EXPECT_NEAR(db[i], want_db[i], 1e-5 * (1 + std::abs(want_db[i]))) << i;
  }
}

// Batch norm train and backward (recomputed statistics) against double, channels far from
// zero, 5 channels over 2 threads (chunks of 2 and 3), runs of 37.
TEST(BatchNormKernel, TrainAndBackwardMatchDouble) {
  SetNumThreads(2);
  BatchNormParams p;
  p.n = 3, p.c = 5, p.s = 37;
  p.recompute_stats = true;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  const int64_t total = p.n * p.c * p.s;
  std::vector<float> x(total), dy(total), w(p.c), b(p.c);
  for (int64_t i = 0; i < total; ++i) x[i] = 1e3f * static_cast<float>((i / p.s) % p.c) + normal(rng);
  for (float& v : dy) v = normal(rng);
  for (int64_t c = 0; c < p.c; ++c) w[c] = 1.0f + 0.1f * c, b[c] = 0.1f * c;
  std::vector<float> y(total), mean(p.c), invstd(p.c), var(p.c);
  BatchNormTrain<float>(p, x.data(), w.data(), b.data(), y.data(), mean.data(), invstd.data(),
                        var.data(), true);
  std::vector<float> dx(total), dw(p.c), db(p.c);
  BatchNormBackward<float>(p, dy.data(), x.data(), w.data(), mean.data(), invstd.data(),
                           dx.data(), dw.data(), db.data(), true);
  const double count = static_cast<double>(p.n * p.s);
  for (int64_t c = 0; c < p.c; ++c) {
    auto at = [&](int64_t n, int64_t i) { return (n * p.c + c) * p.s + i; };
    double m = 0, v = 0, sum_dy = 0, sum_dy_xhat = 0;
    for (int64_t n = 0; n < p.n; ++n) {
      for (int64_t i = 0; i < p.s; ++i) m += x[at(n, i)];
    }
    m /= count;
    for (int64_t n = 0; n < p.n; ++n) {
      for (int64_t i = 0; i < p.s; ++i) v += (x[at(n, i)] - m) * (x[at(n, i)] - m);
    }
    const double is = 1.0 / std::sqrt(v / count + p.eps);
    for (int64_t n = 0; n < p.n; ++n) {
      for (int64_t i = 0; i < p.s; ++i) {
        sum_dy += dy[at(n, i)];
        sum_dy_xhat += dy[at(n, i)] * (x[at(n, i)] - m) * is;
      }
    }
    EXPECT_NEAR(mean[c], m, 1e-7 * (1 + std::abs(m)));
    EXPECT_NEAR(db[c], sum_dy, 1e-5 * (1 + std::abs(sum_dy)));
    EXPECT_NEAR(dw[c], sum_dy_xhat, 1e-5 * (1 + std::abs(sum_dy_xhat)));
    for (int64_t n = 0; n < p.n; ++n) {
      for (int64_t i = 0; i < p.s; ++i) {
        const double xhat = (x[at(n, i)] - m) * is;
        // y ~ N(0, 1) even at mean 4e3: the mean in two floats keeps x - mean exact.
        EXPECT_NEAR(y[at(n, i)], xhat * w[c] + b[c], 2e-6) << c;
        const double want = w[c] * is * (dy[at(n, i)] - sum_dy / count - xhat * sum_dy_xhat / count);
        EXPECT_NEAR(dx[at(n, i)], want, 1e-5) << c;
      }
    }
  }
}

TEST(BatchNormKernel, ConstantChannelGivesExactlyTheBias) {
  BatchNormParams p;
  p.n = 2, p.c = 3, p.s = 20;
  std::vector<float> x(120, 0.3f), w(3, 2.0f), b = {0.5f, -1.0f, 0.25f}, y(120), m(3), is(3),
      v(3);
  BatchNormTrain<float>(p, x.data(), w.data(), b.data(), y.data(), m.data(), is.data(), v.data(),
                        false);
  for (int64_t i = 0; i < 120; ++i) EXPECT_EQ(y[i], b[(i / 20) % 3]) << i;
}

}  // namespace
}  // namespace tg::cpu
