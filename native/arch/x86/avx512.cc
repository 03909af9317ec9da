// AVX-512 level (F, BW, VL, DQ, VNNI + FMA, F16C): 16 float lanes. Compiled with -mavx512*
// flags in its own static library; only reached after the CPU check in ops.cc (which
// requires VNNI too: the block formats' integer dot products use vpdpbusd).
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 reports its own _mm512_undefined_* placeholders as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
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

typedef __m512 V;
const int L = 16;
const int NT_MR = 4, NT_NR = 6;  // 24 accumulators + 6 weight vectors + 1 x vector
const int NN_MR = 6, NN_NV = 4;  // 24 accumulators, 64 columns
#ifndef DSV3_PK
#define DSV3_PK 48, 2048, 32  // panel rows, K chunk, M block (tuned on Zen 4)
#endif
const std::int64_t PK_NC_MC[3] = {DSV3_PK};
const std::int64_t PK_NC = PK_NC_MC[0], PK_KC = PK_NC_MC[1], PK_MC = PK_NC_MC[2];

static inline __mmask16 lanes(int n) { return (__mmask16)((1u << n) - 1u); }
static inline V vzero() { return _mm512_setzero_ps(); }
static inline V vset1(float a) { return _mm512_set1_ps(a); }
static inline V vload(const float* p) { return _mm512_loadu_ps(p); }
static inline V vloadn(const float* p, int n) { return _mm512_maskz_loadu_ps(lanes(n), p); }
static inline void vstore(float* p, V v) { _mm512_storeu_ps(p, v); }
static inline void vstoren(float* p, V v, int n) { _mm512_mask_storeu_ps(p, lanes(n), v); }
static inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
static inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
static inline V vsub(V a, V b) { return _mm512_sub_ps(a, b); }
static inline V vmul(V a, V b) { return _mm512_mul_ps(a, b); }
static inline V vdiv(V a, V b) { return _mm512_div_ps(a, b); }
static inline V vmax(V a, V b) { return _mm512_max_ps(a, b); }
static inline float vhsum(V v) {
  const __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  b = _mm_add_ps(b, _mm_movehl_ps(b, b));
  b = _mm_add_ss(b, _mm_movehdup_ps(b));
  return _mm_cvtss_f32(b);
}
/**
 * vhsum of a, b, c, d (the first n of them) into out[0..n), by the same tree per vector
 * (lanes i + i+8, then + i+4, then + i+2, then + i+1) but with the four vectors sharing
 * each shuffle and add: 14 instructions instead of 32, bitwise the same sums.
 */
static inline void vhsum4(float* out, V a, V b, V c, V d, int n) {
  const V ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  const V cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 2, 3, 2)));
  // Quarter q now holds vector q's four sums of lanes i + i+4 (i < 4).
  const V q = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
  const V h = _mm512_add_ps(q, _mm512_permute_ps(q, _MM_SHUFFLE(3, 2, 3, 2)));
  const V r = _mm512_add_ps(h, _mm512_permute_ps(h, _MM_SHUFFLE(1, 1, 1, 1)));
  const __m128 o = _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), r));
  if (n >= 4) _mm_storeu_ps(out, o);
  else _mm_mask_storeu_ps(out, (__mmask8)((1u << n) - 1u), o);
}
static inline float vhmax(V v) { return _mm512_reduce_max_ps(v); }

/** exp with ~1-2 ulp error (Cephes polynomial), exact range handling via scalef. */
static inline V vexp(V x) {
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
  const V fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  V r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), r);
  V y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), r);
  y = _mm512_add_ps(y, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, fx);
}

