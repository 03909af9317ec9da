// The kernels of one instruction-set level, written once over a small vector interface.
// Included by native/generic/kernels.cc and native/arch/x86/*.cc INSIDE an anonymous
// namespace, after they define:
//   L (lanes), V (vector of L floats), NT_MR/NT_NR, NN_MR/NN_NV, PK_NC/PK_KC/PK_MC, and
//   vzero vset1 vload vloadn vstore vstoren vfma vadd vsub vmul vdiv vmax vhsum vhsum4 vexp,
//   dec_bf16(n) dec_f16(n) dec_f8(n) dec_f8s(n) (F8: fast/slow scale handling), f8prep,
//   and for the block formats VI (L int32 lanes) with vi_u8 vi_i8 vi_set1 vi_and vi_or
//   vi_sub vi_srli vi_slli vi_bit16 vi_bytes64 vi_cvt, and h2f (exact half → float); a
//   16-lane level may define DSV3_QLUT with vlut16 vlut32 viota (table lookups).
// Everything here has internal linkage, so each level keeps its own copy.
//
// Numerics (the contract that makes results batch invariant): one output of a matmul
// (gemm_nt) is the sum over k of x[k]·w[k] accumulated in L float32 lanes, lane l taking
// k ≡ l (mod L) in increasing k with one FMA each (a partial last vector is zero-padded),
// then reduced by the fixed tree of vhsum. The decode path, the packed prefill path and
// the attention kernels all follow exactly this order. One output of gemm_nn (matmulT,
// attention's P·V) is a single FMA chain over r in increasing order. Block-format weights
// (ggml Q4_0 … Q6_K) take llama.cpp's integer arithmetic in gemm_nt (qdot_impl.h, its own
// contract, equally batch invariant); in gemm_nn (matmulT) and decode_row (embedding) they
// are dequantised exactly as ggml's dequantize_row_* computes each value (QDec) and then
// enter the orders above.

#if defined(__GNUC__) && !defined(__clang__)
// The direct path passes accio = nullptr together with last = true, so the accumulator
// store is unreachable there; GCC's object-size analysis cannot see that.
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#pragma GCC diagnostic ignored "-Warray-bounds"
#endif

typedef std::int64_t I;

static inline I imin(I a, I b) { return a < b ? a : b; }

// ---- weight decoders: 16-bit raw bits, e4m3 codes, or f32 ----
template <int DT, bool SLOW>
struct Dec;
template <>
struct Dec<DT_F32, false> {
  typedef float E;
  static const bool F8 = false;
  static const bool BLK = false;
  static inline V ld(const E* p, V) { return vload(p); }
  static inline V ldq(const E* p, V) { return vload(p); }
  static inline V ldn(const E* p, int n, V) { return vloadn(p, n); }
  static inline float prep(float s) { return s; }
};
template <>
struct Dec<DT_BF16, false> {
  typedef std::uint16_t E;
  static const bool F8 = false;
  static const bool BLK = false;
  static inline V ld(const E* p, V) { return dec_bf16(p); }
  static inline V ldq(const E* p, V) { return dec_bf16(p); }
  static inline V ldn(const E* p, int n, V) { return dec_bf16n(p, n); }
  static inline float prep(float s) { return s; }
};
template <>
struct Dec<DT_F16, false> {
  typedef std::uint16_t E;
  static const bool F8 = false;
  static const bool BLK = false;
  static inline V ld(const E* p, V) { return dec_f16(p); }
  static inline V ldq(const E* p, V) { return dec_f16(p); }
  static inline V ldn(const E* p, int n, V) { return dec_f16n(p, n); }
  static inline float prep(float s) { return s; }
};
template <>
struct Dec<DT_F8, false> {
  typedef std::uint8_t E;
  static const bool F8 = true;
  static const bool BLK = false;
  static inline V ld(const E* p, V s) { return dec_f8(p, s); }
  static inline V ldq(const E* p, V s) { return dec_f8q(p, s); }
  static inline V ldn(const E* p, int n, V s) { return dec_f8n(p, n, s); }
  static inline float prep(float s) { return f8prep(s); }
};
template <>
struct Dec<DT_F8, true> {
  typedef std::uint8_t E;
  static const bool F8 = true;
  static const bool BLK = false;
  static inline V ld(const E* p, V s) { return dec_f8s(p, s); }
  static inline V ldq(const E* p, V s) { return dec_f8sq(p, s); }
  static inline V ldn(const E* p, int n, V s) { return dec_f8sn(p, n, s); }
  static inline float prep(float s) { return s; }
};

// FP8 with the block scale on x (f8_xg): raw e4m3 values, no per-weight scale. F8 = true
// keeps the per-block NaN check (codes 0x7F/0xFF decode to NaN); the scale argument is
// unused.
const int DT_F8R = 100;
template <>
struct Dec<DT_F8R, false> {
  typedef std::uint8_t E;
  static const bool F8 = true;
  static const bool BLK = false;
  static inline V ld(const E* p, V) { return dec_f8r(p); }
  static inline V ldq(const E* p, V) { return dec_f8rq(p); }
  static inline V ldn(const E* p, int n, V) { return dec_f8rn(p, n); }
  static inline float prep(float s) { return s; }
};

// ---- ggml block formats (common.h FORMATS) ----
// A row is a run of blocks. For each format QDec<DT>: prep(b, st) reads the block's scales
// once, then dec32(b, st, s, out) dequantises its 32 values [32·s, 32·s + 32) into
// out[0 .. 32/L). Each value is the float32 that ggml's dequantize_row_* gives: scales
// widened exactly from f16, and the same float operations. The products involved are exact
// in float32 (an f16 scale has 11 significant bits, a 6- or 8-bit sub-scale and a quant at
// most 7 and 6 more), so the only rounding is the K-quants' subtraction of the min,
// d1·q − m1, which one FMA computes with the same single rounding (its product is exact).
// Rows hold whole blocks, so a row never ends inside a vector.
static_assert(32 % L == 0, "a 32-value sub-block is whole vectors");
static inline std::uint16_t rd16(const std::uint8_t* p) { return (std::uint16_t)(p[0] | (p[1] << 8)); }
static inline std::uint32_t rd32(const std::uint8_t* p) {
  return (std::uint32_t)p[0] | ((std::uint32_t)p[1] << 8) | ((std::uint32_t)p[2] << 16) | ((std::uint32_t)p[3] << 24);
}
/**
 * *p in every lane, read from memory: a block's scales are stored once by prep and then
 * broadcast by a load (without the barrier, the compiler keeps them in a register and
 * broadcasts each lane with a shuffle, the scarcer unit in these loops).
 */
static inline V vbcast(const float* p) {
#if defined(__GNUC__)
  __asm__("" : "+r"(p));
#endif
  return vset1(*p);
}
/** Low (hi = false) or high nibbles of L bytes, as int32 lanes. */
static inline VI nibbles(const std::uint8_t* p, bool hi) {
  const VI b = vi_u8(p);
  return hi ? vi_srli(b, 4) : vi_and(b, vi_set1(15));
}

