// 128-bit vector loads and stores that compile for the device and the host,
// so the vector paths of the CUDA kernels can be walked on the CPU too.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/math.cuh"

namespace posemb {
namespace detail {

template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <typename T, int N>
POSEMB_HD Vec<T, N> load_vec(const T* ptr) {
  return *reinterpret_cast<const Vec<T, N>*>(ptr);
}

template <typename T, int N>
POSEMB_HD void store_vec(T* ptr, const Vec<T, N>& value) {
#if defined(__CUDA_ARCH__)
  // Whole-width stores: assigning the struct lets the compiler split it into
  // N narrow stores (STG.E.U16 for bf16), which the SASS report catches.
  if constexpr (sizeof(Vec<T, N>) % 16 == 0) {
    POSEMB_UNROLL
    for (int i = 0; i < static_cast<int>(sizeof(Vec<T, N>) / 16); ++i) {
      uint4 bits;
      memcpy(&bits, reinterpret_cast<const char*>(&value) + 16 * i, sizeof(bits));
      __stwb(reinterpret_cast<uint4*>(ptr) + i, bits);
    }
    return;
  } else if constexpr (sizeof(Vec<T, N>) == 8) {
    uint2 bits;
    memcpy(&bits, &value, sizeof(bits));
    __stwb(reinterpret_cast<uint2*>(ptr), bits);
    return;
  }
#endif
  *reinterpret_cast<Vec<T, N>*>(ptr) = value;
}

/// True when ptr can be read with loads of `bytes` bytes.
inline bool is_aligned(const void* ptr, int64_t bytes) {
  return reinterpret_cast<std::uintptr_t>(ptr) % bytes == 0;
}

}  // namespace detail
}  // namespace posemb
