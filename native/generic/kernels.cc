// Portable level: plain C++ over an 8-lane array "vector" (compilers vectorise it with
// whatever the baseline target allows). Same kernels, same reduction structure.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../common.h"
#include "../js_math.h"

namespace dsv3 {

// ---- exact widening of the 8- and 16-bit formats (shared with ops.cc) ----
float f16_to_f32(std::uint16_t h) {
  const std::uint32_t s = (std::uint32_t)(h & 0x8000) << 16;
  const int e = (h >> 10) & 0x1f;
  const std::uint32_t m = h & 0x3ff;
  float f;
  if (e == 0) {
    f = (float)m * 5.9604644775390625e-8f;  // m · 2^-24, exact
    return s ? -f : f;
  }
  std::uint32_t u;
  if (e == 31) u = s | 0x7f800000u | (m << 13);
  else u = s | ((std::uint32_t)(e - 15 + 127) << 23) | (m << 13);
  std::memcpy(&f, &u, 4);
  return f;
}

namespace {
struct E4m3Table {
  float v[256];
  E4m3Table() {
    for (int i = 0; i < 256; i++) {
      const float s = (i & 0x80) ? -1.0f : 1.0f;
      const int e = (i >> 3) & 0xf, m = i & 7;
      if (e == 15 && m == 7) v[i] = NAN;
      else if (e == 0) v[i] = s * std::ldexp((float)m / 8.0f, -6);
      else v[i] = s * std::ldexp(1.0f + (float)m / 8.0f, e - 7);
    }
  }
};
const E4m3Table g_e4m3;
}  // namespace

const float* e4m3_table() { return g_e4m3.v; }

namespace {

const int L = 8;
struct V {
  float v[L];
};
const int NT_MR = 2, NT_NR = 4;
const int NN_MR = 4, NN_NV = 2;
const std::int64_t PK_NC = 16, PK_KC = 512, PK_MC = 32;

static inline V vzero() {
  V r;
  for (int i = 0; i < L; i++) r.v[i] = 0.0f;
  return r;
}
static inline V vset1(float a) {
  V r;
  for (int i = 0; i < L; i++) r.v[i] = a;
  return r;
}
static inline V vload(const float* p) {
  V r;
  std::memcpy(r.v, p, sizeof r.v);
  return r;
}
static inline V vloadn(const float* p, int n) {
  V r = vzero();
  std::memcpy(r.v, p, (std::size_t)n * 4);
  return r;
}
static inline void vstore(float* p, V v) { std::memcpy(p, v.v, sizeof v.v); }
static inline void vstoren(float* p, V v, int n) { std::memcpy(p, v.v, (std::size_t)n * 4); }
#define DSV3_BIN(NAME, EXPR)             \
  static inline V NAME(V a, V b) {       \
    V r;                                 \
    for (int i = 0; i < L; i++) {        \
      const float x = a.v[i], y = b.v[i]; \
      r.v[i] = (EXPR);                   \
    }                                    \
    return r;                            \
  }
DSV3_BIN(vadd, x + y)
DSV3_BIN(vsub, x - y)
DSV3_BIN(vmul, x* y)
DSV3_BIN(vdiv, x / y)
DSV3_BIN(vmax, x > y ? x : y)
#undef DSV3_BIN
static inline V vfma(V a, V b, V c) {
  V r;
  for (int i = 0; i < L; i++) r.v[i] = a.v[i] * b.v[i] + c.v[i];
  return r;
}
static inline float vhsum(V a) {
  const float s0 = a.v[0] + a.v[4], s1 = a.v[1] + a.v[5], s2 = a.v[2] + a.v[6], s3 = a.v[3] + a.v[7];
  return (s0 + s2) + (s1 + s3);
}
/** vhsum of a, b, c, d (the first n of them) into out[0..n). */
static inline void vhsum4(float* out, V a, V b, V c, V d, int n) {
  const V v[4] = {a, b, c, d};
  for (int i = 0; i < n && i < 4; i++) out[i] = vhsum(v[i]);
}
static inline float vhmax(V a) {
  float m = a.v[0];
  for (int i = 1; i < L; i++) m = a.v[i] > m ? a.v[i] : m;
  return m;
}
static inline V vexp(V a) {
  V r;
  for (int i = 0; i < L; i++) r.v[i] = std::exp(a.v[i]);
  return r;
}
static inline V dec_bf16(const std::uint16_t* p) {
  V r;
  for (int i = 0; i < L; i++) {
    const std::uint32_t u = (std::uint32_t)p[i] << 16;
    std::memcpy(&r.v[i], &u, 4);
  }
  return r;
}
static inline V dec_bf16n(const std::uint16_t* p, int n) {
  std::uint16_t t[L] = {0};
  std::memcpy(t, p, (std::size_t)n * 2);
  return dec_bf16(t);
}
static inline V dec_f16(const std::uint16_t* p) {
  V r;
  for (int i = 0; i < L; i++) r.v[i] = f16_to_f32(p[i]);
  return r;
}
static inline V dec_f16n(const std::uint16_t* p, int n) {
  std::uint16_t t[L] = {0};
  std::memcpy(t, p, (std::size_t)n * 2);
  return dec_f16(t);
}
static inline float f8prep(float s) { return s; }
static inline V dec_f8(const std::uint8_t* p, V s) {
  V r;
  for (int i = 0; i < L; i++) r.v[i] = g_e4m3.v[p[i]] * s.v[i];
  return r;
}
static inline V dec_f8n(const std::uint8_t* p, int n, V s) {
  std::uint8_t t[L] = {0};
  std::memcpy(t, p, (std::size_t)n);
  return dec_f8(t, s);
}
// Raw decoders for FP8 with the block scale on x: the exact e4m3 values (the table), no scale.
static const int F8_RAW_EXP = 0;
static inline V dec_f8r(const std::uint8_t* p) { return dec_f8(p, vset1(1.0f)); }
static inline V dec_f8rq(const std::uint8_t* p) { return dec_f8(p, vset1(1.0f)); }
static inline V dec_f8rn(const std::uint8_t* p, int n) { return dec_f8n(p, n, vset1(1.0f)); }
static inline V dec_f8s(const std::uint8_t* p, V s) { return dec_f8(p, s); }
static inline V dec_f8q(const std::uint8_t* p, V s) { return dec_f8(p, s); }
static inline V dec_f8sq(const std::uint8_t* p, V s) { return dec_f8(p, s); }
static inline bool f8_has_nan(const std::uint8_t*, std::int64_t) { return false; }  // the table has NaN
static inline V dec_f8sn(const std::uint8_t* p, int n, V s) { return dec_f8n(p, n, s); }

// Integer lanes for the block-format decoders (kernels_impl.h, QDec): L int32 values.
struct VI {
  std::int32_t v[L];
};
#define DSV3_VI_MAP(EXPR)          \
  VI r;                            \
  for (int i = 0; i < L; i++) r.v[i] = (EXPR); \
  return r;
static inline VI vi_u8(const std::uint8_t* p) { DSV3_VI_MAP((std::int32_t)p[i]) }
static inline VI vi_i8(const std::uint8_t* p) { DSV3_VI_MAP((std::int32_t)(std::int8_t)p[i]) }
/** Lanes i < 8: byte i of v (from the low end). */
static inline VI vi_bytes64(std::uint64_t v) { DSV3_VI_MAP((std::int32_t)((v >> (8 * i)) & 255)) }
static inline VI vi_set1(int a) { DSV3_VI_MAP(a) }
static inline VI vi_and(VI a, VI b) { DSV3_VI_MAP(a.v[i] & b.v[i]) }
static inline VI vi_or(VI a, VI b) { DSV3_VI_MAP(a.v[i] | b.v[i]) }
static inline VI vi_sub(VI a, VI b) { DSV3_VI_MAP(a.v[i] - b.v[i]) }
static inline VI vi_srli(VI a, int n) { DSV3_VI_MAP((std::int32_t)((std::uint32_t)a.v[i] >> n)) }
static inline VI vi_slli(VI a, int n) { DSV3_VI_MAP((std::int32_t)((std::uint32_t)a.v[i] << n)) }
/** Lane l: 16 if bit l of w is set, else 0. */
static inline VI vi_bit16(std::uint32_t w) { DSV3_VI_MAP((std::int32_t)(((w >> i) & 1u) << 4)) }
#undef DSV3_VI_MAP
static inline V vi_cvt(VI a) {
  V r;
  for (int i = 0; i < L; i++) r.v[i] = (float)a.v[i];
  return r;
}
/** IEEE half → float32, exact. */
static inline float h2f(std::uint16_t h) { return f16_to_f32(h); }

#ifndef DSV3_SHORT_ROW
#define DSV3_SHORT_ROW 2048
#endif
static const std::int64_t SHORT_ROW_BYTES = DSV3_SHORT_ROW;  // decode rows up to this long go one at a time

#include "../kernels_impl.h"
#include "../qdot_impl.h"
#define DSV3_EXP_LANES 2
#include "../exp_impl.h"

const KernelTable table = {
    "generic", L, 8, gemm_nt_direct, gemm_nt_packed, gemm_nn, softmax_rows, silu_mul, attn_latent, attention,
    decode_row, XQ_TILE_ROWS, xq_tile_bytes, quantize_x, exp_sum,
};

}  // namespace

const KernelTable* generic_table() { return &table; }

}  // namespace dsv3