static inline V dec_bf16(const std::uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
static inline V dec_bf16n(const std::uint16_t* p, int n) {
  const __m256i h = _mm256_maskz_loadu_epi16(lanes(n), p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
static inline V dec_f16(const std::uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
static inline V dec_f16n(const std::uint16_t* p, int n) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lanes(n), p));
}

// e4m3 → f32 by bit placement: sign-extend the byte, shift the 7 exponent+mantissa bits
// to the top of a float32 (bits 20..26) and keep the sign; the result is the e4m3 value
// times 2^-120 (e4m3 subnormals land on f32 subnormals, exactly). f8prep folds the 2^120
// into the block scale, so one float32 multiply gives round(e4m3 · scale), the same
// rounding as the reference. (The slow variant, for |scale| >= 256, multiplies twice.)
// Codes 0x7F/0xFF are NaN.
static inline float f8prep(float s) { return s * 1.329227995784916e36f; /* 2^120 */ }
static inline V f8bits(__m128i b) {
  const __m512i t = _mm512_slli_epi32(_mm512_cvtepi8_epi32(b), 20);
  return _mm512_castsi512_ps(_mm512_and_si512(t, _mm512_set1_epi32((int)0x87F00000u)));
}
static inline V f8nan(__m128i b, V r) {
  const __m128i m7f = _mm_set1_epi8(0x7f);
  const __mmask16 nan = _mm_cmpeq_epi8_mask(_mm_and_si128(b, m7f), m7f);
  return _mm512_mask_mov_ps(r, nan, _mm512_set1_ps(NAN));
}
static inline V dec_f8(const std::uint8_t* p, V s) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return f8nan(b, _mm512_mul_ps(f8bits(b), s));
}
static inline V dec_f8n(const std::uint8_t* p, int n, V s) {
  const __m128i b = _mm_maskz_loadu_epi8(lanes(n), p);
  return f8nan(b, _mm512_mul_ps(f8bits(b), s));
}
static inline V dec_f8q(const std::uint8_t* p, V s) {
  return _mm512_mul_ps(f8bits(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), s);
}
static inline V dec_f8sq(const std::uint8_t* p, V s) {
  const V f = f8bits(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm512_mul_ps(_mm512_mul_ps(f, _mm512_set1_ps(1.329227995784916e36f)), s);
}
// Raw decoders for FP8 with the block scale on x (see f8_xg): e4m3 · 2^-F8_RAW_EXP, no scale.
static const int F8_RAW_EXP = 120;
static inline V dec_f8r(const std::uint8_t* p) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return f8nan(b, f8bits(b));
}
static inline V dec_f8rq(const std::uint8_t* p) { return f8bits(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
static inline V dec_f8rn(const std::uint8_t* p, int n) {
  const __m128i b = _mm_maskz_loadu_epi8(lanes(n), p);
  return f8nan(b, f8bits(b));
}
/** Any NaN code (0x7F, 0xFF) among p[0..n)? */
static inline bool f8_has_nan(const std::uint8_t* p, std::int64_t n) {
  const __m512i m7f = _mm512_set1_epi8(0x7f);
  __mmask64 any = 0;
  std::int64_t i = 0;
  for (; i + 64 <= n; i += 64)
    any |= _mm512_cmpeq_epi8_mask(_mm512_and_si512(_mm512_loadu_si512(p + i), m7f), m7f);
  if (i < n) {
    const __mmask64 m = (n - i) >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (n - i)) - 1);
    any |= _mm512_mask_cmpeq_epi8_mask(m, _mm512_and_si512(_mm512_maskz_loadu_epi8(m, p + i), m7f), m7f);
  }
  return any != 0;
}
static inline V dec_f8s(const std::uint8_t* p, V s) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return f8nan(b, _mm512_mul_ps(_mm512_mul_ps(f8bits(b), _mm512_set1_ps(1.329227995784916e36f)), s));
}
static inline V dec_f8sn(const std::uint8_t* p, int n, V s) {
  const __m128i b = _mm_maskz_loadu_epi8(lanes(n), p);
  return f8nan(b, _mm512_mul_ps(_mm512_mul_ps(f8bits(b), _mm512_set1_ps(1.329227995784916e36f)), s));
}

// Integer lanes for the block-format decoders (kernels_impl.h, QDec): L int32 values.
typedef __m512i VI;
static inline VI vi_u8(const std::uint8_t* p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
static inline VI vi_i8(const std::uint8_t* p) { return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
/** Lanes i < 8: byte i of v (from the low end); the others 0. */
static inline VI vi_bytes64(std::uint64_t v) { return _mm512_cvtepu8_epi32(_mm_cvtsi64_si128((long long)v)); }
static inline VI vi_set1(int a) { return _mm512_set1_epi32(a); }
static inline VI vi_and(VI a, VI b) { return _mm512_and_si512(a, b); }
static inline VI vi_or(VI a, VI b) { return _mm512_or_si512(a, b); }
static inline VI vi_sub(VI a, VI b) { return _mm512_sub_epi32(a, b); }
static inline VI vi_srli(VI a, unsigned n) { return _mm512_srli_epi32(a, n); }
static inline VI vi_slli(VI a, unsigned n) { return _mm512_slli_epi32(a, n); }
/** Lane l: 16 if bit l of w is set, else 0. */
static inline VI vi_bit16(std::uint32_t w) { return _mm512_maskz_mov_epi32((__mmask16)w, _mm512_set1_epi32(16)); }
static inline V vi_cvt(VI a) { return _mm512_cvtepi32_ps(a); }
/** IEEE half → float32, exact. */
static inline float h2f(std::uint16_t h) { return _cvtsh_ss(h); }
// Table lookups for the 4- and 5-bit block formats (see kernels_impl.h, DSV3_QLUT).
#define DSV3_QLUT 1
static inline V vlut16(V t, VI i) { return _mm512_permutexvar_ps(i, t); }
static inline V vlut32(V lo, V hi, VI i) { return _mm512_permutex2var_ps(lo, i, hi); }
static inline V viota() { return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }

#ifndef DSV3_SHORT_ROW
#define DSV3_SHORT_ROW 2048
#endif
static const std::int64_t SHORT_ROW_BYTES = DSV3_SHORT_ROW;  // decode rows up to this long go one at a time

#include "../../kernels_impl.h"
#define DSV3_VNNI 1
#define DSV3_QDOT_HEADER "arch/x86/qdot_x86.h"
#include "../../qdot_impl.h"
#define DSV3_EXP_LANES 8
#include "../../exp_impl.h"

const KernelTable table = {
    "avx512", L, 16, gemm_nt_direct, gemm_nt_packed, gemm_nn, softmax_rows, silu_mul, attn_latent, attention,
    decode_row, XQ_TILE_ROWS, xq_tile_bytes, quantize_x, exp_sum,
};

}  // namespace

const KernelTable* avx512_table() { return &table; }

}  // namespace dsv3
