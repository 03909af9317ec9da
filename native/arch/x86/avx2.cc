// AVX2 level (AVX2 + FMA + F16C): 8 float lanes. Compiled with -mavx2 -mfma -mf16c in
// its own static library; only reached after the CPU check in dispatch.cc.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../../common.h"
#include "../../js_math.h"

namespace dsv3 {
namespace {

typedef __m256 V;
const int L = 8;
const int NT_MR = 4, NT_NR = 3;  // 12 accumulators + 3 weight vectors + 1 x vector
const int NN_MR = 6, NN_NV = 2;  // 12 accumulators, 16 columns
const std::int64_t PK_NC = 24, PK_KC = 2048, PK_MC = 32;

static inline __m256i lanemask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline V vzero() { return _mm256_setzero_ps(); }
static inline V vset1(float a) { return _mm256_set1_ps(a); }
static inline V vload(const float* p) { return _mm256_loadu_ps(p); }
static inline V vloadn(const float* p, int n) { return _mm256_maskload_ps(p, lanemask(n)); }
static inline void vstore(float* p, V v) { _mm256_storeu_ps(p, v); }
static inline void vstoren(float* p, V v, int n) { _mm256_maskstore_ps(p, lanemask(n), v); }
static inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
static inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
static inline V vsub(V a, V b) { return _mm256_sub_ps(a, b); }
static inline V vmul(V a, V b) { return _mm256_mul_ps(a, b); }
static inline V vdiv(V a, V b) { return _mm256_div_ps(a, b); }
static inline V vmax(V a, V b) { return _mm256_max_ps(a, b); }
static inline float vhsum(V v) {
  __m128 b = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  b = _mm_add_ps(b, _mm_movehl_ps(b, b));
  b = _mm_add_ss(b, _mm_movehdup_ps(b));
  return _mm_cvtss_f32(b);
}
/** vhsum of a, b, c, d (the first n of them) into out[0..n). */
static inline void vhsum4(float* out, V a, V b, V c, V d, int n) {
  const V v[4] = {a, b, c, d};
  for (int i = 0; i < n && i < 4; i++) out[i] = vhsum(v[i]);
}
static inline float vhmax(V v) {
  __m128 b = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  b = _mm_max_ps(b, _mm_movehl_ps(b, b));
  b = _mm_max_ss(b, _mm_movehdup_ps(b));
  return _mm_cvtss_f32(b);
}

/** exp with ~1-2 ulp error (Cephes polynomial); results below 2^-126 flush to 0. */
static inline V vexp(V x0) {
  V x = _mm256_min_ps(_mm256_set1_ps(88.3762626647949f), _mm256_max_ps(_mm256_set1_ps(-88.0f), x0));
  const V fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  V r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
  V y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  V res = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  // Below about -87.3 the true result is subnormal or 0: return 0. Keep NaN.
  res = _mm256_andnot_ps(_mm256_cmp_ps(x0, _mm256_set1_ps(-87.3f), _CMP_LT_OQ), res);
  return _mm256_blendv_ps(res, x0, _mm256_cmp_ps(x0, x0, _CMP_UNORD_Q));
}

static inline V dec_bf16(const std::uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
static inline V dec_bf16n(const std::uint16_t* p, int n) {
  alignas(16) std::uint16_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(t, p, (std::size_t)n * 2);
  return dec_bf16(t);
}
static inline V dec_f16(const std::uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
static inline V dec_f16n(const std::uint16_t* p, int n) {
  alignas(16) std::uint16_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(t, p, (std::size_t)n * 2);
  return dec_f16(t);
}

// e4m3 → f32 by bit placement (see avx512.cc): value · 2^-120, the 2^120 folded into the
// scale by f8prep. Codes 0x7F/0xFF are NaN.
static inline float f8prep(float s) { return s * 1.329227995784916e36f; }
static inline V f8dec(__m128i b, V s, bool slow) {
  const __m256i t = _mm256_slli_epi32(_mm256_cvtepi8_epi32(b), 20);
  V r = _mm256_castsi256_ps(_mm256_and_si256(t, _mm256_set1_epi32((int)0x87F00000u)));
  if (slow) r = _mm256_mul_ps(r, _mm256_set1_ps(1.329227995784916e36f));
  r = _mm256_mul_ps(r, s);
  const __m128i m7f = _mm_set1_epi8(0x7f);
  const __m128i nan = _mm_cmpeq_epi8(_mm_and_si128(b, m7f), m7f);
  if (_mm_movemask_epi8(nan) & 0xff)
    r = _mm256_blendv_ps(r, _mm256_set1_ps(NAN), _mm256_castsi256_ps(_mm256_cvtepi8_epi32(nan)));
  return r;
}
static inline V f8decq(__m128i b, V s, bool slow) {
  const __m256i t = _mm256_slli_epi32(_mm256_cvtepi8_epi32(b), 20);
  V r = _mm256_castsi256_ps(_mm256_and_si256(t, _mm256_set1_epi32((int)0x87F00000u)));
  if (slow) r = _mm256_mul_ps(r, _mm256_set1_ps(1.329227995784916e36f));
  return _mm256_mul_ps(r, s);
}
/** Any NaN code (0x7F, 0xFF) among p[0..n)? */
static inline bool f8_has_nan(const std::uint8_t* p, std::int64_t n) {
  const __m256i m7f = _mm256_set1_epi8(0x7f);
  __m256i any = _mm256_setzero_si256();
  std::int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    any = _mm256_or_si256(any, _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)), m7f), m7f));
  bool r = _mm256_movemask_epi8(any) != 0;
  for (; i < n; i++) r = r || (p[i] & 0x7f) == 0x7f;
  return r;
}
static inline __m128i f8load(const std::uint8_t* p) {
  return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
}
static inline __m128i f8loadn(const std::uint8_t* p, int n) {
  alignas(16) std::uint8_t t[16] = {0};
  std::memcpy(t, p, (std::size_t)n);
  return _mm_load_si128(reinterpret_cast<const __m128i*>(t));
}
// Raw decoders for FP8 with the block scale on x: e4m3 · 2^-F8_RAW_EXP, no scale (see avx512.cc).
static const int F8_RAW_EXP = 120;
static inline V dec_f8r(const std::uint8_t* p) { return f8dec(f8load(p), _mm256_set1_ps(1.0f), false); }
static inline V dec_f8rq(const std::uint8_t* p) { return f8decq(f8load(p), _mm256_set1_ps(1.0f), false); }
static inline V dec_f8rn(const std::uint8_t* p, int n) { return f8dec(f8loadn(p, n), _mm256_set1_ps(1.0f), false); }
static inline V dec_f8(const std::uint8_t* p, V s) { return f8dec(f8load(p), s, false); }
static inline V dec_f8n(const std::uint8_t* p, int n, V s) { return f8dec(f8loadn(p, n), s, false); }
static inline V dec_f8s(const std::uint8_t* p, V s) { return f8dec(f8load(p), s, true); }
static inline V dec_f8q(const std::uint8_t* p, V s) { return f8decq(f8load(p), s, false); }
static inline V dec_f8sq(const std::uint8_t* p, V s) { return f8decq(f8load(p), s, true); }
static inline V dec_f8sn(const std::uint8_t* p, int n, V s) { return f8dec(f8loadn(p, n), s, true); }

