// y = x @ w^T for a float32 weight w (V, D) with contiguous rows and a few input rows x (N, D):
// the shape of a decoding step (one new position per sequence). MKL runs it as a general matrix
// product at about half the speed it reads w from memory; this kernel reads each row of w once,
// two rows at a time, prefetching ahead, and keeps the partial dot products of up to 8 inputs
// (AVX-512) or 4 (AVX2) in registers. models/kernels builds it on first use, for the CPU's
// vector extension, and falls back to torch without it.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

namespace {

#if defined(__AVX512F__)
using Vec = __m512;
constexpr int kLanes = 16;
constexpr int kMaxCols = 8;  // 2 rows x 8 inputs = 16 accumulators of the 32 registers
inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline float vsum(Vec a) { return _mm512_reduce_add_ps(a); }
#elif defined(__AVX2__) && defined(__FMA__)
using Vec = __m256;
constexpr int kLanes = 8;
constexpr int kMaxCols = 4;  // 2 rows x 4 inputs = 8 accumulators of the 16 registers
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline float vsum(Vec a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#else
#error "few_rows.cpp needs AVX-512 or AVX2 with FMA (models/kernels builds it only on such CPUs)"
#endif

constexpr int64_t kPrefetchRows = PREFETCH_ROWS;  // how far ahead the next rows are fetched
constexpr int64_t kGrain = 256;                   // rows per parallel task, at least

struct Problem {
  const float* w; int64_t ws;  // weight (V, D), row stride ws
  const float* x; int64_t xs;  // inputs (N, D), row stride xs
  float* out; int64_t V;       // output (N, V), contiguous
  int64_t D;
};

// out[c0 + c, r] and out[c0 + c, r + 1] for c in [0, NC): two weight rows against NC inputs
template <int NC>
inline void two_rows(const Problem& p, int64_t r, int64_t c0) {
  const int64_t full = p.D / kLanes * kLanes;
  const float* w0 = p.w + r * p.ws;
  const float* w1 = w0 + p.ws;
  const float* xc = p.x + c0 * p.xs;
  Vec a0[NC], a1[NC];
  for (int c = 0; c < NC; ++c) { a0[c] = vzero(); a1[c] = vzero(); }
  for (int64_t k = 0; k < full; k += kLanes) {
    const Vec v0 = vload(w0 + k), v1 = vload(w1 + k);
    _mm_prefetch(reinterpret_cast<const char*>(w0 + kPrefetchRows * p.ws + k), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w1 + kPrefetchRows * p.ws + k), _MM_HINT_T0);
    for (int c = 0; c < NC; ++c) {
      const Vec u = vload(xc + c * p.xs + k);
      a0[c] = vfma(v0, u, a0[c]);
      a1[c] = vfma(v1, u, a1[c]);
    }
  }
  for (int c = 0; c < NC; ++c) {
    float s0 = vsum(a0[c]), s1 = vsum(a1[c]);
    const float* u = xc + c * p.xs;
    for (int64_t k = full; k < p.D; ++k) { s0 += w0[k] * u[k]; s1 += w1[k] * u[k]; }  // a ragged end
    p.out[(c0 + c) * p.V + r] = s0;
    p.out[(c0 + c) * p.V + r + 1] = s1;
  }
}

template <int NC>
inline void one_row(const Problem& p, int64_t r, int64_t c0) {
  const int64_t full = p.D / kLanes * kLanes;
  const float* w0 = p.w + r * p.ws;
  const float* xc = p.x + c0 * p.xs;
  Vec a0[NC];
  for (int c = 0; c < NC; ++c) a0[c] = vzero();
  for (int64_t k = 0; k < full; k += kLanes) {
    const Vec v0 = vload(w0 + k);
    for (int c = 0; c < NC; ++c) a0[c] = vfma(v0, vload(xc + c * p.xs + k), a0[c]);
  }
  for (int c = 0; c < NC; ++c) {
    float s0 = vsum(a0[c]);
    const float* u = xc + c * p.xs;
    for (int64_t k = full; k < p.D; ++k) s0 += w0[k] * u[k];
    p.out[(c0 + c) * p.V + r] = s0;
  }
}

// Every input against rows [r0, r1): the column groups run inside each row pair, so a second
// group reads the pair from the L1 cache rather than from memory.
template <bool Pair>
void rows_block(const Problem& p, int64_t r, int64_t N) {
  int64_t c0 = 0;
  for (; c0 + kMaxCols <= N; c0 += kMaxCols) Pair ? two_rows<kMaxCols>(p, r, c0) : one_row<kMaxCols>(p, r, c0);
  switch (N - c0) {
    case 7: if constexpr (kMaxCols > 7) { Pair ? two_rows<7>(p, r, c0) : one_row<7>(p, r, c0); } break;
    case 6: if constexpr (kMaxCols > 6) { Pair ? two_rows<6>(p, r, c0) : one_row<6>(p, r, c0); } break;
    case 5: if constexpr (kMaxCols > 5) { Pair ? two_rows<5>(p, r, c0) : one_row<5>(p, r, c0); } break;
    case 4: if constexpr (kMaxCols > 4) { Pair ? two_rows<4>(p, r, c0) : one_row<4>(p, r, c0); } break;
    case 3: Pair ? two_rows<3>(p, r, c0) : one_row<3>(p, r, c0); break;
    case 2: Pair ? two_rows<2>(p, r, c0) : one_row<2>(p, r, c0); break;
    case 1: Pair ? two_rows<1>(p, r, c0) : one_row<1>(p, r, c0); break;
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
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), "few_rows_matmul runs on the CPU");
  const torch::Tensor xc = x.contiguous();
  const int64_t V = w.size(0), N = xc.size(0);
  torch::Tensor out = torch::empty({N, V}, w.options());
  if (N == 0 || V == 0) return out;
  const Problem p{w.data_ptr<float>(), w.stride(0), xc.data_ptr<float>(), xc.stride(0), out.data_ptr<float>(), V,
                  w.size(1)};
  at::parallel_for(0, V, kGrain, [&](int64_t r0, int64_t r1) {
    int64_t r = r0;
    for (; r + 1 < r1; r += 2) rows_block<true>(p, r, N);
    if (r < r1) rows_block<false>(p, r, N);
  });
  return out;
}

std::string vector_extension() { return kLanes == 16 ? "AVX-512" : "AVX2"; }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("few_rows_matmul", &few_rows_matmul, "x (N, D) @ w (V, D)^T for a few rows of x, float32");
  m.def("vector_extension", &vector_extension, "the vector extension this build uses");
}
