// CTC beam search against the definition: with a beam wide enough to keep every sequence,
// its scores are the exact sequence probabilities, log sum over all alignments (every one of
// the C^T frame labelings, collapsed: repeats merged, blanks removed), and its top paths are
// the most probable sequences. Also: narrow beams agree between the fast and reference
// kernels, short inputs pad with -inf / length 0, and bad lengths raise.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "kernels/cpu/ctc_decoder_kernels.h"
#include "support/error.h"

namespace tg::cpu {
namespace {

struct Problem {
  int64_t t, b, c;
  std::vector<double> lp;  // [t, b, c], log_softmax of normal logits
  std::vector<int64_t> lengths;
};

Problem MakeProblem(int64_t t, int64_t b, int64_t c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.5);
  Problem p{t, b, c, std::vector<double>(t * b * c), {}};
  for (int64_t row = 0; row < t * b; ++row) {
    double* x = &p.lp[row * c];
    double total = 0;
    for (int64_t k = 0; k < c; ++k) total += std::exp(x[k] = normal(rng));
    for (int64_t k = 0; k < c; ++k) x[k] -= std::log(total);
  }
  for (int64_t i = 0; i < b; ++i) p.lengths.push_back(t - i % 3);
  return p;
}

// Sequence -> probability, summed over every alignment of sample i's frames.
std::map<std::vector<int32_t>, double> Exhaustive(const Problem& p, int64_t i, int64_t blank) {
  std::map<std::vector<int32_t>, double> prob;
  const int64_t frames = p.lengths[i];
  std::vector<int64_t> labels(frames, 0);
  while (true) {
    double logp = 0;
    std::vector<int32_t> seq;
    for (int64_t f = 0; f < frames; ++f) {
      logp += p.lp[(f * p.b + i) * p.c + labels[f]];
      bool repeat = f > 0 && labels[f] == labels[f - 1];
      if (labels[f] != blank && !repeat) seq.push_back(static_cast<int32_t>(labels[f]));
    }
    prob[seq] += std::exp(logp);
    int64_t f = 0;
    while (f < frames && ++labels[f] == p.c) labels[f++] = 0;
    if (f == frames) break;
  }
  return prob;
}

struct Decoded {
  std::vector<double> scores;
  std::vector<int32_t> lengths, paths;
};

Decoded Decode(const Problem& p, const CtcDecodeParams& params, bool reference) {
  Decoded d{std::vector<double>(p.b * params.top_paths),
            std::vector<int32_t>(p.b * params.top_paths),
            std::vector<int32_t>(p.b * params.top_paths * p.t)};
  IntView lengths{p.lengths.data(), true};
  if (reference) {
    CtcBeamSearchRef(p.lp.data(), lengths, d.scores.data(), d.lengths.data(), d.paths.data(),
                     params);
  } else {
    CtcBeamSearch(p.lp.data(), lengths, d.scores.data(), d.lengths.data(), d.paths.data(),
                  params);
  }
  return d;
}

TEST(CtcBeamSearch, WideBeamGivesExactSequenceProbabilities) {
  for (int64_t blank : {0, 3}) {
    Problem p = MakeProblem(5, 3, 4, 11 + static_cast<uint32_t>(blank));
    CtcDecodeParams params{p.t, p.b, p.c, blank, /*beam_width=*/4096, /*top_paths=*/6};
    Decoded d = Decode(p, params, false);
    for (int64_t i = 0; i < p.b; ++i) {
      std::vector<std::pair<double, std::vector<int32_t>>> want;
      for (const auto& [seq, prob] : Exhaustive(p, i, blank)) want.emplace_back(prob, seq);
      std::sort(want.begin(), want.end(), [](const auto& a, const auto& b) {
        return a.first > b.first;
      });
      for (int64_t k = 0; k < params.top_paths; ++k) {
        const int64_t row = i * params.top_paths + k;
        EXPECT_NEAR(d.scores[row], std::log(want[k].first), 1e-12) << "sample " << i << " k " << k;
        std::vector<int32_t> got(d.paths.begin() + row * p.t,
                                 d.paths.begin() + row * p.t + d.lengths[row]);
        EXPECT_EQ(got, want[k].second) << "sample " << i << " k " << k;
        for (int64_t f = d.lengths[row]; f < p.t; ++f) EXPECT_EQ(d.paths[row * p.t + f], 0);
      }
    }
  }
}

TEST(CtcBeamSearch, NarrowBeamsMatchTheReferenceKernel) {
  Problem p = MakeProblem(40, 5, 6, 5);
  for (int64_t beam : {1, 2, 7, 30}) {
    CtcDecodeParams params{p.t, p.b, p.c, 2, beam, std::min<int64_t>(beam, 3)};
    Decoded fast = Decode(p, params, false), ref = Decode(p, params, true);
    EXPECT_EQ(fast.scores, ref.scores) << "beam " << beam;
    EXPECT_EQ(fast.lengths, ref.lengths) << "beam " << beam;
    EXPECT_EQ(fast.paths, ref.paths) << "beam " << beam;
    for (int64_t i = 0; i < p.b; ++i) {  // best first
      for (int64_t k = 1; k < params.top_paths; ++k) {
        EXPECT_GE(fast.scores[i * params.top_paths + k - 1], fast.scores[i * params.top_paths + k]);
      }
    }
  }
}

TEST(CtcBeamSearch, FewerSequencesThanPathsPadWithMinusInfinity) {
  Problem p = MakeProblem(3, 2, 3, 9);
  p.lengths = {0, 1};  // the empty sequence only; then 3 sequences (empty, 1, 2)
  CtcDecodeParams params{p.t, p.b, p.c, 0, 8, 4};
  Decoded d = Decode(p, params, false);
  EXPECT_EQ(d.scores[0], 0.0);
  EXPECT_EQ(d.lengths[0], 0);
  for (int64_t k = 1; k < 4; ++k) EXPECT_EQ(d.scores[k], -INFINITY);
  EXPECT_EQ(d.scores[4 + 3], -INFINITY);
  EXPECT_EQ(d.lengths[4 + 3], 0);
  EXPECT_GT(d.scores[4 + 2], -INFINITY);
}

TEST(CtcBeamSearch, LengthsOutOfRangeRaise) {
  Problem p = MakeProblem(3, 2, 3, 9);
  p.lengths = {3, 4};
  CtcDecodeParams params{p.t, p.b, p.c, 0, 4, 1};
  EXPECT_THROW(Decode(p, params, false), Error);
  EXPECT_THROW(Decode(p, params, true), Error);
}

}  // namespace
}  // namespace tg::cpu
