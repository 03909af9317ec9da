// Block-format matmuls as llama.cpp computes them: every row of x quantised to the weight's
// "vec_dot type" (Q8_0 blocks of 32 for Q4_0/Q5_0/Q8_0 weights, Q8_K blocks of 256 for
// Q4_K/Q5_K/Q6_K), then per output the exact integer block sums, each combined into float32
// by ggml's generic formula, blocks summed in order. src/kernels/ref/qdot.ts is the
// definition, native/README.md states it; every level gives its float32 bits exactly:
//
//   Q4_0  v = (S·dw)·dx        Q5_0  v = (dw·dx)·S        Q8_0  v = S·(dw·dx)     o += v
//   Q4_1, Q5_1 (x as Q8_1, s its f16 d·Σq, m the weight's min)  v = (dw·dx)·S + m·s   o += v
//   Q4_K, Q5_K  A += (dw·dx)·S;  B −= (dmin·dx)·Mn;  out = B + A
//   Q6_K        A += (dw·dx)·S;  out = 0 + A
//
// (S: the block's exact integer sum, Σ sc_g·Σ q·x over its groups for the K-quants; Mn: the
// K-quant min term Σ bsums_i·min_{i/2}; A, B, o start at +0; each operation rounded to
// float32 on its own.) Since the integers are exact and the float operations are the same
// scalar sequence for every output, the result is the same whichever kernel computes it: the
// decode path (one weight row at a time against up to QMR rows of x), a level's packed path,
// any M, any thread count.
//
// Included by each level after kernels_impl.h, inside its anonymous namespace. A level with
// SIMD integer kernels names a header in DSV3_QDOT_HEADER that defines DSV3_QDOT_SIMD and
//   template <int DT> void qrow(const std::uint8_t* w, I nb, const XRow* xr, int mr, float* o);
// (o[m] = the output of weight row w, nb blocks, against x row xr[m], for m < mr <= QMR), or
// for the blocks of 32 define DSV3_QVALS and qvals32<DT> (the block values, summed here). A
// level with a packed kernel for block formats also defines there DSV3_QPACKED with QTILE
// (rows of x per tile), xq_tile_bytes_t<DT>(K), xq_tiles(...) and qpacked<DT>(...), and may
// define DSV3_QQUANT_SIMD with qquant_row_q8_0 / qquant_row_q8_k (the quantisers' bits).

static const int QMR = 4;  // rows of x per decode tile

/** One quantised row of x, from block b on (see XQ in common.h). */
struct XRow {
  const std::int8_t* q;    // the int8 values of block b on
  const float* d;          // block scales, from block b
  const std::int32_t* s;   // Q8_0: Σq per block, from block b
  const std::int16_t* bs;  // Q8_K: 16 bsums per block, from block b
  const float* s1;         // Q8_1: the stored f16 s = d·Σq widened, from block b
};

static inline XRow xq_row(const XQ* q, I K, I nb, bool kq, I m, I b) {
  const std::uint8_t* r = q->rows + m * q->rowBytes;
  const I be = K / nb;
  XRow x;
  x.q = reinterpret_cast<const std::int8_t*>(r) + b * be;
  x.d = reinterpret_cast<const float*>(r + K) + b;
  x.s = kq ? nullptr : reinterpret_cast<const std::int32_t*>(r + K + 4 * nb) + b;
  x.bs = kq ? reinterpret_cast<const std::int16_t*>(r + K + 4 * nb) + 16 * b : nullptr;
  x.s1 = kq ? nullptr : reinterpret_cast<const float*>(r + K + 8 * nb) + b;  // read for Q4_1 / Q5_1 only
  return x;
}

// ---------------------------------------------------------------------------------------
// Quantising x (ggml's quantize_row_q8_0_ref / quantize_row_q8_K_ref, bit for bit for finite x;
// also for NaN where the comparisons below are C's).

#include "ggml_scalar.h"

/**
 * One row of K values to Q8_0 blocks (quantize_row_q8_0_ref): q, d (the f16 widened), s (Σq);
 * with s1, Q8_1 blocks (quantize_row_q8_1_ref), which also keep f16(Σq·d) widened.
 */
