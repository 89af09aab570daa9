// CPU kernels of bert_embeddings and its backward, rows split across threads.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "bert_op.h"
#include "cpu/rows.h"
#include "cpu/table_grad_cpu.h"

namespace posemb::detail {
namespace {

int64_t row_grain(int64_t dim) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, dim)); }

// x = word + position + type rows of token `row`, in the accumulation type.
template <typename T>
void gather_row(const BertParams& p, int64_t row, acc_t<T>* x, acc_t<T>* tmp) {
  const BertRow r = bert_row(p, row);
  load_row(static_cast<const T*>(p.word) + r.word * p.word_stride, x, p.dim);
  load_row(static_cast<const T*>(p.position) + r.position * p.position_stride, tmp, p.dim);
  for (int64_t d = 0; d < p.dim; ++d) x[d] += tmp[d];
  load_row(static_cast<const T*>(p.type) + r.type * p.type_stride, tmp, p.dim);
  for (int64_t d = 0; d < p.dim; ++d) x[d] += tmp[d];
}

// f[d] = the dropout factor of (row, d), as dropout_factor computes it, one
// Philox call per four consecutive elements (four calls at a time with AVX2).
template <typename A>
void dropout_row(const BertParams& p, int64_t row, A* f) {
  const A keep = dropout_keep<A>(p);
#if defined(POSEMB_CPU_AVX2)
  if constexpr (std::is_same_v<A, float>) {
    if (cpu_avx2()) {
      return avx2::dropout_factors(p.seed, static_cast<uint64_t>(row * p.dim), p.dim, p.dropout_p, keep, f);
    }
  }
#endif
  uint64_t cached = ~uint64_t(0);
  uint32_t words[4];
  for (int64_t d = 0; d < p.dim; ++d) {
    const uint64_t index = static_cast<uint64_t>(row * p.dim + d);
    if ((index >> 2) != cached) {
      cached = index >> 2;
      philox(cached, p.seed, words);
    }
    f[d] = uniform_from_word(words[index & 3]) >= p.dropout_p ? keep : A(0);
  }
}

// The AVX2 row (fp32 statistics): the portable loop's operations in its
// order, 8 wide, reading the table rows in place.
template <typename T>
bool bert_avx2(const BertParams& p) {
  return !std::is_same_v<T, double> && cpu_avx2();
}

template <typename T>
void norm_row_avx2(const BertParams& p, int64_t row, acc_t<T>* x, const acc_t<T>* gamma, const acc_t<T>* beta,
                   const acc_t<T>* f, bool finite_affine) {
#if defined(POSEMB_CPU_AVX2)
  if constexpr (!std::is_same_v<T, double>) {
    const BertRow r = bert_row(p, row);
    avx2::bert_norm_row(static_cast<const T*>(p.word) + r.word * p.word_stride,
                        static_cast<const T*>(p.position) + r.position * p.position_stride,
                        static_cast<const T*>(p.type) + r.type * p.type_stride, gamma, beta, f, finite_affine,
                        p.eps_f32, p.dim, x, static_cast<T*>(p.out) + row * p.dim,
                        static_cast<float*>(p.mean) + row, static_cast<float*>(p.rstd) + row);
  }
#endif
}