template <int DT>
struct QDec;
template <int DT>
struct QBase {
  typedef std::uint8_t E;
  static const bool F8 = false;
  static const bool BLK = true;
  static const int BE = FORMATS[DT].blockElems, BB = FORMATS[DT].blockBytes;
  static_assert(BE % 32 == 0, "blocks are whole 32-value sub-blocks");
};
// With DSV3_QLUT (AVX-512), the level has one-instruction lookups in a table of 16 or 32
// floats held in vectors: vlut16(t, i) = t[i & 15], vlut32(lo, hi, i) = (lo ‖ hi)[i & 31],
// and viota() = 0, 1, …, 15. The 4- and 5-bit formats then compute the table of a block's
// (or sub-block's) possible values, by the very operations above, and look each value up
// instead of converting and scaling it: the same numbers, fewer instructions.
#if defined(DSV3_QLUT)
static_assert(L == 16, "the lookup tables are one vector of 16");
#endif

/** The state of the one-scale formats: d, broadcast (with QLUT: the table of values). */
struct QSt0 {
  V d;
#if defined(DSV3_QLUT)
  V t0, t1;
#endif
};
// Q8_0: f16 d, 32 int8 q; w = q·d.
template <>
struct QDec<DT_Q8_0> : QBase<DT_Q8_0> {
  typedef QSt0 St;
  static inline void prep(const std::uint8_t* b, St& st) { st.d = vset1(h2f(rd16(b))); }
  static inline void dec32(const std::uint8_t* b, const St& st, int, V* out) {
    for (int v = 0; v < 32 / L; v++) out[v] = vmul(vi_cvt(vi_i8(b + 2 + v * L)), st.d);
  }
};
// Q4_0: f16 d, 16 bytes; value j < 16 is the low nibble of byte j, value 16 + j its high
// nibble; w = (q − 8)·d.
template <>
struct QDec<DT_Q4_0> : QBase<DT_Q4_0> {
  typedef QSt0 St;
#if defined(DSV3_QLUT)
  static inline void prep(const std::uint8_t* b, St& st) {
    st.d = vset1(h2f(rd16(b)));
    st.t0 = vmul(vsub(viota(), vset1(8.0f)), st.d);
  }
  static inline void dec32(const std::uint8_t* b, const St& st, int, V* out) {
    const VI q = vi_u8(b + 2);  // the low nibbles index directly (vlut16 takes i & 15)
    out[0] = vlut16(st.t0, q);
    out[1] = vlut16(st.t0, vi_srli(q, 4));
  }
#else
  static inline void prep(const std::uint8_t* b, St& st) { st.d = vset1(h2f(rd16(b))); }
  static inline void dec32(const std::uint8_t* b, const St& st, int, V* out) {
    for (int v = 0; v < 32 / L; v++) {
      const int j = v * L;
      out[v] = vmul(vi_cvt(vi_sub(nibbles(b + 2 + (j & 15), j >= 16), vi_set1(8))), st.d);
    }
  }
#endif
};
// Q5_0: f16 d, a 32-bit word whose bit j is value j's fifth bit, then the nibbles as in
// Q4_0; w = (q − 16)·d.
template <>
struct QDec<DT_Q5_0> : QBase<DT_Q5_0> {
  typedef QSt0 St;
  static inline void prep(const std::uint8_t* b, St& st) {
    st.d = vset1(h2f(rd16(b)));
#if defined(DSV3_QLUT)
    st.t0 = vmul(vsub(viota(), vset1(16.0f)), st.d);
    st.t1 = vmul(viota(), st.d);
#endif
  }
  static inline void dec32(const std::uint8_t* b, const St& st, int, V* out) {
    const std::uint32_t qh = rd32(b + 2);
    for (int v = 0; v < 32 / L; v++) {
      const int j = v * L;
      const VI q = vi_or(nibbles(b + 6 + (j & 15), j >= 16), vi_bit16(qh >> j));
#if defined(DSV3_QLUT)
      out[v] = vlut32(st.t0, st.t1, q);
#else
      out[v] = vmul(vi_cvt(vi_sub(q, vi_set1(16))), st.d);
#endif
    }
  }
};
// Q4_1 / Q5_1: f16 d, f16 m, then (Q5_1) the 32-bit word of fifth bits, then the nibbles as in
// Q4_0; w = q·d + m (q·d exact, so one rounding, the addition's).
struct QSt1 {
  V d, m;
#if defined(DSV3_QLUT)
  V t0, t1;
#endif
};
template <>
struct QDec<DT_Q4_1> : QBase<DT_Q4_1> {
  typedef QSt1 St;
  static inline void prep(const std::uint8_t* b, St& st) {
    st.d = vset1(h2f(rd16(b)));
    st.m = vset1(h2f(rd16(b + 2)));
#if defined(DSV3_QLUT)
    st.t0 = vadd(vmul(viota(), st.d), st.m);
#endif
  }
  static inline void dec32(const std::uint8_t* b, const St& st, int, V* out) {
#if defined(DSV3_QLUT)
    const VI q = vi_u8(b + 4);
    out[0] = vlut16(st.t0, q);
    out[1] = vlut16(st.t0, vi_srli(q, 4));
#else
    for (int v = 0; v < 32 / L; v++) {
      const int j = v * L;
      out[v] = vadd(vmul(vi_cvt(nibbles(b + 4 + (j & 15), j >= 16)), st.d), st.m);
    }
#endif
  }
};
template <>
struct QDec<DT_Q5_1> : QBase<DT_Q5_1> {
  typedef QSt1 St;
  static inline void prep(const std::uint8_t* b, St& st) {
    st.d = vset1(h2f(rd16(b)));
    st.m = vset1(h2f(rd16(b + 2)));
#if defined(DSV3_QLUT)
    st.t0 = vadd(vmul(viota(), st.d), st.m);
    st.t1 = vadd(vmul(vadd(viota(), vset1(16.0f)), st.d), st.m);
#endif
  }
  static inline void dec32(const std::uint8_t* b, const St& st, int, V* out) {
    const std::uint32_t qh = rd32(b + 4);
    for (int v = 0; v < 32 / L; v++) {
      const int j = v * L;
      const VI q = vi_or(nibbles(b + 8 + (j & 15), j >= 16), vi_bit16(qh >> j));
#if defined(DSV3_QLUT)
      out[v] = vlut32(st.t0, st.t1, q);
#else
      out[v] = vadd(vmul(vi_cvt(q), st.d), st.m);
#endif
    }
  }
};
/**
 * Q4_K/Q5_K: f16 d, f16 dmin, then 12 bytes packing a 6-bit scale sc and min m for each of
 * the 8 sub-blocks (sub-block j < 4: the low 6 bits of bytes j and j + 4; j >= 4: the low
 * (sc) or high (m) nibble of byte j + 4, topped by the two high bits of byte j − 4 (sc) or
 * j (m)). st holds d1 = d·sc and −m1 = −(dmin·m) per sub-block.
 */
