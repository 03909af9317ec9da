// ggml's reference quantisers (the ones llama-quantize runs without an importance matrix),
// reimplemented so that their bytes are exactly those of src/tensor/quants.ts and of
// llama.cpp's quantize_row_<type>_ref.
//
// Exactness rests on three things. Every operation is a float32 operation, in the order
// the reference spells it: the addon is compiled with -ffp-contract=off (no fused
// multiply-add) and without -ffast-math (no reassociation, so no sum is vectorised or
// reordered), and x86-64 evaluates float in float (FLT_EVAL_METHOD 0). The integer steps
// are spelled out rather than left to the compiler: round-to-nearest via the 1.5·2^23 trick,
// float → int8 as x86's truncating conversion then the low byte, f16 rounding to nearest even.
// And the source rows are widened exactly as the reference decodeRow does (one float32
// product per value where there is a scale).
//
// Speed: the K-quant fits (searches over candidate scales, nearly all of the cost) run the
// groups of a super-block side by side in SIMD lanes, lane g doing exactly group g's scalar
// steps; the rest (decoding the source row, the 32-value formats) is plain scalar code.
// Rows are split over the thread pool; a row's bytes never depend on the thread count.
#include "quantize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ggml_scalar.h"

namespace dsv3 {
namespace {

typedef std::uint8_t u8;

// ---- scalar helpers ----------------------------------------------------------------------



inline float half_at(const u8* p) { return f16_to_f32((std::uint16_t)(p[0] | (p[1] << 8))); }

inline void put_half(u8* p, float v) {
  const std::uint16_t h = ggml_f32_to_f16(v);
  p[0] = (u8)(h & 0xff);
  p[1] = (u8)(h >> 8);
}

inline int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

/** 6-bit scale and min of K-quant group j from the 12 packed bytes s. */
inline int k_scale(const u8* s, int j) { return j < 4 ? (s[j] & 63) : ((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4)); }
inline int k_min(const u8* s, int j) { return j < 4 ? (s[j + 4] & 63) : ((s[j + 4] >> 4) | ((s[j] >> 6) << 4)); }

/** ggml's GROUP_MAX_EPS: a group whose largest magnitude is below it counts as all zero. */
const float GROUP_EPS = 1e-15f;

// ---- lanes: one group of a super-block per lane ----------------------------------------------
// Four float32 / int32 lanes (the width every x86-64 and AArch64 CPU has natively). Every
// operator acts lane by lane with the scalar rounding, so a lane computes exactly what the
// scalar code would; a compare gives a 0 / −1 mask per lane. With GCC and Clang these are
// vector extensions, which the compiler maps onto SSE / NEON; elsewhere (MSVC) a plain
// struct with the same operators (DSV3_QUANT_PLAIN_LANES forces it, for testing).

constexpr int LANES = 4;

#if (defined(__GNUC__) || defined(__clang__)) && !defined(DSV3_QUANT_PLAIN_LANES)
typedef float VF __attribute__((vector_size(16)));
typedef std::int32_t VI __attribute__((vector_size(16)));
/** The bits of float lanes as int lanes, and back; int lanes converted to float. */
inline VI as_int(VF v) { return (VI)v; }
inline VF as_float(VI v) { return (VF)v; }
inline VF to_float(VI v) { return __builtin_convertvector(v, VF); }
#else
struct VI {
  std::int32_t v[LANES];
  std::int32_t& operator[](int j) { return v[j]; }
  std::int32_t operator[](int j) const { return v[j]; }
};
struct VF {
  float v[LANES];
  float& operator[](int j) { return v[j]; }
  float operator[](int j) const { return v[j]; }
};
#define DSV3_LANES(T, E, OP, EXPR)                                   \
  inline T operator OP(T a, T b) {                                   \
    T r;                                                             \
    for (int j = 0; j < LANES; j++) r.v[j] = (EXPR);                 \
    return r;                                                        \
  }                                                                  \
  inline T operator OP(T a, E s) { return a OP splat_##T(s); }       \
  inline T operator OP(E s, T b) { return splat_##T(s) OP b; }
inline VF splat_VF(float s) { return VF{{s, s, s, s}}; }
inline VI splat_VI(std::int32_t s) { return VI{{s, s, s, s}}; }
DSV3_LANES(VF, float, +, a.v[j] + b.v[j])
DSV3_LANES(VF, float, -, a.v[j] - b.v[j])
DSV3_LANES(VF, float, *, a.v[j] * b.v[j])
DSV3_LANES(VF, float, /, a.v[j] / b.v[j])
DSV3_LANES(VI, std::int32_t, +, a.v[j] + b.v[j])
DSV3_LANES(VI, std::int32_t, -, a.v[j] - b.v[j])
DSV3_LANES(VI, std::int32_t, &, a.v[j] & b.v[j])
DSV3_LANES(VI, std::int32_t, |, a.v[j] | b.v[j])
#undef DSV3_LANES
inline VI operator~(VI a) {
  for (int j = 0; j < LANES; j++) a.v[j] = ~a.v[j];
  return a;
}
#define DSV3_CMP(T, E, OP)                                                     \
  inline VI operator OP(T a, T b) {                                            \
    VI r;                                                                      \
    for (int j = 0; j < LANES; j++) r.v[j] = a.v[j] OP b.v[j] ? -1 : 0;        \
    return r;                                                                  \
  }                                                                            \
  inline VI operator OP(T a, E s) { return a OP splat_##T(s); }
DSV3_CMP(VF, float, <)
DSV3_CMP(VF, float, >)
DSV3_CMP(VF, float, !=)
DSV3_CMP(VI, std::int32_t, <)
DSV3_CMP(VI, std::int32_t, >)
#undef DSV3_CMP
inline VI as_int(VF a) {
  VI r;
  std::memcpy(r.v, a.v, sizeof r.v);
  return r;
}
inline VF as_float(VI a) {
  VF r;
  std::memcpy(r.v, a.v, sizeof r.v);
  return r;
}
inline VF to_float(VI a) {
  VF r;
  for (int j = 0; j < LANES; j++) r.v[j] = (float)a.v[j];
  return r;
}
#endif

/** ggml_nearest_int lane by lane. */
inline VI v_nearest(VF v) { return (as_int(v + 12582912.0f) & 0x7fffff) - 0x400000; }
/** Lanes of a where the mask m is set, of b elsewhere. */
inline VI v_sel(VI m, VI a, VI b) { return (m & a) | (~m & b); }
inline VF v_sel(VI m, VF a, VF b) { return as_float(v_sel(m, as_int(a), as_int(b))); }
inline VI v_clamp(VI v, int lo, int hi) {
  const VI z = v - v;
  v = v_sel(v < lo, z + lo, v);
  return v_sel(v > hi, z + hi, v);
}
inline VF v_abs(VF v) { return as_float(as_int(v) & 0x7fffffff); }

// ---- the 32-value formats -------------------------------------------------------------------

void quant_q8_0(const float* x, i64 nb, u8* y) {
  for (i64 b = 0; b < nb; b++, x += 32, y += 34) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) {
      const float a = std::fabs(x[j]);
      amax = amax > a ? amax : a;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_half(y, d);
    for (int j = 0; j < 32; j++) y[2 + j] = (u8)ggml_trunc_i8(std::round(x[j] * id));
  }
}

/**
 * Q4_0 (bits 4) and Q5_0 (bits 5): d = −(the value of largest magnitude) / 2^(bits−1), written
 * at y; the 32 levels min(2^bits − 1, int8(x·(1/d) + 2^(bits−1) + ½)) go to lv.
 */
void signed_levels(const float* x, int bits, u8* y, u8* lv) {
  const int mid = bits == 4 ? 8 : 16;
  const int top = 2 * mid - 1;
  const float bias = bits == 4 ? 8.5f : 16.5f;
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; j++) {
    const float a = std::fabs(x[j]);
    if (amax < a) {
      amax = a;
      max = x[j];
    }
  }
  const float d = max / (float)-mid;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_half(y, d);
  for (int j = 0; j < 32; j++) lv[j] = (u8)std::min(top, (int)ggml_trunc_i8(x[j] * id + bias));
}

void quant_q4_0(const float* x, i64 nb, u8* y) {
  u8 lv[32];
  for (i64 b = 0; b < nb; b++, x += 32, y += 18) {
    signed_levels(x, 4, y, lv);
    for (int j = 0; j < 16; j++) y[2 + j] = (u8)(lv[j] | (lv[j + 16] << 4));
  }
}

void quant_q5_0(const float* x, i64 nb, u8* y) {
  u8 lv[32];
  for (i64 b = 0; b < nb; b++, x += 32, y += 22) {
    signed_levels(x, 5, y, lv);
    std::uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
      y[6 + j] = (u8)((lv[j] & 15) | ((lv[j + 16] & 15) << 4));
      qh |= (std::uint32_t)((lv[j] >> 4) & 1) << j;
      qh |= (std::uint32_t)((lv[j + 16] >> 4) & 1) << (j + 16);
    }
    y[2] = (u8)(qh & 0xff);
    y[3] = (u8)((qh >> 8) & 0xff);
    y[4] = (u8)((qh >> 16) & 0xff);
    y[5] = (u8)(qh >> 24);
  }
}

/**
 * Q4_1 (bits 4) and Q5_1 (bits 5): the block's [min, max] from ±FLT_MAX, d = (max − min) /
 * (2^bits − 1) and min written as f16 at y, y + 2; levels int8((x − min)·(1/d) + ½) from the
 * float32 d and min, Q4_1's capped at 15, Q5_1's kept to their low byte (C's uint8_t).
 */
void affine_levels(const float* x, int bits, u8* y, u8* lv) {
  float min = 3.40282346638528859812e+38f, max = -3.40282346638528859812e+38f;
  for (int j = 0; j < 32; j++) {
    const float v = x[j];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const float d = (max - min) / (float)((1 << bits) - 1);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_half(y, d);
  put_half(y + 2, min);
  for (int j = 0; j < 32; j++) {
    const float t = (x[j] - min) * id;
    const int q = ggml_trunc_i8(t + 0.5f);
    lv[j] = (u8)(bits == 4 ? std::min(15, q) : q);
  }
}

void quant_q4_1(const float* x, i64 nb, u8* y) {
  u8 lv[32];
  for (i64 b = 0; b < nb; b++, x += 32, y += 20) {
    affine_levels(x, 4, y, lv);
    for (int j = 0; j < 16; j++) y[4 + j] = (u8)(lv[j] | (lv[j + 16] << 4));
  }
}

void quant_q5_1(const float* x, i64 nb, u8* y) {
  u8 lv[32];
  for (i64 b = 0; b < nb; b++, x += 32, y += 24) {
    affine_levels(x, 5, y, lv);
    std::uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
      y[8 + j] = (u8)((lv[j] & 15) | ((lv[j + 16] & 15) << 4));
      qh |= (std::uint32_t)((lv[j] >> 4) & 1) << j;
      qh |= (std::uint32_t)((lv[j + 16] >> 4) & 1) << (j + 16);
    }
    y[4] = (u8)(qh & 0xff);
    y[5] = (u8)((qh >> 8) & 0xff);
    y[6] = (u8)((qh >> 16) & 0xff);
    y[7] = (u8)(qh >> 24);
  }
}

// ---- Q4_K / Q5_K ---------------------------------------------------------------------------

/**
 * The (scale, min) fits of the eight groups of 32 of a Q4_K / Q5_K super-block x, each as the
 * reference fits a group: weights rms(group) + |x|; levels 0…nmax against nmax / (max − min);
 * then nstep + 1 nearby inverse scales, each refined by a weighted least-squares (scale,
 * min ≤ 0) for its levels and kept when its weighted squared error is lower (min moves with
 * each winner, and later trials measure from it). Levels go to lv[0..256), scales[g] and
 * negMins[g] = −min.
 *
 * The eight groups run side by side, group g in lane g % 4 of vector g / 4, so every lane
 * still sums its values one after another in the reference's order, and the reference's
 * branches become per-lane selects with the same outcome.
 */
void fit_q45_k(int nmax, const float* x, float rmin, float rdelta, int nstep, u8* lv, float* scales, float* negMins) {
  constexpr int N = 32, K = 8 / LANES;
  VF X[N][K], W[N][K];
  VI L[N][K], A[N][K];
  for (int i = 0; i < N; i++)
    for (int g = 0; g < 8; g++) X[i][g / LANES][g % LANES] = x[N * g + i];
  const VF zero = VF{};
  VF lo[K], lo0[K], hi[K], sw[K], sx[K], inv[K], scale[K], best[K];
  VF sl[K], sl2[K], sxl[K], det[K], s[K], m[K], err[K];
  VI take[K];
  for (int k = 0; k < K; k++) {
    VF ss = zero;
    for (int i = 0; i < N; i++) ss = ss + X[i][k] * X[i][k];
    VF av;
    for (int j = 0; j < LANES; j++) av[j] = std::sqrt(ss[j] / 32.0f);
    for (int i = 0; i < N; i++) W[i][k] = av + v_abs(X[i][k]);
    lo[k] = hi[k] = X[0][k];
    sw[k] = W[0][k];
    sx[k] = W[0][k] * X[0][k];
  }
  for (int i = 1; i < N; i++)
    for (int k = 0; k < K; k++) {
      lo[k] = v_sel(X[i][k] < lo[k], X[i][k], lo[k]);
      hi[k] = v_sel(X[i][k] > hi[k], X[i][k], hi[k]);
      sw[k] = sw[k] + W[i][k];
      sx[k] = sx[k] + W[i][k] * X[i][k];
    }
  for (int k = 0; k < K; k++) {
    lo[k] = v_sel(lo[k] > 0.0f, zero, lo[k]);
    lo0[k] = lo[k];
    // A flat group (max == min) is settled at the end; its lane computes harmless inf / NaN.
    inv[k] = (float)nmax / (hi[k] - lo[k]);
    scale[k] = 1.0f / inv[k];
    best[k] = zero;
  }
  for (int i = 0; i < N; i++)
    for (int k = 0; k < K; k++) {
      const VI l = v_clamp(v_nearest(inv[k] * (X[i][k] - lo[k])), 0, nmax);
      L[i][k] = l;
      VF e = scale[k] * to_float(l) + lo[k] - X[i][k];
      e = e * e;
      best[k] = best[k] + W[i][k] * e;
    }
  for (int is = 0; is <= nstep; is++) {
    const float num = rmin + rdelta * (float)is + (float)nmax;
    for (int k = 0; k < K; k++) {
      inv[k] = num / (hi[k] - lo[k]);
      sl[k] = sl2[k] = sxl[k] = zero;
    }
    for (int i = 0; i < N; i++)
      for (int k = 0; k < K; k++) {
        const VI l = v_clamp(v_nearest(inv[k] * (X[i][k] - lo[k])), 0, nmax);
        A[i][k] = l;
        const VF fl = to_float(l);
        const VF wl = W[i][k] * fl;
        sl[k] = sl[k] + wl;
        sl2[k] = sl2[k] + wl * fl;
        sxl[k] = sxl[k] + wl * X[i][k];
      }
    for (int k = 0; k < K; k++) {
      det[k] = sw[k] * sl2[k] - sl[k] * sl[k];
      const VF ts = (sw[k] * sxl[k] - sx[k] * sl[k]) / det[k];
      const VF tm = (sl2[k] * sx[k] - sl[k] * sxl[k]) / det[k];
      const VI pos = tm > 0.0f;
      s[k] = v_sel(pos, sxl[k] / sl2[k], ts);
      m[k] = v_sel(pos, zero, tm);
      err[k] = zero;
    }
    for (int i = 0; i < N; i++)
      for (int k = 0; k < K; k++) {
        VF e = s[k] * to_float(A[i][k]) + m[k] - X[i][k];
        e = e * e;
        err[k] = err[k] + W[i][k] * e;
      }
    VI any = VI{};
    for (int k = 0; k < K; k++) {
      take[k] = (det[k] > 0.0f) & (err[k] < best[k]);
      any = any | take[k];
    }
    if (!(any[0] | any[1] | any[2] | any[3])) continue;
    for (int k = 0; k < K; k++) {
      best[k] = v_sel(take[k], err[k], best[k]);
      scale[k] = v_sel(take[k], s[k], scale[k]);
      lo[k] = v_sel(take[k], m[k], lo[k]);
    }
    for (int i = 0; i < N; i++)
      for (int k = 0; k < K; k++) L[i][k] = v_sel(take[k], A[i][k], L[i][k]);
  }
  for (int g = 0; g < 8; g++) {
    const int k = g / LANES, j = g % LANES;
    const bool flat = hi[k][j] == lo0[k][j];
    scales[g] = flat ? 0.0f : scale[k][j];
    negMins[g] = flat ? -lo0[k][j] : -lo[k][j];
    for (int i = 0; i < N; i++) lv[N * g + i] = flat ? 0 : (u8)L[i][k][j];
  }
}

/** Q4_K (five = false, 144 B) or Q5_K (five = true, 176 B) super-blocks of 256. */
void quant_q45_k(bool five, const float* x, i64 nb, u8* y) {
  const int nmax = five ? 31 : 15;
  const float rmin = five ? -0.5f : -1.0f;
  const int nstep = five ? 15 : 20;
  const int bytes = five ? 176 : 144;
  u8 lv[256];
  float scales[8], mins[8];
  for (i64 b = 0; b < nb; b++, x += 256, y += bytes) {
    std::memset(y, 0, (std::size_t)bytes);
    fit_q45_k(nmax, x, rmin, 0.1f, nstep, lv, scales, mins);
    float maxScale = 0.0f, maxMin = 0.0f;
    for (int j = 0; j < 8; j++) {
      if (scales[j] > maxScale) maxScale = scales[j];
      if (mins[j] > maxMin) maxMin = mins[j];
    }
    const float invScale = maxScale > 0.0f ? 63.0f / maxScale : 0.0f;
    const float invMin = maxMin > 0.0f ? 63.0f / maxMin : 0.0f;
    u8* s = y + 4;
    for (int j = 0; j < 8; j++) {
      const int ls = std::min(63, ggml_nearest_int(invScale * scales[j]) & 0xff);
      const int lm = std::min(63, ggml_nearest_int(invMin * mins[j]) & 0xff);
      if (j < 4) {
        s[j] = (u8)ls;
        s[j + 4] = (u8)lm;
      } else {
        s[j + 4] = (u8)((ls & 15) | ((lm & 15) << 4));
        s[j - 4] |= (u8)((ls >> 4) << 6);
        s[j] |= (u8)((lm >> 4) << 6);
      }
    }
    put_half(y, maxScale / 63.0f);
    put_half(y + 2, maxMin / 63.0f);
    const float dAll = half_at(y), dminAll = half_at(y + 2);
    for (int j = 0; j < 8; j++) {
      const float d = dAll * (float)k_scale(s, j);
      if (d == 0.0f) continue;  // the group keeps the levels of its fit
      const float dm = dminAll * (float)k_min(s, j);
      const float* g = x + 32 * j;
      for (int i = 0; i < 32; i++) lv[32 * j + i] = (u8)clampi(ggml_nearest_int((g[i] + dm) / d), 0, nmax);
    }
    if (five) {
      u8* qh = y + 16;
      for (int c = 0; c < 4; c++) {
        const u8 m1 = (u8)(1 << (2 * c)), m2 = (u8)(2 << (2 * c));
        u8* q = y + 48 + 32 * c;
        for (int j = 0; j < 32; j++) {
          int l1 = lv[64 * c + j], l2 = lv[64 * c + 32 + j];
          if (l1 > 15) {
            l1 -= 16;
            qh[j] |= m1;
          }
          if (l2 > 15) {
            l2 -= 16;
            qh[j] |= m2;
          }
          q[j] = (u8)(l1 | (l2 << 4));
        }
      }
    } else {
      for (int c = 0; c < 4; c++) {
        u8* q = y + 16 + 32 * c;
        for (int l = 0; l < 32; l++) q[l] = (u8)(lv[64 * c + l] | (lv[64 * c + 32 + l] << 4));
      }
    }
  }
}

// ---- Q6_K ------------------------------------------------------------------------------------

/**
 * The symmetric 6-bit fits of the sixteen groups of 16 of a Q6_K super-block x (levels
 * −32…31, stored +32 in lv), weighted by x²: the inverse scale −32 / (value of largest
 * magnitude), then 18 neighbours −(32 + k/10) / max for k = −9 … −1, 1 … 9, keeping the one
 * that maximises (Σ w·x·l)² / Σ w·l². A group whose largest magnitude is below GROUP_EPS gets
 * scale 0 and levels 0. The sixteen groups run side by side as in fit_q45_k.
 */
void fit_q6_k(const float* x, u8* lv, float* scales) {
  constexpr int N = 16, K = 16 / LANES, nmax = 32;
  VF X[N][K], XX[N][K], WX[N][K];
  VI L[N][K], A[N][K];
  for (int i = 0; i < N; i++)
    for (int g = 0; g < 16; g++) X[i][g / LANES][g % LANES] = x[N * g + i];
  const VF zero = VF{};
  VF mx[K], amax[K], inv[K], slx[K], sl2[K], scale[K], best[K];
  VI take[K];
  for (int k = 0; k < K; k++) mx[k] = amax[k] = zero;
  for (int i = 0; i < N; i++)
    for (int k = 0; k < K; k++) {
      const VF a = v_abs(X[i][k]);
      const VI up = a > amax[k];
      amax[k] = v_sel(up, a, amax[k]);
      mx[k] = v_sel(up, X[i][k], mx[k]);
      XX[i][k] = X[i][k] * X[i][k];   // the weight w = x²
      WX[i][k] = XX[i][k] * X[i][k];  // w·x
    }
  for (int pass = 0; pass < 19; pass++) {
    const int is = pass == 0 ? 0 : (pass <= 9 ? pass - 10 : pass - 9);  // 0, then −9 … −1, 1 … 9
    const float num = pass == 0 ? (float)-nmax : -((float)nmax + 0.1f * (float)is);
    for (int k = 0; k < K; k++) {
      inv[k] = num / mx[k];  // an all-zero group is settled at the end; its lane computes inf / NaN
      slx[k] = sl2[k] = zero;
    }
    for (int i = 0; i < N; i++)
      for (int k = 0; k < K; k++) {
        const VI l = v_clamp(v_nearest(inv[k] * X[i][k]), -nmax, nmax - 1);
        A[i][k] = l;
        const VF fl = to_float(l);
        slx[k] = slx[k] + WX[i][k] * fl;
        sl2[k] = sl2[k] + XX[i][k] * fl * fl;
      }
    if (pass == 0) {
      for (int k = 0; k < K; k++) {
        scale[k] = v_sel(sl2[k] != 0.0f, slx[k] / sl2[k], zero);
        best[k] = scale[k] * slx[k];
      }
      for (int i = 0; i < N; i++)
        for (int k = 0; k < K; k++) L[i][k] = A[i][k];
      continue;
    }
    VI any = VI{};
    for (int k = 0; k < K; k++) {
      take[k] = (sl2[k] > 0.0f) & (slx[k] * slx[k] > best[k] * sl2[k]);
      any = any | take[k];
    }
    if (!(any[0] | any[1] | any[2] | any[3])) continue;
    for (int k = 0; k < K; k++) {
      scale[k] = v_sel(take[k], slx[k] / sl2[k], scale[k]);
      best[k] = v_sel(take[k], scale[k] * slx[k], best[k]);
    }
    for (int i = 0; i < N; i++)
      for (int k = 0; k < K; k++) L[i][k] = v_sel(take[k], A[i][k], L[i][k]);
  }
  for (int g = 0; g < 16; g++) {
    const int k = g / LANES, j = g % LANES;
    const bool zeroGroup = amax[k][j] < GROUP_EPS;
    scales[g] = zeroGroup ? 0.0f : scale[k][j];
    for (int i = 0; i < N; i++) lv[N * g + i] = zeroGroup ? 0 : (u8)(L[i][k][j] + nmax);
  }
}

void quant_q6_k(const float* x, i64 nb, u8* y) {
  u8 lv[256];
  float scales[16];
  for (i64 b = 0; b < nb; b++, x += 256, y += 210) {
    std::memset(y, 0, 210);
    fit_q6_k(x, lv, scales);
    float maxScale = 0.0f, maxAbs = 0.0f;
    for (int g = 0; g < 16; g++) {
      const float sc = scales[g];
      const float a = std::fabs(sc);
      if (a > maxAbs) {
        maxAbs = a;
        maxScale = sc;
      }
    }
    if (maxAbs < GROUP_EPS) continue;  // an all-zero block (d = +0)
    const float inv = -128.0f / maxScale;
    put_half(y + 208, 1.0f / inv);
    for (int g = 0; g < 16; g++) y[192 + g] = (u8)(std::min(127, ggml_nearest_int(inv * scales[g])) & 0xff);
    const float dAll = half_at(y + 208);
    for (int g = 0; g < 16; g++) {
      const float d = dAll * (float)(std::int8_t)y[192 + g];
      if (d == 0.0f) continue;  // the group keeps the levels of its fit
      const float* v = x + 16 * g;
      for (int i = 0; i < 16; i++) lv[16 * g + i] = (u8)(32 + clampi(ggml_nearest_int(v[i] / d), -32, 31));
    }
    for (int h = 0; h < 2; h++) {
      u8* ql = y + 64 * h;
      u8* qh = y + 128 + 32 * h;
      const u8* L = lv + 128 * h;
      for (int l = 0; l < 32; l++) {
        const int a = L[l], c = L[l + 32], e = L[l + 64], g = L[l + 96];
        ql[l] = (u8)((a & 15) | ((e & 15) << 4));
        ql[l + 32] = (u8)((c & 15) | ((g & 15) << 4));
        qh[l] = (u8)((a >> 4) | ((c >> 4) << 2) | ((e >> 4) << 4) | ((g >> 4) << 6));
      }
    }
  }
}

// ---- widening a source row (as src/kernels/ref decodeRow) ------------------------------------

void decode_blocks(int dt, const u8* p, i64 nb, float* o) {
  switch (dt) {
    case DT_Q8_0:
      for (i64 b = 0; b < nb; b++, p += 34, o += 32) {
        const float d = half_at(p);
        for (int j = 0; j < 32; j++) o[j] = (float)(std::int8_t)p[2 + j] * d;
      }
      break;
    case DT_Q4_0:
      for (i64 b = 0; b < nb; b++, p += 18, o += 32) {
        const float d = half_at(p);
        for (int j = 0; j < 16; j++) {
          o[j] = (float)((p[2 + j] & 15) - 8) * d;
          o[j + 16] = (float)((p[2 + j] >> 4) - 8) * d;
        }
      }
      break;
    case DT_Q5_0:
      for (i64 b = 0; b < nb; b++, p += 22, o += 32) {
        const float d = half_at(p);
        const std::uint32_t qh = (std::uint32_t)p[2] | ((std::uint32_t)p[3] << 8) | ((std::uint32_t)p[4] << 16) |
                                 ((std::uint32_t)p[5] << 24);
        for (int j = 0; j < 16; j++) {
          const int lo = (p[6 + j] & 15) | (int)(((qh >> j) & 1) << 4);
          const int hi = (p[6 + j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
          o[j] = (float)(lo - 16) * d;
          o[j + 16] = (float)(hi - 16) * d;
        }
      }
      break;
    case DT_Q4_1:
    case DT_Q5_1: {
      const bool five = dt == DT_Q5_1;
      for (i64 b = 0; b < nb; b++, p += five ? 24 : 20, o += 32) {
        const float d = half_at(p), m = half_at(p + 2);
        const std::uint32_t qh = five ? ((std::uint32_t)p[4] | ((std::uint32_t)p[5] << 8) |
                                         ((std::uint32_t)p[6] << 16) | ((std::uint32_t)p[7] << 24))
                                      : 0u;
        const u8* q = p + (five ? 8 : 4);
        for (int j = 0; j < 16; j++) {
          const int lo = (q[j] & 15) | (int)(((qh >> j) & 1) << 4);
          const int hi = (q[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
          o[j] = (float)lo * d + m;
          o[j + 16] = (float)hi * d + m;
        }
      }
      break;
    }
    case DT_Q4_K:
    case DT_Q5_K: {
      const bool five = dt == DT_Q5_K;
      const int bytes = five ? 176 : 144;
      for (i64 b = 0; b < nb; b++, p += bytes, o += 256) {
        const float d = half_at(p), dmin = half_at(p + 2);
        const u8* s = p + 4;
        const u8* qh = p + 16;
        for (int c = 0; c < 4; c++) {
          const float d1 = d * (float)k_scale(s, 2 * c), m1 = dmin * (float)k_min(s, 2 * c);
          const float d2 = d * (float)k_scale(s, 2 * c + 1), m2 = dmin * (float)k_min(s, 2 * c + 1);
          const u8* q = p + (five ? 48 : 16) + 32 * c;
          float* v = o + 64 * c;
          for (int l = 0; l < 32; l++) {
            int a = q[l] & 15, e = q[l] >> 4;
            if (five) {
              a += (qh[l] >> (2 * c)) & 1 ? 16 : 0;
              e += (qh[l] >> (2 * c + 1)) & 1 ? 16 : 0;
            }
            v[l] = d1 * (float)a - m1;
            v[l + 32] = d2 * (float)e - m2;
          }
        }
      }
      break;
    }
    case DT_Q6_K:
      for (i64 b = 0; b < nb; b++, p += 210, o += 256) {
        const float d = half_at(p + 208);
        for (int h = 0; h < 2; h++) {
          const u8* ql = p + 64 * h;
          const u8* qh = p + 128 + 32 * h;
          const std::int8_t* sc = reinterpret_cast<const std::int8_t*>(p + 192 + 8 * h);
          float* v = o + 128 * h;
          for (int l = 0; l < 32; l++) {
            const int is = l >> 4;
            const int q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            v[l] = d * (float)sc[is] * (float)q1;
            v[l + 32] = d * (float)sc[is + 2] * (float)q2;
            v[l + 64] = d * (float)sc[is + 4] * (float)q3;
            v[l + 96] = d * (float)sc[is + 6] * (float)q4;
          }
        }
      }
      break;
  }
}

void decode_row(const WView& w, i64 r, float* o) {
  const i64 K = w.cols;
  switch (w.dtype) {
    case DT_F32:
      std::memcpy(o, static_cast<const float*>(w.data) + r * w.ld, (std::size_t)K * 4);
      return;
    case DT_BF16: {
      const std::uint16_t* s = static_cast<const std::uint16_t*>(w.data) + r * w.ld;
      for (i64 k = 0; k < K; k++) {
        const std::uint32_t u = (std::uint32_t)s[k] << 16;
        std::memcpy(o + k, &u, 4);
      }
      return;
    }
    case DT_F16: {
      const std::uint16_t* s = static_cast<const std::uint16_t*>(w.data) + r * w.ld;
      for (i64 k = 0; k < K; k++) o[k] = f16_to_f32(s[k]);
      return;
    }
    case DT_F8: {
      const u8* s = static_cast<const u8*>(w.data) + r * w.ld;
      const float* e4 = e4m3_table();
      const float* sr = w.scale + (r / w.b0) * w.sCols;
      for (i64 k = 0; k < K; k++) o[k] = e4[s[k]] * sr[k / w.b1];
      return;
    }
    default:
      decode_blocks(w.dtype, static_cast<const u8*>(w.data) + r * w.ld, K / FORMATS[w.dtype].blockElems, o);
      return;
  }
}

void quantize_blocks(int type, const float* x, i64 nb, u8* y) {
  switch (type) {
    case DT_Q8_0: quant_q8_0(x, nb, y); break;
    case DT_Q4_0: quant_q4_0(x, nb, y); break;
    case DT_Q5_0: quant_q5_0(x, nb, y); break;
    case DT_Q4_1: quant_q4_1(x, nb, y); break;
    case DT_Q5_1: quant_q5_1(x, nb, y); break;
    case DT_Q4_K: quant_q45_k(false, x, nb, y); break;
    case DT_Q5_K: quant_q45_k(true, x, nb, y); break;
    case DT_Q6_K: quant_q6_k(x, nb, y); break;
  }
}

struct Job {
  u8* out;
  const WView* w;
  int type;
  i64 rowsPerJob, outRow, nb;
};

void run_job(void* ctx, i64 j) {
  const Job& q = *static_cast<const Job*>(ctx);
  const i64 r0 = j * q.rowsPerJob, r1 = std::min(q.w->rows, r0 + q.rowsPerJob);
  std::vector<float> row((std::size_t)q.w->cols);
  for (i64 r = r0; r < r1; r++) {
    decode_row(*q.w, r, row.data());
    quantize_blocks(q.type, row.data(), q.nb, q.out + r * q.outRow);
  }
}

}  // namespace

void op_quantize(std::uint8_t* out, const WView& w, int type) {
  if (w.rows <= 0 || w.cols <= 0) return;
  const FormatTraits& f = FORMATS[type];
  Job q;
  q.out = out;
  q.w = &w;
  q.type = type;
  q.nb = w.cols / f.blockElems;
  q.outRow = q.nb * f.blockBytes;
  // About 64K values per job: enough to hide the pool's hand-off, small enough to balance.
  q.rowsPerJob = std::max<i64>(1, 65536 / w.cols);
  const i64 njobs = (w.rows + q.rowsPerJob - 1) / q.rowsPerJob;
  const int nt = pool_threads();
  if (nt <= 1 || njobs == 1) {
    for (i64 j = 0; j < njobs; j++) run_job(&q, j);
    return;
  }
  pool_run(njobs, run_job, &q, nt);
}

}  // namespace dsv3
