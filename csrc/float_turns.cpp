#include "float_turns.h"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "kernels/float_turns.cuh"

namespace posemb::detail {
namespace {

at::Tensor host_table(int64_t n, double base, double denom, double scale) {
  at::Tensor table = at::empty({n, 4}, at::TensorOptions().dtype(at::kLong));
  auto* out = reinterpret_cast<FloatFreq*>(table.data_ptr<int64_t>());
  // In long double throughout: w is never rounded to a double before its
  // turns are taken (scale folds into the frequency, so the angle is
  // scale · p · w with one rounding, not three as in eager fp32).
  // log in long double too: a double's 1e-16 in log(base) alone is 1e-6 rad at an angle of 3e10.
  const long double step = std::log(static_cast<long double>(base)) / static_cast<long double>(denom);
  const long double inv_two_pi = 0.159154943091895335768883763372514362L;
  for (int64_t i = 0; i < n; ++i) {
    const long double w = static_cast<long double>(scale) * std::exp(-static_cast<long double>(i) * step);
    const long double W = w * inv_two_pi;
    // Past 2^60 turns per unit position the fp32 halves and F mean nothing.
    TORCH_CHECK(std::fabs(W) < 1e18L, "posemb: frequency ", static_cast<double>(w),
                " rad per unit is too large (scale, max_period or base out of range)");
    FloatFreq f;
    f.F = turns::from_long_double(w);
    f.hi = static_cast<float>(W);
    f.lo = static_cast<float>(W - f.hi);
    f.dhi = static_cast<double>(W);
    f.dlo = static_cast<double>(W - f.dhi);
    std::memcpy(&out[i], &f, sizeof(f));
  }
  return table;
}

}  // namespace

at::Tensor float_freq_table(int64_t n, double base, double denom, double scale, const at::Device& device) {
  using Key = std::tuple<int64_t, double, double, double, int, int>;
  static std::mutex mutex;
  static std::map<Key, at::Tensor> cache;
  const Key key{n, base, denom, scale, static_cast<int>(device.type()), device.index()};
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  at::Tensor table = host_table(n, base, denom, scale);
  if (!device.is_cpu()) table = table.to(device);
  // Never evicted (a captured CUDA graph may read one); bounded.
  if (cache.size() < 1024) cache.emplace(key, table);
  return table;
}

}  // namespace posemb::detail