struct QStK {
  alignas(64) float d1[16];
  alignas(64) float nm1[16];
};
static inline void kq_prep(const std::uint8_t* b, QStK& st) {
  const std::uint32_t w0 = rd32(b + 4), w1 = rd32(b + 8), w2 = rd32(b + 12);
  const std::uint32_t low6 = 0x3f3f3f3fu, low4 = 0x0f0f0f0fu, two = 0x03030303u;
  // Byte j of sc / mn: sub-block j's scale / min.
  const std::uint64_t sc = (w0 & low6) | (std::uint64_t)((w2 & low4) | (((w0 >> 6) & two) << 4)) << 32;
  const std::uint64_t mn = (w1 & low6) | (std::uint64_t)(((w2 >> 4) & low4) | (((w1 >> 6) & two) << 4)) << 32;
  // L >= 8 lanes: one vector holds the 8 sub-blocks.
  vstore(st.d1, vmul(vi_cvt(vi_bytes64(sc)), vset1(h2f(rd16(b)))));
  vstore(st.nm1, vmul(vi_cvt(vi_bytes64(mn)), vset1(-h2f(rd16(b + 2)))));
}
// Q4_K: 128 bytes of nibbles after the scales: sub-block s takes the low (s even) or high
// (s odd) nibbles of bytes 32·(s/2) .. +32; w = d1·q − m1.
template <>
struct QDec<DT_Q4_K> : QBase<DT_Q4_K> {
  typedef QStK St;
  static inline void prep(const std::uint8_t* b, St& st) { kq_prep(b, st); }
  static inline void dec32(const std::uint8_t* b, const St& st, int s, V* out) {
    const V d1 = vbcast(st.d1 + s), nm1 = vbcast(st.nm1 + s);
    const std::uint8_t* q = b + 16 + (s >> 1) * 32;
#if defined(DSV3_QLUT)
    const V t = vfma(d1, viota(), nm1);
    for (int v = 0; v < 2; v++) {
      const VI i = vi_u8(q + v * L);  // low nibbles index directly (vlut16 takes i & 15)
      out[v] = vlut16(t, (s & 1) ? vi_srli(i, 4) : i);
    }
#else
    for (int v = 0; v < 32 / L; v++) out[v] = vfma(d1, vi_cvt(nibbles(q + v * L, s & 1)), nm1);
#endif
  }
};
// Q5_K: as Q4_K with 32 bytes of high bits after the scales (the nibbles follow them): value
// l of sub-block s has its fifth bit in bit s of byte l.
template <>
struct QDec<DT_Q5_K> : QBase<DT_Q5_K> {
  typedef QStK St;
  static inline void prep(const std::uint8_t* b, St& st) { kq_prep(b, st); }
  static inline void dec32(const std::uint8_t* b, const St& st, int s, V* out) {
    const V d1 = vbcast(st.d1 + s), nm1 = vbcast(st.nm1 + s);
    const std::uint8_t* q = b + 48 + (s >> 1) * 32;
#if defined(DSV3_QLUT)
    const V t0 = vfma(d1, viota(), nm1), t1 = vfma(d1, vadd(viota(), vset1(16.0f)), nm1);
#endif
    for (int v = 0; v < 32 / L; v++) {
      const VI hb = vi_u8(b + 16 + v * L);  // bit s moved to bit 4
      const VI h = vi_and(s <= 4 ? vi_slli(hb, 4 - s) : vi_srli(hb, s - 4), vi_set1(16));
#if defined(DSV3_QLUT)
      out[v] = vlut32(t0, t1, vi_or(nibbles(q + v * L, s & 1), h));
#else
      out[v] = vfma(d1, vi_cvt(vi_or(nibbles(q + v * L, s & 1), h)), nm1);
#endif
    }
  }
};
// Q6_K: 128 bytes of low 4 bits, 64 bytes of 2-bit high parts, 16 int8 scales (one per 16
// values), f16 d. Sub-block s = 4h + g: low (g < 2) or high nibbles of bytes
// 64h + 32·(g & 1) .. +32, high parts in bits 2g, 2g+1 of bytes 128 + 32h .. +32, scale
// 8h + 2g + l/16 for value l; w = (d·sc)·(q − 32).
struct QSt6 {
  alignas(64) float ds[16];  // d·sc
};
template <>
struct QDec<DT_Q6_K> : QBase<DT_Q6_K> {
  typedef QSt6 St;
  static inline void prep(const std::uint8_t* b, St& st) {
    const V d = vset1(h2f(rd16(b + 208)));
    for (int v = 0; v < 16 / L; v++) vstore(st.ds + v * L, vmul(d, vi_cvt(vi_i8(b + 192 + v * L))));
  }
  static inline void dec32(const std::uint8_t* b, const St& st, int s, V* out) {
    const int h = s >> 2, g = s & 3;
    const std::uint8_t* ql = b + h * 64 + (g & 1) * 32;
    const std::uint8_t* qh = b + 128 + h * 32;
    const int si = h * 8 + 2 * g;
    for (int v = 0; v < 32 / L; v++) {
      const int l = v * L;
      const VI hb = vi_u8(qh + l);  // bits 2g, 2g+1 moved to bits 4, 5
      const VI hi = vi_and(g == 3 ? vi_srli(hb, 2) : vi_slli(hb, 4 - 2 * g), vi_set1(0x30));
      const VI q = vi_sub(vi_or(nibbles(ql + l, g >= 2), hi), vi_set1(32));
      out[v] = vmul(vbcast(st.ds + si + l / 16), vi_cvt(q));
    }
  }
};
/** X(code) for every block format. */
#define DSV3_BLOCK_FORMATS(X) \
  X(DT_Q4_0) X(DT_Q5_0) X(DT_Q8_0) X(DT_Q4_1) X(DT_Q5_1) X(DT_Q4_K) X(DT_Q5_K) X(DT_Q6_K)

// ---- thread-local scratch (grown on demand, kept for the thread's life) ----
struct Scratch {
  float* p = nullptr;
  I cap = 0;
  ~Scratch() { std::free(p); }
  float* get(I n) {
    if (n > cap) {
      std::free(p);
      I c = n + 1024;
      p = static_cast<float*>(std::aligned_alloc(64, (std::size_t)(((c * 4) + 63) / 64 * 64)));
      cap = p ? c : 0;
    }
    return p;
  }
};
static thread_local Scratch tl_panel, tl_acc, tl_scores, tl_scores2, tl_xg;

// =====================================================================================
/** out[i·ldo + j] = the lane sum of acc[i][j] for j < nv (the fixed tree of vhsum). */
template <int MR, int NR>
static inline void nt_reduce(const V (&acc)[MR][NR], float* out, I ldo, int nv) {
  // vhsum4 reduces four accumulators at once, by vhsum's tree (the same sums).
  for (int i = 0; i < MR; i++) {
    int j = 0;
    for (; j + 4 <= NR; j += 4)
      if (j < nv) vhsum4(out + i * ldo + j, acc[i][j], acc[i][j + 1], acc[i][j + 2], acc[i][j + 3], nv - j);
    if (j < NR && j < nv) {
      const V z = vzero();
      vhsum4(out + i * ldo + j, acc[i][j], j + 1 < NR ? acc[i][j + 1] : z, j + 2 < NR ? acc[i][j + 2] : z, z, nv - j);
    }
  }
}