// The CPU runs each row whole: the row in a buffer, plain loops the compiler
// vectorises, rows converted 8 wide (cpu/rows.h); or, with AVX2, one call
// per row that does the same operations in the same order (bitwise equal,
// tests/python/test_bert.py). Same formulas as the shared bodies in
// kernels/bert.cuh.
template <typename T>
void forward_typed(const BertParams& p) {
  using A = acc_t<T>;
  const int64_t D = p.dim;
  std::vector<A> gamma(D), beta(D);
  load_row(static_cast<const T*>(p.gamma), gamma.data(), D);
  load_row(static_cast<const T*>(p.beta), beta.data(), D);
  const bool avx2 = bert_avx2<T>(p);
  bool finite_affine = true;
  for (int64_t d = 0; d < D; ++d) finite_affine = finite_affine && std::isfinite(gamma[d]) && std::isfinite(beta[d]);
  at::parallel_for(0, p.batch * p.seq, row_grain(D), [&](int64_t begin, int64_t end) {
    std::vector<A> x(D), y(D), f(p.dropout ? D : 0);
    for (int64_t row = begin; row < end; ++row) {
      if (avx2) {
        if (p.dropout) dropout_row(p, row, f.data());
        norm_row_avx2<T>(p, row, x.data(), gamma.data(), beta.data(), p.dropout ? f.data() : nullptr, finite_affine);
        continue;
      }
      gather_row<T>(p, row, x.data(), y.data());
      const A* v = x.data();
      const A mean = row_sum<A, kBertParts>(D, [v](int64_t d) { return v[d]; }) / A(D);
      const A sq = row_sum<A, kBertParts>(D, [v, mean](int64_t d) { return (v[d] - mean) * (v[d] - mean); });
      const A rstd = A(1) / std::sqrt(sq / A(D) + detail::bert_eps<A>(p));
      for (int64_t d = 0; d < D; ++d) y[d] = (x[d] - mean) * rstd * gamma[d] + beta[d];
      if (p.dropout) {
        dropout_row(p, row, f.data());
        for (int64_t d = 0; d < D; ++d) y[d] *= f[d];
      }
      store_row(y.data(), static_cast<T*>(p.out) + row * D, D);
      static_cast<A*>(p.mean)[row] = mean;
      static_cast<A*>(p.rstd)[row] = rstd;
    }
  });
}

// grad_x row by row; the gamma/beta sums per fixed chunk of rows (added in
// row order), then over the chunks in order: deterministic.
template <typename T>
void backward_typed(const BertParams& p) {
  using A = acc_t<T>;
  const int64_t D = p.dim, rows = p.batch * p.seq;
  const int64_t per_chunk = (rows + p.row_chunks - 1) / p.row_chunks;
  std::vector<A> gamma(D);
  load_row(static_cast<const T*>(p.gamma), gamma.data(), D);
  A* partials = static_cast<A*>(p.norm_partials);
  at::parallel_for(0, p.row_chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> x(D), g(D), f(p.dropout ? D : 0);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      A* sum_gx = partials + chunk * D;
      A* sum_g = partials + (p.row_chunks + chunk) * D;
      std::fill(sum_gx, sum_gx + D, A(0));
      std::fill(sum_g, sum_g + D, A(0));
      for (int64_t row = chunk * per_chunk; row < std::min(rows, (chunk + 1) * per_chunk); ++row) {
        gather_row<T>(p, row, x.data(), g.data());
        const A mean = static_cast<const A*>(p.mean)[row], rstd = static_cast<const A*>(p.rstd)[row];
        load_row(static_cast<const T*>(p.grad_out) + row * D, g.data(), D);
        if (p.dropout) {
          dropout_row(p, row, f.data());
          for (int64_t d = 0; d < D; ++d) g[d] *= f[d];
        }
        for (int64_t d = 0; d < D; ++d) {
          x[d] = (x[d] - mean) * rstd;  // xhat
          sum_gx[d] += g[d] * x[d];
          sum_g[d] += g[d];
        }
        const A *gv = g.data(), *xh = x.data(), *ga = gamma.data();
        const A s1 = row_sum<A>(D, [gv, ga](int64_t d) { return gv[d] * ga[d]; });
        const A s2 = row_sum<A>(D, [gv, ga, xh](int64_t d) { return gv[d] * ga[d] * xh[d]; });
        const A m1 = s1 / A(D), m2 = s2 / A(D);
        A* gx = static_cast<A*>(p.grad_x) + row * D;
        for (int64_t d = 0; d < D; ++d) gx[d] = rstd * (g[d] * gamma[d] - m1 - x[d] * m2);
      }
    }
  });
  for (int64_t d = 0; d < D; ++d) bert_norm_grad_final<T>(p, d);
}

void run_forward(const BertParams& p, const at::Tensor& table) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, table.scalar_type(),
                                  "bert_embeddings_cpu", [&] { forward_typed<scalar_t>(p); });
}

void run_backward(const BertParams& p, const at::Tensor& table) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, table.scalar_type(),
                                  "bert_embeddings_backward_cpu", [&] { backward_typed<scalar_t>(p); });
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, CPU, m) {
  m.impl("bert_embeddings", &bert_embeddings_backend<run_forward>);
  m.impl("bert_embeddings_backward", &bert_embeddings_backward_backend<run_backward, run_table_grad_cpu>);
}

}  // namespace posemb::detail
