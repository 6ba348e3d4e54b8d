// y = x @ w^T for a float32 weight w (V, D) with contiguous rows and a few input rows x (N, D):
// the shape of a decoding step (one new position per sequence). MKL runs it as a general matrix
// product at about half the speed it reads w from memory; this kernel reads each row of w once,
// two rows at a time, prefetching ahead, and keeps up to 8 inputs' partial dot products in
// AVX-512 registers. models/kernels.py builds it on first use and falls back to torch without it.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#ifndef __AVX512F__
#error "few_rows.cpp needs AVX-512 (models/kernels.py builds it only where the CPU has it)"
#endif

namespace {

constexpr int64_t kPrefetchRows = PREFETCH_ROWS;  // how far ahead the next rows are fetched
constexpr int64_t kGrain = 256;                   // rows per parallel task, at least

// out[c, r] = dot(w[r, :], x[c0 + c, :]) for r in [r0, r1), c in [0, NC)
template <int NC>
void rows(const float* w, int64_t ws, const float* x, int64_t xs, float* out, int64_t os,
          int64_t r0, int64_t r1, int64_t D, int64_t c0) {
  const int64_t full = D / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (D - full)) - 1u);
  const float* xc = x + c0 * xs;
  float* oc = out + c0 * os;
  int64_t r = r0;
  for (; r + 1 < r1; r += 2) {
    __m512 a0[NC], a1[NC];
    for (int c = 0; c < NC; ++c) { a0[c] = _mm512_setzero_ps(); a1[c] = _mm512_setzero_ps(); }
    const float* w0 = w + r * ws;
    const float* w1 = w0 + ws;
    for (int64_t k = 0; k < full; k += 16) {
      const __m512 v0 = _mm512_loadu_ps(w0 + k), v1 = _mm512_loadu_ps(w1 + k);
      _mm_prefetch(reinterpret_cast<const char*>(w0 + kPrefetchRows * ws + k), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(w1 + kPrefetchRows * ws + k), _MM_HINT_T0);
      for (int c = 0; c < NC; ++c) {
        const __m512 u = _mm512_loadu_ps(xc + c * xs + k);
        a0[c] = _mm512_fmadd_ps(v0, u, a0[c]);
        a1[c] = _mm512_fmadd_ps(v1, u, a1[c]);
      }
    }
    if (tail) {
      const __m512 v0 = _mm512_maskz_loadu_ps(tail, w0 + full), v1 = _mm512_maskz_loadu_ps(tail, w1 + full);
      for (int c = 0; c < NC; ++c) {
        const __m512 u = _mm512_maskz_loadu_ps(tail, xc + c * xs + full);
        a0[c] = _mm512_fmadd_ps(v0, u, a0[c]);
        a1[c] = _mm512_fmadd_ps(v1, u, a1[c]);
      }
    }
    for (int c = 0; c < NC; ++c) {
      oc[c * os + r] = _mm512_reduce_add_ps(a0[c]);
      oc[c * os + r + 1] = _mm512_reduce_add_ps(a1[c]);
    }
  }
  for (; r < r1; ++r) {  // an odd last row
    __m512 a0[NC];
    for (int c = 0; c < NC; ++c) a0[c] = _mm512_setzero_ps();
    const float* w0 = w + r * ws;
    for (int64_t k = 0; k < full; k += 16) {
      const __m512 v0 = _mm512_loadu_ps(w0 + k);
      for (int c = 0; c < NC; ++c) a0[c] = _mm512_fmadd_ps(v0, _mm512_loadu_ps(xc + c * xs + k), a0[c]);
    }
    if (tail) {
      const __m512 v0 = _mm512_maskz_loadu_ps(tail, w0 + full);
      for (int c = 0; c < NC; ++c) a0[c] = _mm512_fmadd_ps(v0, _mm512_maskz_loadu_ps(tail, xc + c * xs + full), a0[c]);
    }
    for (int c = 0; c < NC; ++c) oc[c * os + r] = _mm512_reduce_add_ps(a0[c]);
  }
}

void columns(const float* w, int64_t ws, const float* x, int64_t xs, float* out, int64_t os,
             int64_t r0, int64_t r1, int64_t D, int64_t N) {
  int64_t c0 = 0;
  for (; c0 + 8 <= N; c0 += 8) rows<8>(w, ws, x, xs, out, os, r0, r1, D, c0);
  switch (N - c0) {
    case 7: rows<7>(w, ws, x, xs, out, os, r0, r1, D, c0); break;
    case 6: rows<6>(w, ws, x, xs, out, os, r0, r1, D, c0); break;
    case 5: rows<5>(w, ws, x, xs, out, os, r0, r1, D, c0); break;
    case 4: rows<4>(w, ws, x, xs, out, os, r0, r1, D, c0); break;
    case 3: rows<3>(w, ws, x, xs, out, os, r0, r1, D, c0); break;
    case 2: rows<2>(w, ws, x, xs, out, os, r0, r1, D, c0); break;
    case 1: rows<1>(w, ws, x, xs, out, os, r0, r1, D, c0); break;
    default: break;
  }
}

}  // namespace

// (N, V) = x (N, D) @ w (V, D)^T
torch::Tensor few_rows_matmul(const torch::Tensor& x, const torch::Tensor& w) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && w.scalar_type() == torch::kFloat32,
              "few_rows_matmul takes float32 tensors");
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1),
              "few_rows_matmul: x (N, D) and w (V, D) must agree on D");
  TORCH_CHECK(w.stride(1) == 1, "few_rows_matmul: the weight's rows must be contiguous");
  TORCH_CHECK(!x.is_cuda() && !w.is_cuda(), "few_rows_matmul runs on the CPU");
  const torch::Tensor xc = x.contiguous();
  const int64_t V = w.size(0), D = w.size(1), N = xc.size(0);
  torch::Tensor out = torch::empty({N, V}, w.options());
  if (N == 0 || V == 0) return out;
  const float* wp = w.data_ptr<float>();
  const float* xp = xc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t ws = w.stride(0), xs = xc.stride(0);
  at::parallel_for(0, V, kGrain, [&](int64_t r0, int64_t r1) { columns(wp, ws, xp, xs, op, V, r0, r1, D, N); });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("few_rows_matmul", &few_rows_matmul, "x (N, D) @ w (V, D)^T for a few rows of x, float32, AVX-512");
}