// gemm_nt micro-tile: MR rows of x by NR rows of W, over klen columns (a K chunk that
// starts on a multiple of L). `bk` splits the chunk into scale blocks (F8: b1, else klen);
// sp[j] points at the scale of row j's first block. With `first`, accumulators start at
// zero, otherwise they are reloaded from accio; with `last`, the reduced sums go to out,
// otherwise the accumulators go back to accio.
template <class D, int MR, int NR>
static void nt_tile(const float* x, I ldx, const typename D::E* const* w, const float* const* sp, I klen,
                    I bk, float* accio, I accld, bool first, bool last, float* out, I ldo, int nv,
                    bool nanfree = false) {
  V acc[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) acc[i][j] = first ? vzero() : vload(accio + i * accld + j * L);
  V s[NR];
  for (int j = 0; j < NR; j++) s[j] = vzero();
  for (I kb0 = 0; kb0 < klen; kb0 += bk) {
    const I kend = imin(klen, kb0 + bk);
    if (D::F8)
      for (int j = 0; j < NR; j++) s[j] = vset1(D::prep(sp[j][kb0 / bk]));
    I k = kb0;
    // F8: codes 0x7F/0xFF (NaN) are looked for once per block, so that the inner loop can
    // use the decoder without the per-vector NaN fix-up (ldq) when there are none; a weight
    // known to hold none (nanfree, checked once per matrix by the caller) skips the look.
    bool clean = true;
    if (D::F8 && !nanfree)
      for (int j = 0; j < NR; j++) clean = clean && !f8_has_nan(reinterpret_cast<const std::uint8_t*>(w[j] + kb0), kend - kb0);
#define DSV3_NT_LOOP(LD)                                                      \
    for (; k + L <= kend; k += L) {                                           \
      V wv[NR];                                                               \
      for (int j = 0; j < NR; j++) wv[j] = D::LD(w[j] + k, s[j]);             \
      for (int i = 0; i < MR; i++) {                                          \
        const V xv = vload(x + i * ldx + k);                                  \
        for (int j = 0; j < NR; j++) acc[i][j] = vfma(xv, wv[j], acc[i][j]);  \
      }                                                                       \
    }
    if (clean) {
      DSV3_NT_LOOP(ldq)
    } else {
      DSV3_NT_LOOP(ld)
    }
#undef DSV3_NT_LOOP
    if (k < kend) {
      const int n = (int)(kend - k);
      V wv[NR];
      for (int j = 0; j < NR; j++) wv[j] = D::ldn(w[j] + k, n, s[j]);
      for (int i = 0; i < MR; i++) {
        const V xv = vloadn(x + i * ldx + k, n);
        for (int j = 0; j < NR; j++) acc[i][j] = vfma(xv, wv[j], acc[i][j]);
      }
    }
  }
  if (last) {
    nt_reduce<MR, NR>(acc, out, ldo, nv);
  } else {
    for (int i = 0; i < MR; i++)
      for (int j = 0; j < NR; j++) vstore(accio + i * accld + j * L, acc[i][j]);
  }
}

template <class D, int NR>
static void nt_tile_m(int mr, const float* x, I ldx, const typename D::E* const* w, const float* const* sp,
                      I klen, I bk, float* accio, I accld, bool first, bool last, float* out, I ldo, int nv,
                      bool nanfree = false) {
  switch (mr) {
#define DSV3_CASE(R)                                                                                  \
  case R:                                                                                             \
    if (R <= NT_MR) nt_tile<D, (R <= NT_MR ? R : 1), NR>(x, ldx, w, sp, klen, bk, accio, accld, first, last, out, ldo, nv, nanfree); \
    break;
    DSV3_CASE(1)
    DSV3_CASE(2)
    DSV3_CASE(3)
    DSV3_CASE(4)
    DSV3_CASE(5)
    DSV3_CASE(6)
#undef DSV3_CASE
  }
}

/** Scale block structure of W for the gemm_nt order: F8 blocks matter only when b1 % L != 0. */
static inline I nt_bk(const WView& w) {
  return (w.dtype == DT_F8 && w.b1 % L != 0) ? w.b1 : (I)1 << 62;
}

template <class D, int NR>
static void nt_direct_nr(const GemmNT* g, I m0, I m1, I n0, I n1) {
  typedef typename D::E E;
  const WView& w = g->w;
  const E* base = static_cast<const E*>(w.data);
  const I K = w.cols;
  const I bk = D::F8 ? w.b1 : (K > 0 ? K : 1);
  for (I nt = n0; nt < n1; nt += NR) {
    const int nv = (int)imin(NR, n1 - nt);
    const E* wp[NR];
    const float* sp[NR];
    for (int j = 0; j < NR; j++) {
      const I row = g->r0 + nt + (j < nv ? j : nv - 1);
      wp[j] = base + row * w.ld;
      sp[j] = D::F8 ? w.scale + (row / w.b0) * w.sCols : nullptr;
    }
    for (I mi = m0; mi < m1; mi += NT_MR) {
      const int mr = (int)imin(NT_MR, m1 - mi);
      nt_tile_m<D, NR>(mr, g->x + mi * g->ldx, g->ldx, wp, sp, K, bk, nullptr, 0, true, true,
                       g->out + mi * g->ldo + nt, g->ldo, nv, w.nanfree != 0);
    }
  }
}

// =====================================================================================
// FP8 weights. The golden README allows a different but exact-in-spirit dequantization
// order; here the 128x128 block scale goes on x instead of on each weight: for the rows of
// W in scale-row group G, x^G[k] = (x[k] · 2^e) · scale[G][k / b1] (one rounding, as
// x · (w · scale) has one), and W enters raw (e4m3 · 2^-F8_RAW_EXP on x86, where the bits
// are placed without a multiply), so decoding costs three vector instructions per 16
// weights instead of five (measured alone on Zen 4: 20 against 10-13 G weights/s per core).
// The dot product then follows the gemm_nt order over x^G and the raw weights, and the sum
// is multiplied by 2^(F8_RAW_EXP - e), exactly. The power e is chosen per row of x from
// its largest |x| (about 2^20 after scaling), so products stay far from both float32's
// subnormal range and overflow. Every number depends only on its own row of x and row of
// W, so the packed and direct paths agree and results do not depend on M. Scales with
// |s| >= 256 (f8slow) keep the per-weight path.