// Integer lanes for the block-format decoders (kernels_impl.h, QDec): L int32 values.
typedef __m256i VI;
static inline VI vi_u8(const std::uint8_t* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
static inline VI vi_i8(const std::uint8_t* p) { return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
/** Lanes i < 8: byte i of v (from the low end). */
static inline VI vi_bytes64(std::uint64_t v) { return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)v)); }
static inline VI vi_set1(int a) { return _mm256_set1_epi32(a); }
static inline VI vi_and(VI a, VI b) { return _mm256_and_si256(a, b); }
static inline VI vi_or(VI a, VI b) { return _mm256_or_si256(a, b); }
static inline VI vi_sub(VI a, VI b) { return _mm256_sub_epi32(a, b); }
static inline VI vi_srli(VI a, int n) { return _mm256_srli_epi32(a, n); }
static inline VI vi_slli(VI a, int n) { return _mm256_slli_epi32(a, n); }
/** Lane l: 16 if bit l of w is set, else 0. */
static inline VI vi_bit16(std::uint32_t w) {
  const VI b = _mm256_srlv_epi32(_mm256_set1_epi32((int)w), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_slli_epi32(_mm256_and_si256(b, _mm256_set1_epi32(1)), 4);
}
static inline V vi_cvt(VI a) { return _mm256_cvtepi32_ps(a); }
/** IEEE half → float32, exact. */
static inline float h2f(std::uint16_t h) { return _cvtsh_ss(h); }

#ifndef DSV3_SHORT_ROW
#define DSV3_SHORT_ROW 2048
#endif
static const std::int64_t SHORT_ROW_BYTES = DSV3_SHORT_ROW;  // decode rows up to this long go one at a time

#include "../../kernels_impl.h"
#define DSV3_QDOT_HEADER "arch/x86/qdot_x86.h"
#include "../../qdot_impl.h"
#define DSV3_EXP_LANES 4
#include "../../exp_impl.h"

const KernelTable table = {
    "avx2", L, 16, gemm_nt_direct, gemm_nt_packed, gemm_nn, softmax_rows, silu_mul, attn_latent, attention,
    decode_row, XQ_TILE_ROWS, xq_tile_bytes, quantize_x, exp_sum,
};

}  // namespace

const KernelTable* avx2_table() { return &table; }

}  // namespace dsv3