[[maybe_unused]] static void quant_row_q8_0(const float* x, I K, std::int8_t* q, float* d, std::int32_t* s,
                                            float* s1 = nullptr) {
  for (I b = 0; b < K / 32; b++) {
    const float* xb = x + 32 * b;
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) {
      const float a = std::fabs(xb[j]);
      amax = amax > a ? amax : a;  // C's MAX, NaN included
    }
    const float dd = amax / 127.0f;
    const float id = dd != 0.0f ? 1.0f / dd : 0.0f;
    d[b] = h2f(ggml_f32_to_f16(dd));
    std::int32_t sum = 0;
    for (int j = 0; j < 32; j++) {
      const std::int8_t v = ggml_trunc_i8(std::roundf(xb[j] * id));
      q[32 * b + j] = v;
      sum += v;
    }
    s[b] = sum;
    if (s1) s1[b] = h2f(ggml_f32_to_f16((float)sum * dd));
  }
}

/** One row of K values to Q8_K blocks: q, d, bsums. */
[[maybe_unused]] static void quant_row_q8_k(const float* x, I K, std::int8_t* q, float* d, std::int16_t* bs) {
  for (I b = 0; b < K / 256; b++) {
    const float* xb = x + 256 * b;
    std::int8_t* qb = q + 256 * b;
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 256; j++) {
      const float a = std::fabs(xb[j]);
      if (a > amax) {
        amax = a;
        max = xb[j];
      }
    }
    if (!(amax != 0.0f)) {
      d[b] = 0.0f;
      std::memset(qb, 0, 256);
      std::memset(bs + 16 * b, 0, 32);
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < 256; j++) {
      const int v = ggml_nearest_int(iscale * xb[j]);
      qb[j] = (std::int8_t)(std::uint8_t)(unsigned)(v < 127 ? v : 127);
    }
    for (int g = 0; g < 16; g++) {
      int sum = 0;
      for (int j = 0; j < 16; j++) sum += qb[16 * g + j];
      bs[16 * b + g] = (std::int16_t)sum;
    }
    d[b] = 1.0f / iscale;
  }
}

static constexpr bool qis_k(int dt) { return FORMATS[dt].blockElems == 256; }
/** Q4_1 / Q5_1: activations as Q8_1, v = (dw·dx)·S + m·s. */
static constexpr bool qis_1(int dt) { return dt == DT_Q4_1 || dt == DT_Q5_1; }

// ---------------------------------------------------------------------------------------
// The integers of a weight block (portable; the SIMD levels have their own isums).