/** Per row of x: its prescale xs[i] = 2^e and the factor post[i] = 2^(F8_RAW_EXP - e). */
static void f8_rowscale(const float* x, I ldx, I m, I K, float* xs, float* post) {
  for (I i = 0; i < m; i++) {
    const float* src = x + i * ldx;
    V big = vzero();
    I k = 0;
    for (; k + L <= K; k += L) {
      const V v = vload(src + k);
      big = vmax(big, vmax(v, vsub(vzero(), v)));
    }
    if (k < K) {
      const V v = vloadn(src + k, (int)(K - k));
      big = vmax(big, vmax(v, vsub(vzero(), v)));
    }
    // e brings the largest |x| near 2^20 (0 for rows of zeros, NaN or inf: those stay so),
    // within [F8_RAW_EXP - 126, 126] so that both factors are normal floats.
    const float b = vhmax(big);
    int e = b > 0 && std::isfinite(b) ? 20 - std::ilogb(b) : 0;
    e = e < F8_RAW_EXP - 126 ? F8_RAW_EXP - 126 : e > 126 ? 126 : e;
    xs[i] = std::ldexp(1.0f, e);
    post[i] = std::ldexp(1.0f, F8_RAW_EXP - e);
  }
}

/** x^G for rows [0, m) of x into xg (stride K), with the prescales of f8_rowscale. */
static void f8_xg(const float* x, I ldx, I m, const WView& w, I G, const float* xs, float* xg) {
  const I K = w.cols;
  const float* srow = w.scale + G * w.sCols;
  for (I i = 0; i < m; i++) {
    const float* src = x + i * ldx;
    float* d = xg + i * K;
    const V vx = vset1(xs[i]);
    for (I k0 = 0; k0 < K; k0 += w.b1) {
      const V sc = vset1(srow[k0 / w.b1]);
      const I k1 = imin(K, k0 + w.b1);
      I k = k0;
      for (; k + L <= k1; k += L) vstore(d + k, vmul(vmul(vload(src + k), vx), sc));
      if (k < k1) vstoren(d + k, vmul(vmul(vloadn(src + k, (int)(k1 - k)), vx), sc), (int)(k1 - k));
    }
  }
}

static void scale_rows(float* out, I ldo, I m, I n, const float* post) {
  for (I i = 0; i < m; i++)
    for (I j = 0; j < n; j++) out[i * ldo + j] *= post[i];
}

static const float kOne[1] = {1.0f};

template <int NR>
static void nt_direct_f8(const GemmNT* g, I m0, I m1, I n0, I n1) {
  typedef Dec<DT_F8R, false> D;
  const WView& w = g->w;
  const std::uint8_t* base = static_cast<const std::uint8_t*>(w.data);
  const I K = w.cols, m = m1 - m0;
  float* xg = tl_xg.get(m * K + 2 * m);
  float* xs = xg + m * K;
  float* post = xs + m;
  f8_rowscale(g->x + m0 * g->ldx, g->ldx, m, K, xs, post);
  const float* sp[NR];
  for (int j = 0; j < NR; j++) sp[j] = kOne;
  for (I ga = n0; ga < n1;) {
    const I G = (g->r0 + ga) / w.b0;
    const I gb = imin(n1, (G + 1) * w.b0 - g->r0);  // this scale group's rows: [ga, gb)
    f8_xg(g->x + m0 * g->ldx, g->ldx, m, w, G, xs, xg);
    for (I nt = ga; nt < gb; nt += NR) {
      const int nv = (int)imin(NR, gb - nt);
      const std::uint8_t* wp[NR];
      for (int j = 0; j < NR; j++) wp[j] = base + (g->r0 + nt + (j < nv ? j : nv - 1)) * w.ld;
      for (I mi = m0; mi < m1; mi += NT_MR) {
        const int mr = (int)imin(NT_MR, m1 - mi);
        nt_tile_m<D, NR>(mr, xg + (mi - m0) * K, K, wp, sp, K, K > 0 ? K : 1, nullptr, 0, true, true,
                         g->out + mi * g->ldo + nt, g->ldo, nv, w.nanfree != 0);
      }
    }
    scale_rows(g->out + m0 * g->ldo + ga, g->ldo, m, gb - ga, post);
    ga = gb;
  }
}

/**
 * The decode path. W is streamed once: NT_NR rows side by side (independent FMA chains),
 * except for short rows and for a single x row, which go one row of W at a time so that W
 * is read as a single sequential stream (interleaved streams defeat the hardware
 * prefetchers; measured on Zen 4, a 102400x2048 BF16 head at M=1 streams at 34 GB/s this
 * way against 31 GB/s with 6 rows side by side, and bench-s decode lost about 25% with
 * rows side by side). When the weights fit in the last-level cache (g->resident) there is
 * no stream to keep, and one row at a time is bound by the latency of its single FMA
 * chain instead, so rows go side by side (the shipped 9M model decodes 15-25% faster).
 * All give the same numbers: the order within one output is the same.
 */
static inline bool one_row_at_a_time(const GemmNT* g, I m, I eltBytes) {
  return !g->resident && (m == 1 || (m <= NT_MR && eltBytes * g->w.cols <= SHORT_ROW_BYTES));
}

template <class D>
static void nt_direct_t(const GemmNT* g, I m0, I m1, I n0, I n1) {
  if (one_row_at_a_time(g, m1 - m0, sizeof(typename D::E))) nt_direct_nr<D, 1>(g, m0, m1, n0, n1);
  else nt_direct_nr<D, NT_NR>(g, m0, m1, n0, n1);
}

// Block formats take the integer path of qdot_impl.h (activations quantised as llama.cpp
// does), both for decode (gemm_nt_direct) and prefill (gemm_nt_packed).
template <int DT>
static void qgemm_direct(const GemmNT* g, I m0, I m1, I n0, I n1);
template <int DT>
static void qgemm_packed(const GemmNT* g, I m0, I m1, I n0, I n1);

static void gemm_nt_direct(const GemmNT* g, I m0, I m1, I n0, I n1) {
  switch (g->w.dtype) {
#define DSV3_Q(DT) \
  case DT: qgemm_direct<DT>(g, m0, m1, n0, n1); break;
    DSV3_BLOCK_FORMATS(DSV3_Q)
#undef DSV3_Q
    case DT_F32: nt_direct_t<Dec<DT_F32, false>>(g, m0, m1, n0, n1); break;
    case DT_BF16: nt_direct_t<Dec<DT_BF16, false>>(g, m0, m1, n0, n1); break;
    case DT_F16: nt_direct_t<Dec<DT_F16, false>>(g, m0, m1, n0, n1); break;
    case DT_F8:
      if (g->f8slow) nt_direct_t<Dec<DT_F8, true>>(g, m0, m1, n0, n1);
      else if (one_row_at_a_time(g, m1 - m0, 1)) nt_direct_f8<1>(g, m0, m1, n0, n1);
      else nt_direct_f8<NT_NR>(g, m0, m1, n0, n1);
      break;
  }
}

