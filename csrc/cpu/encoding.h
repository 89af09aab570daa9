// The encoding row a vector unit computes inside a fused sweep (cpu/avx2.h,
// cpu/avx512.h).
#pragma once

#include <cstdint>

namespace posemb::detail {

/// The encoding of one position, sin and cos of position times frequency i
/// for i < half (given as turns), to be written to enc: pairs (sin, cos) when
/// interleaved, else all sines, then all cosines.
struct Encoding {
  int64_t position;
  const uint64_t* F;
  int64_t half;
  bool interleaved;
  float* enc;
};

}  // namespace posemb::detail