/** K-quant block: its 6-bit scales and mins (get_scale_min_k4) into sc[8], mn[8]. */
static inline void qk_scales(const std::uint8_t* s, int* sc, int* mn) {
  for (int j = 0; j < 8; j++) {
    if (j < 4) {
      sc[j] = s[j] & 63;
      mn[j] = s[j + 4] & 63;
    } else {
      sc[j] = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
      mn[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
  }
}

// ---------------------------------------------------------------------------------------
// The float32 combination (the same scalar operations on every path).

/** One Q4_1 / Q5_1 block's value: (dw·dx)·S + m·s1 (m: the weight's min, s1: Q8_1's s). */
static inline float qblock32_1(std::int32_t S, float dw, float dx, float m, float s1) {
  const float a = (dw * dx) * (float)S;
  const float b = m * s1;
  return a + b;
}

/** One Q4_0 / Q5_0 / Q8_0 block's value from its integer sum S and the two scales. */
template <int DT>
static inline float qblock32(std::int32_t S, float dw, float dx) {
  const float s = (float)S;
  if (DT == DT_Q4_0) {
    const float a = s * dw;
    return a * dx;
  }
  const float a = dw * dx;
  if (DT == DT_Q5_0) return a * s;
  return s * a;
}

/**
 * One K-quant block into the accumulators: A += (dw·dx)·S, and for Q4_K/Q5_K B −= (dmin·dx)·Mn,
 * with dw (and dmin) read from the block. The output is B + A (0 + A for Q6_K).
 */
template <int DT>
static inline void qblockK(const std::uint8_t* wb, float dx, std::int32_t S, std::int32_t Mn, float& A, float& B) {
  const float dw = h2f(rd16(wb + (DT == DT_Q6_K ? 208 : 0)));
  const float d = dw * dx;
  A = A + d * (float)S;
  if (DT != DT_Q6_K) {
    const float dm = h2f(rd16(wb + 2)) * dx;
    B = B - dm * (float)Mn;
  }
}

#if defined(DSV3_QDOT_HEADER)
#include DSV3_QDOT_HEADER
#endif

#if !defined(DSV3_QDOT_SIMD)
static const int QCH = 8;  // blocks of 32 per isums32 call

/** The 32 signed integers of a Q4_0 / Q5_0 / Q8_0 block, as the generic C code multiplies them. */
template <int DT>
static inline void q32_codes(const std::uint8_t* b, int* c) {
  if (DT == DT_Q8_0) {
    for (int j = 0; j < 32; j++) c[j] = (std::int8_t)b[2 + j];
  } else if (DT == DT_Q4_0) {
    for (int j = 0; j < 16; j++) {
      c[j] = (b[2 + j] & 15) - 8;
      c[j + 16] = (b[2 + j] >> 4) - 8;
    }
  } else if (DT == DT_Q4_1) {
    for (int j = 0; j < 16; j++) {
      c[j] = b[4 + j] & 15;
      c[j + 16] = b[4 + j] >> 4;
    }
  } else {
    const int o = DT == DT_Q5_1 ? 4 : 2, off = DT == DT_Q5_1 ? 0 : 16;
    const std::uint32_t qh = rd32(b + o);
    for (int j = 0; j < 16; j++) {
      c[j] = ((b[o + 4 + j] & 15) | (((qh >> j) & 1) << 4)) - off;
      c[j + 16] = ((b[o + 4 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - off;
    }
  }
}

template <int DT>
static void isums32(const std::uint8_t* w, int nb, const XRow* xr, int mr, std::int32_t (*S)[QCH]) {
  const int BB = FORMATS[DT].blockBytes;
  int c[32];
  for (int i = 0; i < nb; i++) {
    q32_codes<DT>(w + i * BB, c);
    for (int m = 0; m < mr; m++) {
      const std::int8_t* q = xr[m].q + 32 * i;
      std::int32_t s = 0;
      for (int j = 0; j < 32; j++) s += c[j] * q[j];
      S[m][i] = s;
    }
  }
}

/** The 256 integers of a K-quant block and its group scales (groups of 32; 16 for Q6_K). */
template <int DT>
static inline void qk_codes(const std::uint8_t* b, int* c, int* gsc, int* mn) {
  if (DT == DT_Q6_K) {
    for (int j = 0; j < 16; j++) gsc[j] = (std::int8_t)b[192 + j];
    for (int h = 0; h < 2; h++) {
      const std::uint8_t* ql = b + 64 * h;
      const std::uint8_t* qh = b + 128 + 32 * h;
      int* y = c + 128 * h;
      for (int l = 0; l < 32; l++) {
        y[l] = ((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
        y[l + 32] = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
        y[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        y[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      }
    }
    return;
  }
  qk_scales(b + 4, gsc, mn);
  const bool five = DT == DT_Q5_K;
  const std::uint8_t* qs = b + (five ? 48 : 16);
  for (int g = 0; g < 4; g++)
    for (int l = 0; l < 32; l++) {
      const int h = five ? b[16 + l] : 0;
      c[64 * g + l] = (qs[32 * g + l] & 15) | (((h >> (2 * g)) & 1) << 4);
      c[64 * g + 32 + l] = (qs[32 * g + l] >> 4) | (((h >> (2 * g + 1)) & 1) << 4);
    }
}

template <int DT>
static void isumsK(const std::uint8_t* w, const XRow* xr, int mr, std::int32_t* S, std::int32_t* Mn) {
  const int G = DT == DT_Q6_K ? 16 : 32;
  int c[256], gsc[16], mn[8];
  qk_codes<DT>(w, c, gsc, mn);
  for (int m = 0; m < mr; m++) {
    const std::int8_t* q = xr[m].q;
    std::int32_t s = 0;
    for (int g = 0; g < 256 / G; g++) {
      std::int32_t p = 0;
      for (int j = g * G; j < (g + 1) * G; j++) p += c[j] * q[j];
      s += gsc[g] * p;
    }
    S[m] = s;
    std::int32_t t = 0;
    if (DT != DT_Q6_K)
      for (int i = 0; i < 16; i++) t += xr[m].bs[i] * mn[i >> 1];
    Mn[m] = t;
  }
}
/** The portable qrow: the integer sums above, then the float32 combination in block order. */
template <int DT>
static void qrow(const std::uint8_t* w, I nb, const XRow* x0, int mr, float* o) {
  const I BB = FORMATS[DT].blockBytes;
  XRow xr[QMR];
  float A[QMR], B[QMR];
  for (int m = 0; m < mr; m++) A[m] = B[m] = 0.0f;
  if (!qis_k(DT)) {
    alignas(64) std::int32_t S[QMR][QCH];
    for (I b0 = 0; b0 < nb; b0 += QCH) {
      const int cnt = (int)imin(QCH, nb - b0);
      for (int m = 0; m < mr; m++) xr[m] = {x0[m].q + 32 * b0, x0[m].d + b0, x0[m].s + b0, nullptr, x0[m].s1 + b0};
      isums32<DT>(w + b0 * BB, cnt, xr, mr, S);
      for (int i = 0; i < cnt; i++) {
        const float dw = h2f(rd16(w + (b0 + i) * BB));
        if (qis_1(DT)) {
          const float mw = h2f(rd16(w + (b0 + i) * BB + 2));
          for (int m = 0; m < mr; m++) B[m] = B[m] + qblock32_1(S[m][i], dw, xr[m].d[i], mw, xr[m].s1[i]);
        } else {
          for (int m = 0; m < mr; m++) B[m] = B[m] + qblock32<DT>(S[m][i], dw, xr[m].d[i]);
        }
      }
    }
    for (int m = 0; m < mr; m++) o[m] = B[m];
  } else {
    std::int32_t S[QMR], Mn[QMR];
    for (I b = 0; b < nb; b++) {
      for (int m = 0; m < mr; m++) xr[m] = {x0[m].q + 256 * b, x0[m].d + b, nullptr, x0[m].bs + 16 * b, nullptr};
      isumsK<DT>(w + b * BB, xr, mr, S, Mn);
      for (int m = 0; m < mr; m++) qblockK<DT>(w + b * BB, xr[m].d[0], S[m], Mn[m], A[m], B[m]);
    }
    for (int m = 0; m < mr; m++) o[m] = B[m] + A[m];
  }
}
#endif  // !DSV3_QDOT_SIMD

/** XQ rows [m0, m1) of x, and the level's tiles of them when q->tiles is set. */
static void quantize_x(int dt, const float* x, I ldx, I K, I m0, I m1, I M, const XQ* q) {
  const bool kq = qis_k(dt);
  const I nb = K / FORMATS[dt].blockElems;
  for (I m = m0; m < m1; m++) {
    std::uint8_t* r = q->rows + m * q->rowBytes;
    std::int8_t* qs = reinterpret_cast<std::int8_t*>(r);
    float* d = reinterpret_cast<float*>(r + K);
    if (qis_1(dt)) {
      quant_row_q8_0(x + m * ldx, K, qs, d, reinterpret_cast<std::int32_t*>(r + K + 4 * nb),
                     reinterpret_cast<float*>(r + K + 8 * nb));
      continue;
    }
#if defined(DSV3_QQUANT_SIMD)
    if (kq) qquant_row_q8_k(x + m * ldx, K, qs, d, reinterpret_cast<std::int16_t*>(r + K + 4 * nb));
    else qquant_row_q8_0(x + m * ldx, K, qs, d, reinterpret_cast<std::int32_t*>(r + K + 4 * nb));
#else
    if (kq) quant_row_q8_k(x + m * ldx, K, qs, d, reinterpret_cast<std::int16_t*>(r + K + 4 * nb));
    else quant_row_q8_0(x + m * ldx, K, qs, d, reinterpret_cast<std::int32_t*>(r + K + 4 * nb));
#endif
  }
#if defined(DSV3_QPACKED)
  if (q->tiles) xq_tiles(dt, K, m0, m1, M, q);
#else
  (void)M;
#endif
}

#if defined(DSV3_QVALS)
/**
 * The decode path for blocks of 32: the block values of QG weight rows, each row streamed on
 * its own (rows side by side defeat the prefetchers), then the QG sequential sums o += v
 * side by side, so that the one-add-per-block chains overlap instead of bounding the loop.
 */
template <int DT>
static void qgemm_rows32(const GemmNT* g, I m0, I m1, I n0, I n1) {
  const WView& w = g->w;
  const I K = w.cols, nb = K / FORMATS[DT].blockElems;
  const std::uint8_t* base = static_cast<const std::uint8_t*>(w.data);
  constexpr int QG = 8;
  const I vs = (nb + 7) & ~(I)7;
  static thread_local std::vector<float> buf;
  if ((I)buf.size() < QG * QMR * vs) buf.resize((std::size_t)(QG * QMR * vs));
  float* vals = buf.data();
  for (I n = n0; n < n1; n += QG) {
    const int gr = (int)imin(QG, n1 - n);
    for (I mt = m0; mt < m1; mt += QMR) {
      const int mr = (int)imin(QMR, m1 - mt);
      XRow xr[QMR];
      for (int m = 0; m < mr; m++) xr[m] = xq_row(g->xq, K, nb, false, mt + m, 0);
      for (int r = 0; r < gr; r++) qvals32<DT>(base + (g->r0 + n + r) * w.ld, nb, xr, mr, vals + r * QMR * vs, vs);
      for (int m = 0; m < mr; m++) {
        float o[QG] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        const float* v = vals + m * vs;
        if (gr == QG) {
          for (I b = 0; b < nb; b++)
            for (int r = 0; r < QG; r++) o[r] = o[r] + v[r * QMR * vs + b];
        } else {
          for (I b = 0; b < nb; b++)
            for (int r = 0; r < gr; r++) o[r] = o[r] + v[r * QMR * vs + b];
        }
        for (int r = 0; r < gr; r++) g->out[(mt + m) * g->ldo + n + r] = o[r];
      }
    }
  }
}
#endif

/** The decode path: each weight row against tiles of up to QMR rows of x. */
template <int DT>
static void qgemm_rows(const GemmNT* g, I m0, I m1, I n0, I n1) {
  const WView& w = g->w;
  const I K = w.cols, nb = K / FORMATS[DT].blockElems;
  const bool kq = qis_k(DT);
  const std::uint8_t* base = static_cast<const std::uint8_t*>(w.data);
#if defined(DSV3_QVALS)
  if constexpr (!qis_k(DT)) qgemm_rows32<DT>(g, m0, m1, n0, n1);
  else
#endif
  {
    // One weight row at a time (streamed rows side by side defeat the prefetchers), against
    // tiles of up to QMR rows of x.
    for (I n = n0; n < n1; n++) {
      const std::uint8_t* wr = base + (g->r0 + n) * w.ld;
      for (I mt = m0; mt < m1; mt += QMR) {
        const int mr = (int)imin(QMR, m1 - mt);
        XRow xr[QMR];
        for (int m = 0; m < mr; m++) xr[m] = xq_row(g->xq, K, nb, kq, mt + m, 0);
        float o[QMR];
        qrow<DT>(wr, nb, xr, mr, o);
        for (int m = 0; m < mr; m++) g->out[(mt + m) * g->ldo + n] = o[m];
      }
    }
  }
}

template <int DT>
static void qgemm_direct(const GemmNT* g, I m0, I m1, I n0, I n1) {
  qgemm_rows<DT>(g, m0, m1, n0, n1);
}

template <int DT>
static void qgemm_packed(const GemmNT* g, I m0, I m1, I n0, I n1) {
#if defined(DSV3_QPACKED)
  if constexpr (!qis_1(DT)) {  // Q4_1 / Q5_1: no packed kernel (xq_tile_bytes 0, no tiles)
    if (g->xq->tiles) {
      qpacked<DT>(g, m0, m1, n0, n1);
      return;
    }
  }
#endif
  qgemm_rows<DT>(g, m0, m1, n0, n1);
}

static I xq_tile_bytes(int dt, I K) {
#if defined(DSV3_QPACKED)
  switch (dt) {
#define DSV3_Q(DT) \
  case DT: return qis_1(DT) ? 0 : xq_tile_bytes_t<DT>(K);
    DSV3_BLOCK_FORMATS(DSV3_Q)
#undef DSV3_Q
  }
#else
  (void)dt;
  (void)K;
#endif
  return 0;
}

#if defined(DSV3_QPACKED)
static const int XQ_TILE_ROWS = QTILE;
#else
static const int XQ_TILE_ROWS = 0;
#endif