/** Decode W[row][k0 .. k0+kl) to f32 (exactly the values the direct path computes). */
template <class D>
static void decode_span_plain(const WView& w, I row, I k0, I kl, float* dst);
template <class D>
static void decode_span(const WView& w, I row, I k0, I kl, float* dst) {
  if constexpr (!D::BLK) {
    decode_span_plain<D>(w, row, k0, kl, dst);
  } else {
    // k0 and kl are multiples of 32 (whole sub-blocks: rows hold whole blocks, K chunks
    // are multiples of 256).
    const std::uint8_t* src = static_cast<const std::uint8_t*>(w.data) + row * w.ld;
    typename D::St st;
    for (I k = k0; k < k0 + kl; k += 32) {
      const std::uint8_t* b = src + k / D::BE * D::BB;
      if (k == k0 || k % D::BE == 0) D::prep(b, st);
      V o[32 / L];
      D::dec32(b, st, (int)(k % D::BE / 32), o);
      for (int v = 0; v < 32 / L; v++) vstore(dst + (k - k0) + v * L, o[v]);
    }
  }
}
template <class D>
static void decode_span_plain(const WView& w, I row, I k0, I kl, float* dst) {
  typedef typename D::E E;
  const E* src = static_cast<const E*>(w.data) + row * w.ld;
  const I bk = D::F8 ? w.b1 : (I)1 << 62;
  const float* srow = D::F8 ? w.scale + (row / w.b0) * w.sCols : nullptr;
  I k = k0;
  const I kend = k0 + kl;
  while (k < kend) {
    const I blk = D::F8 ? k / bk : 0;
    const I bend = D::F8 ? imin(kend, (blk + 1) * bk) : kend;
    const V s = D::F8 ? vset1(D::prep(srow[blk])) : vzero();
    for (; k + L <= bend; k += L) vstore(dst + (k - k0), D::ld(src + k, s));
    if (k < bend) {
      vstoren(dst + (k - k0), D::ldn(src + k, (int)(bend - k), s), (int)(bend - k));
      k = bend;
    }
  }
}

/**
 * One block of a packed GEMM: x rows [mb, mb + mc) (x and ldx point at row mb) by W rows
 * [nb, nb + nc), over all of K in chunks of KC: each chunk of the W rows is decoded to a
 * panel, then run by the tiles (bkt: the scale-block length the tiles keep, see nt_bk).
 */
template <class D>
static void packed_block(const GemmNT* g, const float* x, I ldx, I nb, I nc, I mb, I mc, I KC, I bkt) {
  const WView& w = g->w;
  const I K = w.cols;
  const I PLD = (KC + L - 1) / L * L + L;  // panel row stride (padded against aliasing)
  float* panel = tl_panel.get(PK_NC * PLD);
  const I accld = PK_NC * L;
  float* acc = tl_acc.get(PK_MC * accld);
  for (I kc0 = 0; kc0 < K || kc0 == 0; kc0 += KC) {
    const I kl = imin(KC, K - kc0);
    const bool first = kc0 == 0, last = kc0 + KC >= K;
    for (I j = 0; j < nc; j++) decode_span<D>(w, g->r0 + nb + j, kc0, kl, panel + j * PLD);
    for (I nj = 0; nj < nc; nj += NT_NR) {
      const int nv = (int)imin(NT_NR, nc - nj);
      const float* wp[NT_NR];
      for (int j = 0; j < NT_NR; j++) wp[j] = panel + (nj + (j < nv ? j : nv - 1)) * PLD;
      for (I mi = 0; mi < mc; mi += NT_MR) {
        const int mr = (int)imin(NT_MR, mc - mi);
        nt_tile_m<Dec<DT_F32, false>, NT_NR>(mr, x + mi * ldx + kc0, ldx, wp, nullptr, kl, bkt,
                                             acc + mi * accld + nj * L, accld, first, last,
                                             g->out + (mb + mi) * g->ldo + nb + nj, g->ldo, nv);
      }
    }
    if (K == 0) break;
  }
}

template <class D>
static void nt_packed_t(const GemmNT* g, I m0, I m1, I n0, I n1) {
  const I K = g->w.cols;
  const I bk = nt_bk(g->w);
  const bool blocked = bk < K;  // F8 with b1 % L != 0: keep whole rows, chunk by blocks
  const I KC = blocked || K <= PK_KC ? (K > 0 ? K : 1) : PK_KC;
  for (I nb = n0; nb < n1; nb += PK_NC)
    for (I mb = m0; mb < m1; mb += PK_MC)
      packed_block<D>(g, g->x + mb * g->ldx, g->ldx, nb, imin(PK_NC, n1 - nb), mb, imin(PK_MC, m1 - mb), KC,
                      blocked ? bk : KC);
}

/** The packed path for FP8 with the block scale on x (see f8_xg): raw panels, x^G per group. */
static void nt_packed_f8(const GemmNT* g, I m0, I m1, I n0, I n1) {
  const WView& w = g->w;
  const I K = w.cols;
  const I KC = K <= PK_KC ? (K > 0 ? K : 1) : PK_KC;
  float* xg = tl_xg.get(PK_MC * K + 2 * PK_MC);
  float* xs = xg + PK_MC * K;
  float* post = xs + PK_MC;
  for (I ga = n0; ga < n1;) {
    const I G = (g->r0 + ga) / w.b0;
    const I gb = imin(n1, (G + 1) * w.b0 - g->r0);  // this scale group's rows: [ga, gb)
    for (I mb = m0; mb < m1; mb += PK_MC) {
      const I mc = imin(PK_MC, m1 - mb);
      f8_rowscale(g->x + mb * g->ldx, g->ldx, mc, K, xs, post);
      f8_xg(g->x + mb * g->ldx, g->ldx, mc, w, G, xs, xg);
      for (I nb = ga; nb < gb; nb += PK_NC)
        packed_block<Dec<DT_F8R, false>>(g, xg, K, nb, imin(PK_NC, gb - nb), mb, mc, KC, KC);
      scale_rows(g->out + mb * g->ldo + ga, g->ldo, mc, gb - ga, post);
    }
    ga = gb;
  }
}

static_assert(PK_KC % 256 == 0, "K chunks of the packed path hold whole blocks");

static void gemm_nt_packed(const GemmNT* g, I m0, I m1, I n0, I n1) {
  switch (g->w.dtype) {
#define DSV3_Q(DT) \
  case DT: qgemm_packed<DT>(g, m0, m1, n0, n1); break;
    DSV3_BLOCK_FORMATS(DSV3_Q)
#undef DSV3_Q
    case DT_F32: nt_packed_t<Dec<DT_F32, false>>(g, m0, m1, n0, n1); break;
    case DT_BF16: nt_packed_t<Dec<DT_BF16, false>>(g, m0, m1, n0, n1); break;
    case DT_F16: nt_packed_t<Dec<DT_F16, false>>(g, m0, m1, n0, n1); break;
    case DT_F8:
      if (g->f8slow) nt_packed_t<Dec<DT_F8, true>>(g, m0, m1, n0, n1);
      else nt_packed_f8(g, m0, m1, n0, n1);
      break;
  }
}

