// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"): a
// counter-based generator. Random ops key it by (session seed, node rng_key) and use the
// counter (step, element group), so every element's draw depends only on its index: results
// are reproducible and independent of the thread count.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

namespace tg::cpu {

class Philox4x32 {
 public:
  using Block = std::array<uint32_t, 4>;

  Philox4x32(uint64_t seed, uint64_t stream) {
    uint64_t k = Mix(seed ^ Mix(stream + 0x9e3779b97f4a7c15ull));
    key_ = {static_cast<uint32_t>(k), static_cast<uint32_t>(k >> 32)};
  }

  // Four random words for counter (hi, lo).
  Block operator()(uint64_t hi, uint64_t lo) const {
    Block c = {static_cast<uint32_t>(lo), static_cast<uint32_t>(lo >> 32),
               static_cast<uint32_t>(hi), static_cast<uint32_t>(hi >> 32)};
    std::array<uint32_t, 2> k = key_;
    for (int round = 0; round < 10; ++round) {
      c = Round(c, k);
      k[0] += 0x9E3779B9u;
      k[1] += 0xBB67AE85u;
    }
    return c;
  }

 private:
  static uint64_t Mix(uint64_t z) {  // splitmix64 finalizer
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  static Block Round(const Block& c, const std::array<uint32_t, 2>& k) {
    uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c[0];
    uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c[2];
    return {static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<uint32_t>(p1),
            static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<uint32_t>(p0)};
  }
  std::array<uint32_t, 2> key_;
};

// A uniform float in [0, 1) from 24 random bits.
inline float UniformFloat(uint32_t u) {
  return static_cast<float>(u >> 8) * 5.9604644775390625e-8f;
}
// A uniform double in [0, 1) from 53 random bits.
inline double UniformDouble(uint32_t a, uint32_t b) {
  uint64_t bits = (static_cast<uint64_t>(a) << 21) ^ (b >> 11);
  return static_cast<double>(bits & ((1ull << 53) - 1)) * 1.1102230246251565e-16;
}
// A uniform double in (0, 1] (for logarithms).
inline double UniformOpenZero(uint32_t u) {
  return (static_cast<double>(u) + 1.0) * 2.3283064365386963e-10;
}

// Two standard normals from two uniforms (Box-Muller); u1 in (0, 1].
inline void BoxMuller(double u1, double u2, double* z0, double* z1) {
  double r = std::sqrt(-2.0 * std::log(u1));
  double t = 6.283185307179586 * u2;
  *z0 = r * std::cos(t);
  *z1 = r * std::sin(t);
}

}  // namespace tg::cpu
