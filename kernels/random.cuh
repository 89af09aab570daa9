// Counter-based random numbers (Philox-4x32-10): the value for element i
// depends only on (seed, i), so CPU and GPU draw the same dropout mask and a
// backward pass regenerates it instead of storing it.
#pragma once

#include <cstdint>

#include "kernels/math.cuh"

namespace posemb::detail {

/// The four 32-bit words of Philox-4x32-10 for (counter, key).
POSEMB_HD void philox(uint64_t counter, uint64_t key, uint32_t out[4]) {
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
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/// A uniform number in [0, 1) (24 bits) from one Philox word.
POSEMB_HD float uniform_from_word(uint32_t word) {
  return static_cast<float>(word >> 8) * (1.0f / 16777216.0f);
}

/// The uniform number of element `index` under `seed`: word index % 4 of
/// Philox at counter index / 4 (one Philox call serves four elements).
POSEMB_HD float uniform(uint64_t seed, uint64_t index) {
  uint32_t words[4];
  philox(index >> 2, seed, words);
  // Chosen by selects: words[index & 3] would put the array in local memory.
  const uint32_t low = (index & 1) ? words[1] : words[0], high = (index & 1) ? words[3] : words[2];
  return uniform_from_word((index & 2) ? high : low);
}

}  // namespace posemb::detail