// =====================================================================================
// gemm_nn micro-tile: MR rows of x by up to NN_NV·L columns of W, over rows [ra, rb) of
// the R dimension (a chunk: the accumulators continue from `out` unless ra == 0). With
// `lim`, row m of x only sums over r < lim[m] (causal attention rows of different
// lengths in one tile); each row's chain is then exactly the one it has alone. FULL: the
// tile has all NN_NV·L columns, so the loads of a row of W are straight-line code (with
// per-column conditions in the loop, GCC keeps the MR·NN_NV accumulators in memory and
// the tile runs at a quarter of its speed).
template <class D, int MR, bool FULL>
static void nn_tile(const GemmNN* g, I mi, I ra, I rb, I c0, int ncols, const I* lim) {
  typedef typename D::E E;
  const WView& w = g->w;
  const E* base = static_cast<const E*>(w.data);
  const int nfull = FULL ? NN_NV : ncols / L, rem = FULL ? 0 : ncols % L;
  V acc[MR][NN_NV];
  float* out = g->out + mi * g->ldo + c0;
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NN_NV; j++) {
      if (ra == 0) acc[i][j] = vzero();
      else if (j < nfull) acc[i][j] = vload(out + i * g->ldo + j * L);
      else if (j == nfull && rem) acc[i][j] = vloadn(out + i * g->ldo + j * L, rem);
      else acc[i][j] = vzero();
    }
  V s[NN_NV];
  for (int j = 0; j < NN_NV; j++) s[j] = vzero();
  I sblk = -1;
  const float* x = g->x + mi * g->ldx;
  I rAll = rb, rAny = rb;  // [ra, rAll): every row; [rAll, rAny): rows with r < lim
  if (lim) {
    I lo = lim[mi], hi = lim[mi];
    for (int i = 1; i < MR; i++) {
      lo = lim[mi + i] < lo ? lim[mi + i] : lo;
      hi = lim[mi + i] > hi ? lim[mi + i] : hi;
    }
    rAll = imin(rb, lo > ra ? lo : ra);
    rAny = imin(rb, hi > rAll ? hi : rAll);
  }
  // Row r of W (its columns of this tile), decoded.
  auto wrow = [&](I r, V* wv) {
    const I row = g->r0 + r;
    if constexpr (D::BLK) {
      // The whole sub-blocks over this tile's columns, dequantised to t, then loaded.
      alignas(64) float t[NN_NV * L + 64];
      const std::uint8_t* src = reinterpret_cast<const std::uint8_t*>(base) + row * w.ld;
      const I s0 = c0 / 32, s1 = (c0 + ncols + 31) / 32;
      typename D::St st;
      for (I sb = s0; sb < s1; sb++) {
        const std::uint8_t* b = src + sb * 32 / D::BE * D::BB;
        if (sb == s0 || sb * 32 % D::BE == 0) D::prep(b, st);
        V o[32 / L];
        D::dec32(b, st, (int)(sb * 32 % D::BE / 32), o);
        for (int v = 0; v < 32 / L; v++) vstore(t + (sb - s0) * 32 + v * L, o[v]);
      }
      const float* tp = t + (c0 - s0 * 32);
      for (int j = 0; j < NN_NV; j++) {
        if (FULL || j < nfull) wv[j] = vload(tp + j * L);
        else if (j == nfull && rem) wv[j] = vloadn(tp + j * L, rem);
        else wv[j] = vzero();
      }
    } else {
      if (D::F8 && row / w.b0 != sblk) {
        sblk = row / w.b0;
        const float* srow = w.scale + sblk * w.sCols;
        for (int j = 0; j < NN_NV; j++) {
          alignas(64) float t[L];
          for (int l = 0; l < L; l++) {
            I c = c0 + j * L + l;
            if (c >= w.cols) c = w.cols - 1;
            t[l] = D::prep(srow[c / w.b1]);
          }
          s[j] = vload(t);
        }
      }
      const E* wr = base + row * w.ld + c0;
      for (int j = 0; j < NN_NV; j++) {
        if (FULL || j < nfull) wv[j] = D::ld(wr + j * L, s[j]);
        else if (j == nfull && rem) wv[j] = D::ldn(wr + j * L, rem, s[j]);
        else wv[j] = vzero();
      }
    }
  };
  for (I r = ra; r < rAll; r++) {
    V wv[NN_NV];
    wrow(r, wv);
    for (int i = 0; i < MR; i++) {
      const V xb = vset1(x[i * g->ldx + r]);
      for (int j = 0; j < NN_NV; j++) acc[i][j] = vfma(xb, wv[j], acc[i][j]);
    }
  }
  for (I r = rAll; r < rAny; r++) {
    V wv[NN_NV];
    wrow(r, wv);
    for (int i = 0; i < MR; i++) {
      if (r >= lim[mi + i]) continue;
      const V xb = vset1(x[i * g->ldx + r]);
      for (int j = 0; j < NN_NV; j++) acc[i][j] = vfma(xb, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NN_NV; j++) {
      if (j < nfull) vstore(out + i * g->ldo + j * L, acc[i][j]);
      else if (j == nfull && rem) vstoren(out + i * g->ldo + j * L, acc[i][j], rem);
    }
}

template <class D, int MR>
static void nn_tile_any(const GemmNN* g, I mi, I ra, I rb, I c0, int ncols, const I* lim) {
  if (ncols == NN_NV * L) nn_tile<D, MR, true>(g, mi, ra, rb, c0, ncols, lim);
  else nn_tile<D, MR, false>(g, mi, ra, rb, c0, ncols, lim);
}

template <class D>
static void nn_t(const GemmNN* g, I m0, I m1, I c0, I c1, const I* lim = nullptr) {
  const I R = g->R;
  const I RC = 256;
  if (R == 0) {
    for (I m = m0; m < m1; m++)
      for (I c = c0; c < c1; c++) g->out[m * g->ldo + c] = 0.0f;
    return;
  }
  for (I ra = 0; ra < R; ra += RC) {
    const I rb = imin(R, ra + RC);
    for (I ct = c0; ct < c1; ct += NN_NV * L) {
      const int ncols = (int)imin(NN_NV * L, c1 - ct);
      for (I mi = m0; mi < m1; mi += NN_MR) {
        switch ((int)imin(NN_MR, m1 - mi)) {
#define DSV3_CASE(R_)                                                        \
  case R_:                                                                   \
    if (R_ <= NN_MR) nn_tile_any<D, (R_ <= NN_MR ? R_ : 1)>(g, mi, ra, rb, ct, ncols, lim); \
    break;
          DSV3_CASE(1)
          DSV3_CASE(2)
          DSV3_CASE(3)
          DSV3_CASE(4)
          DSV3_CASE(5)
          DSV3_CASE(6)
#undef DSV3_CASE
        }
      }
    }
  }
}

static void gemm_nn(const GemmNN* g, I m0, I m1, I c0, I c1) {
  switch (g->w.dtype) {
#define DSV3_Q(DT) \
  case DT: nn_t<QDec<DT>>(g, m0, m1, c0, c1); break;
    DSV3_BLOCK_FORMATS(DSV3_Q)
#undef DSV3_Q
    case DT_F32: nn_t<Dec<DT_F32, false>>(g, m0, m1, c0, c1); break;
    case DT_BF16: nn_t<Dec<DT_BF16, false>>(g, m0, m1, c0, c1); break;
    case DT_F16: nn_t<Dec<DT_F16, false>>(g, m0, m1, c0, c1); break;
    case DT_F8:
      if (g->f8slow) nn_t<Dec<DT_F8, true>>(g, m0, m1, c0, c1);
      else nn_t<Dec<DT_F8, false>>(g, m0, m1, c0, c1);
      break;
  }
}

/** A block-format row dequantised (the values every path above uses). */
static void decode_row(const WView* w, I row, float* dst) {
  switch (w->dtype) {
#define DSV3_Q(DT) \
  case DT: decode_span<QDec<DT>>(*w, row, 0, w->cols, dst); break;
    DSV3_BLOCK_FORMATS(DSV3_Q)
#undef DSV3_Q
  }
}

// =====================================================================================
// Elementwise / row ops.

static void softmax_row(float* x, I n) {
  if (n <= 0) return;
  V vm = vset1(-INFINITY);
  I i = 0;
  for (; i + L <= n; i += L) vm = vmax(vm, vload(x + i));
  float mx = vhmax(vm);
  for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
  const V m = vset1(mx);
  V vs = vzero();
  for (i = 0; i + L <= n; i += L) {
    const V e = vexp(vsub(vload(x + i), m));
    vstore(x + i, e);
    vs = vadd(vs, e);
  }
  if (i < n) {
    const int r = (int)(n - i);
    vstoren(x + i, vexp(vsub(vloadn(x + i, r), m)), r);
    vs = vadd(vs, vloadn(x + i, r));
  }
  const V sum = vset1(vhsum(vs));
  for (i = 0; i + L <= n; i += L) vstore(x + i, vdiv(vload(x + i), sum));
  if (i < n) {
    const int r = (int)(n - i);
    vstoren(x + i, vdiv(vloadn(x + i, r), sum), r);
  }
}

static void softmax_rows(float* x, I ld, I cols, I r0, I r1) {
  for (I r = r0; r < r1; r++) softmax_row(x + r * ld, cols);
}

static inline V silu_mul_v(V g, V u) {
  const V one = vset1(1.0f);
  return vmul(vdiv(g, vadd(one, vexp(vsub(vzero(), g)))), u);
}

static void silu_mul(float* out, const float* g, const float* u, I i0, I i1) {
  I i = i0;
  for (; i + L <= i1; i += L) vstore(out + i, silu_mul_v(vload(g + i), vload(u + i)));
  if (i < i1) {
    const int r = (int)(i1 - i);
    vstoren(out + i, silu_mul_v(vloadn(g + i, r), vloadn(u + i, r)), r);
  }
}

// =====================================================================================
// Attention. Scores use gemm_nt (the matmul order), P·V uses gemm_nn.

static inline WView f32view(const float* data, I rows, I cols, I ld) {
  WView v;
  v.data = data;
  v.dtype = DT_F32;
  v.rows = rows;
  v.cols = cols;
  v.ld = ld;
  v.scale = nullptr;
  v.b0 = v.b1 = 1;
  v.sCols = 0;
  return v;
}

static void attn_latent(const AttnLatentArgs* a, I t, I h0, I h1) {
  const I S = a->p0 + t + 1;
  const I nh = h1 - h0;
  if (nh <= 0) return;
  const I ld = (S + L - 1) / L * L;
  float* sc = tl_scores.get(nh * ld);
  float* sb = tl_scores2.get(nh * ld);
  const I row0 = t * a->H + h0;
  GemmNT g;
  g.f8slow = 0;
  g.r0 = 0;
  g.N = S;
  g.ldo = ld;
  // qLat · kv[s]
  g.x = a->qLat + row0 * a->C;
  g.ldx = a->C;
  g.M = nh;
  g.K = a->C;
  g.w = f32view(a->kv, S, a->C, a->C);
  g.out = sc;
  nt_direct_nr<Dec<DT_F32, false>, NT_NR>(&g, 0, nh, 0, S);
  // qPe · pe[s]
  g.x = a->qPe + row0 * a->R;
  g.ldx = a->R;
  g.K = a->R;
  g.w = f32view(a->pe, S, a->R, a->R);
  g.out = sb;
  nt_direct_nr<Dec<DT_F32, false>, NT_NR>(&g, 0, nh, 0, S);
  const V scale = vset1(a->scale);
  for (I h = 0; h < nh; h++) {
    float* p = sc + h * ld;
    const float* q = sb + h * ld;
    I s = 0;
    for (; s + L <= S; s += L) vstore(p + s, vmul(vadd(vload(p + s), vload(q + s)), scale));
    for (; s < S; s++) p[s] = (p[s] + q[s]) * a->scale;
    softmax_row(p, S);
  }
  GemmNN n;
  n.f8slow = 0;
  n.x = sc;
  n.ldx = ld;
  n.M = nh;
  n.R = S;
  n.w = f32view(a->kv, S, a->C, a->C);
  n.r0 = 0;
  n.C = a->C;
  n.out = a->out + row0 * a->C;
  n.ldo = a->C;
  nn_t<Dec<DT_F32, false>>(&n, 0, nh, 0, a->C);
}

/**
 * Plain causal attention for head h and queries [t0, t1): the scores of all these
 * queries against K_h in one gemm_nt (a query's scores beyond its own position are
 * computed and ignored), then P·V_h in one gemm_nn with per-row lengths.
 */
static void attention(const AttentionArgs* a, I h, I t0, I t1) {
  const I H = a->H, nt = t1 - t0;
  if (nt <= 0) return;
  const I Smax = a->p0 + t1;
  const I ld = (Smax + L - 1) / L * L;
  float* p = tl_scores.get(nt * ld);
  I* lim = reinterpret_cast<I*>(tl_scores2.get(2 * nt + 2));
  GemmNT g;
  g.f8slow = 0;
  g.x = a->q + (t0 * H + h) * a->Dk;
  g.ldx = H * a->Dk;
  g.M = nt;
  g.K = a->Dk;
  g.w = f32view(a->k + h * a->Dk, Smax, a->Dk, H * a->Dk);
  g.r0 = 0;
  g.N = Smax;
  g.out = p;
  g.ldo = ld;
  if (nt == 1) nt_direct_t<Dec<DT_F32, false>>(&g, 0, 1, 0, Smax);
  else nt_direct_nr<Dec<DT_F32, false>, NT_NR>(&g, 0, nt, 0, Smax);
  const V scale = vset1(a->scale);
  for (I i = 0; i < nt; i++) {
    const I S = a->p0 + t0 + i + 1;
    lim[i] = S;
    float* pr = p + i * ld;
    I s = 0;
    for (; s + L <= S; s += L) vstore(pr + s, vmul(vload(pr + s), scale));
    for (; s < S; s++) pr[s] *= a->scale;
    softmax_row(pr, S);
  }
  GemmNN n;
  n.f8slow = 0;
  n.x = p;
  n.ldx = ld;
  n.M = nt;
  n.R = Smax;
  n.w = f32view(a->v + h * a->Dv, Smax, a->Dv, H * a->Dv);
  n.r0 = 0;
  n.C = a->Dv;
  n.out = a->out + (t0 * H + h) * a->Dv;
  n.ldo = H * a->Dv;
  nn_t<Dec<DT_F32, false>>(&n, 0, nt, 0, a->Dv, lim);
}
