#include "turns.h"

#include <ATen/ops/empty.h>

#include <cmath>
#include <map>
#include <mutex>
#include <tuple>

#include "kernels/turns.cuh"

namespace posemb::detail {
namespace {

at::Tensor host_turns(int64_t dim, SinusoidalFreqs freqs, double base) {
  const int64_t half = dim / 2;
  at::Tensor table = at::empty({half}, at::TensorOptions().dtype(at::kLong));
  // w_i = exp(-i * step) in long double: the frequencies are never rounded to
  // a double (1 ulp of w alone is 2e-7 rad at position 2^31).
  const long double log_base = std::log(static_cast<long double>(base));
  const long double step = freqs == SinusoidalFreqs::Vaswani ? 2.0L * log_base / static_cast<long double>(dim)
                                                             : log_base / static_cast<long double>(half - 1);
  auto* out = table.data_ptr<int64_t>();
  for (int64_t i = 0; i < half; ++i) {
    out[i] = static_cast<int64_t>(turns::from_long_double(std::exp(-static_cast<long double>(i) * step)));
  }
  return table;
}

}  // namespace

at::Tensor sinusoidal_turns(int64_t dim, SinusoidalFreqs freqs, double base, const at::Device& device) {
  using Key = std::tuple<int64_t, int, double, int, int>;
  static std::mutex mutex;
  static std::map<Key, at::Tensor> cache;  // a handful of (dim, base) per model
  const Key key{dim, static_cast<int>(freqs), base, static_cast<int>(device.type()), device.index()};
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  at::Tensor table = host_turns(dim, freqs, base);
  if (!device.is_cpu()) table = table.to(device);
  // Never evicted (a captured graph may hold one); a caller sweeping bases
  // past the bound gets a fresh table per call instead of growing the cache.
  if (cache.size() < 1024) cache.emplace(key, table);
  return table;
}

}  // namespace posemb::detail
