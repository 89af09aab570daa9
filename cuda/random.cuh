// Counter-based random numbers (Philox-4x32-10): the value for element i
// depends only on (seed, i), so CPU and GPU draw the same dropout mask and a
// backward pass regenerates it instead of storing it.
#pragma once

#include <cstdint>

#include "math.cuh"

namespace posemb::detail {

POSEMB_HD uint32_t philox_first_word(uint64_t counter, uint64_t key) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  POSEMB_UNROLL
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c0;
}

/// A uniform number in [0, 1) for element `index` under `seed` (24 bits).
POSEMB_HD float uniform(uint64_t seed, uint64_t index) {
  return static_cast<float>(philox_first_word(index, seed) >> 8) * (1.0f / 16777216.0f);
}

}  // namespace posemb::detail
