// x86 integer kernels for the block-format dot products (qdot_impl.h includes this where a
// level sets DSV3_QDOT_HEADER), shared by the AVX2 level (vpmaddubsw + vpmaddwd) and the
// AVX-512 level (DSV3_VNNI: vpdpbusd / vpdpwssd). All of them give qdot_impl.h's numbers:
//  * the SIMD activation quantisers (the bits of quant_row_q8_0 / quant_row_q8_k);
//  * the decode path (qrow): 256-bit vectors, one 32-value block or K-quant group per
//    vector, the weight's codes unsigned with a fixed offset taken off through the
//    activations' block sums; Q8_0 made unsigned by the sign trick (|w| against x·sign(w))
//    on AVX2, by adding 128 on AVX-512. Zen 4 runs 512-bit integer ops as two halves, so
//    the decode loops are the same 256-bit code on both levels;
//  * the packed (prefill) path (qpacked): rows of x in the lanes (16 per zmm with VNNI, 8 per
//    ymm on AVX2), a weight panel of codes broadcast 4 at a time.
// Every sum is exact: no int16 step can saturate (codes < 64 or |w| <= 128, |x| <= 127) and
// the int32 sums stay below 2^31.

#define DSV3_QDOT_SIMD 1

// Weight bytes prefetched ahead of the decode loops (the hardware prefetchers alone leave a
// streamed GEMV at ~29 GB/s of 47 on Zen 4; 4 KiB ahead: ~+8% for Q4_K/Q6_K/Q8_0 at M = 1).
#ifndef DSV3_QPF
#define DSV3_QPF 4096
#endif

typedef __m256i QB;
static inline QB qld(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
static inline QB qzero() { return _mm256_setzero_si256(); }

#if defined(DSV3_VNNI)
/** acc + the sums of 4 adjacent products u8·s8 (u < 256, exact). */
static inline QB qdot4(QB acc, QB u, QB s) { return _mm256_dpbusd_epi32(acc, u, s); }
/** acc + sc16 · (the sums of 2 adjacent products u8·s8), u < 64. */
static inline QB qdot4s(QB acc, QB u, QB s, QB sc16) { return _mm256_dpwssd_epi32(acc, _mm256_maddubs_epi16(u, s), sc16); }
/** Byte j: 16 if bit j of m is set, else 0. */
static inline QB qbits16(std::uint32_t m) { return _mm256_maskz_mov_epi8((__mmask32)m, _mm256_set1_epi8(16)); }
#else
static inline QB qdot4(QB acc, QB u, QB s) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}
static inline QB qdot4s(QB acc, QB u, QB s, QB sc16) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), sc16));
}
static inline QB qbits16(std::uint32_t m) {
  const QB v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)m),
                                   _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2,
                                                    2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
  const QB bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit), _mm256_set1_epi8(16));
}
#endif

// ---- quantising x (the same bits as quant_row_q8_0 / quant_row_q8_k) ----
#define DSV3_QQUANT_SIMD 1

/** The low bytes of the 32 int32 lanes of v[0..4), in order (C's int → int8_t). */
static inline QB qlow_bytes(const QB* v) {
  const QB ff = _mm256_set1_epi32(0xff);
  const QB a = _mm256_packus_epi32(_mm256_and_si256(v[0], ff), _mm256_and_si256(v[1], ff));
  const QB b = _mm256_packus_epi32(_mm256_and_si256(v[2], ff), _mm256_and_si256(v[3], ff));
  // The packs work within 128-bit lanes: dwords (4 values each) come out as 0 2 4 6 1 3 5 7.
  return _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
/** Σ of bytes [0, 16) and [16, 32) of q, as int8 values. */
static inline void qsums_i8(QB q, int* lo, int* hi) {
  const QB s = _mm256_sad_epu8(_mm256_xor_si256(q, _mm256_set1_epi8((char)0x80)), qzero());
  const __m128i a = _mm256_castsi256_si128(s), b = _mm256_extracti128_si256(s, 1);
  *lo = (int)(_mm_cvtsi128_si64(a) + _mm_extract_epi64(a, 1)) - 16 * 128;
  *hi = (int)(_mm_cvtsi128_si64(b) + _mm_extract_epi64(b, 1)) - 16 * 128;
}
static inline __m256 qabs(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
static inline float qhmax8(__m256 v) {
  __m128 b = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  b = _mm_max_ps(b, _mm_movehl_ps(b, b));
  b = _mm_max_ss(b, _mm_movehdup_ps(b));
  return _mm_cvtss_f32(b);
}

static void qquant_row_q8_0(const float* x, I K, std::int8_t* q, float* d, std::int32_t* s) {
  for (I b = 0; b < K / 32; b++) {
    const float* xb = x + 32 * b;
    __m256 v[4];
    for (int i = 0; i < 4; i++) v[i] = _mm256_loadu_ps(xb + 8 * i);
    const __m256 un = _mm256_or_ps(_mm256_or_ps(_mm256_cmp_ps(v[0], v[0], _CMP_UNORD_Q), _mm256_cmp_ps(v[1], v[1], _CMP_UNORD_Q)),
                                   _mm256_or_ps(_mm256_cmp_ps(v[2], v[2], _CMP_UNORD_Q), _mm256_cmp_ps(v[3], v[3], _CMP_UNORD_Q)));
    float amax;
    if (_mm256_movemask_ps(un) == 0) {
      amax = qhmax8(_mm256_max_ps(_mm256_max_ps(qabs(v[0]), qabs(v[1])), _mm256_max_ps(qabs(v[2]), qabs(v[3]))));
    } else {
      amax = 0.0f;  // C's MAX in order: a NaN wins only where it comes last
      for (int j = 0; j < 32; j++) {
        const float a = std::fabs(xb[j]);
        amax = amax > a ? amax : a;
      }
    }
    const float dd = amax / 127.0f;
    const float id = dd != 0.0f ? 1.0f / dd : 0.0f;
    d[b] = h2f(ggml_f32_to_f16(dd));
    const __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(0.5f), sgn = _mm256_set1_ps(-0.0f);
    QB r[4];
    for (int i = 0; i < 4; i++) {
      // roundf: truncate, then step away from zero when the dropped part is at least 1/2.
      const __m256 p = _mm256_mul_ps(v[i], vid);
      const __m256 t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
      const __m256 up = _mm256_cmp_ps(qabs(_mm256_sub_ps(p, t)), half, _CMP_GE_OQ);
      const __m256 step = _mm256_and_ps(up, _mm256_or_ps(_mm256_and_ps(p, sgn), _mm256_set1_ps(1.0f)));
      r[i] = _mm256_cvttps_epi32(_mm256_add_ps(t, step));
    }
    const QB qb = qlow_bytes(r);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 32 * b), qb);
    int lo, hi;
    qsums_i8(qb, &lo, &hi);
    s[b] = lo + hi;
  }
}

static void qquant_row_q8_k(const float* x, I K, std::int8_t* q, float* d, std::int16_t* bs) {
  for (I b = 0; b < K / 256; b++) {
    const float* xb = x + 256 * b;
    std::int8_t* qb = q + 256 * b;
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < 32; i++) m = _mm256_max_ps(qabs(_mm256_loadu_ps(xb + 8 * i)), m);  // NaN: keeps m
    const float amax = qhmax8(m);
    if (!(amax != 0.0f)) {
      d[b] = 0.0f;
      std::memset(qb, 0, 256);
      std::memset(bs + 16 * b, 0, 32);
      continue;
    }
    // max: the first value of largest magnitude.
    const __m256 va = _mm256_set1_ps(amax);
    float max = amax;
    for (int i = 0; i < 32; i++) {
      const int hit = _mm256_movemask_ps(_mm256_cmp_ps(qabs(_mm256_loadu_ps(xb + 8 * i)), va, _CMP_EQ_OQ));
      if (hit) {
        int j = 0;
        while (!((hit >> j) & 1)) j++;
        max = xb[8 * i + j];
        break;
      }
    }
    const float iscale = -127.0f / max;
    const __m256 vs = _mm256_set1_ps(iscale), magic = _mm256_set1_ps(12582912.0f);
    const QB low = _mm256_set1_epi32(0x007fffff), bias = _mm256_set1_epi32(0x00400000), top = _mm256_set1_epi32(127);
    for (int k = 0; k < 256; k += 32) {
      QB r[4];
      for (int i = 0; i < 4; i++) {
        const __m256 t = _mm256_add_ps(_mm256_mul_ps(vs, _mm256_loadu_ps(xb + k + 8 * i)), magic);
        r[i] = _mm256_min_epi32(_mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(t), low), bias), top);
      }
      const QB v = qlow_bytes(r);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qb + k), v);
      int lo, hi;
      qsums_i8(v, &lo, &hi);
      bs[16 * b + k / 16] = (std::int16_t)lo;
      bs[16 * b + k / 16 + 1] = (std::int16_t)hi;
    }
    d[b] = 1.0f / iscale;
  }
}

/** Lane i of the result: the sum of the 8 lanes of p[i] (p[0..8)). */
static inline QB qhsum8x8(const QB* p) {
  const QB ab = _mm256_add_epi32(_mm256_unpacklo_epi32(p[0], p[1]), _mm256_unpackhi_epi32(p[0], p[1]));
  const QB cd = _mm256_add_epi32(_mm256_unpacklo_epi32(p[2], p[3]), _mm256_unpackhi_epi32(p[2], p[3]));
  const QB ef = _mm256_add_epi32(_mm256_unpacklo_epi32(p[4], p[5]), _mm256_unpackhi_epi32(p[4], p[5]));
  const QB gh = _mm256_add_epi32(_mm256_unpacklo_epi32(p[6], p[7]), _mm256_unpackhi_epi32(p[6], p[7]));
  const QB abcd = _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
  const QB efgh = _mm256_add_epi32(_mm256_unpacklo_epi64(ef, gh), _mm256_unpackhi_epi64(ef, gh));
  return _mm256_add_epi32(_mm256_permute2x128_si256(abcd, efgh, 0x20), _mm256_permute2x128_si256(abcd, efgh, 0x31));
}

/** The lane sums of a and b. */
static inline void qhsum2(QB a, QB b, std::int32_t* sa, std::int32_t* sb) {
  const QB t = _mm256_hadd_epi32(a, b);  // a01 a23 b01 b23 | a45 a67 b45 b67
  __m128i u = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
  u = _mm_hadd_epi32(u, u);  // a b a b
  *sa = _mm_cvtsi128_si32(u);
  *sb = _mm_extract_epi32(u, 1);
}

static inline __m128i qnib_mask() { return _mm_set1_epi8(15); }

/**
 * The 32 codes of a Q4_0 / Q5_0 block in value order, unsigned (q4, q5), or a Q8_0 block's raw
 * int8 weights.
 */
template <int DT>
static inline QB q32_codes(const std::uint8_t* b) {
  if (DT == DT_Q8_0) return qld(b + 2);
  constexpr int qo = DT == DT_Q5_0 ? 6 : DT == DT_Q4_1 ? 4 : DT == DT_Q5_1 ? 8 : 2;  // the nibbles
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + qo));
  const __m128i m4 = qnib_mask();
  const QB c = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(t, 4), m4), _mm_and_si128(t, m4));
  if (DT == DT_Q4_0 || DT == DT_Q4_1) return c;
  return _mm256_or_si256(c, qbits16(rd32(b + qo - 4)));
}

/** The f16 scales (first two bytes) of cnt <= 8 blocks of BB bytes, as eight halves (0 past cnt). */
template <int BB>
static inline __m128i qdw8(const std::uint8_t* wb, int cnt) {
  __m128i h = _mm_setzero_si128();
  switch (cnt) {  // inserts, not a stack array: a 16-byte load of 2-byte stores stalls the forwarding
    default: h = _mm_insert_epi16(h, rd16(wb + 7 * BB), 7); [[fallthrough]];
    case 7: h = _mm_insert_epi16(h, rd16(wb + 6 * BB), 6); [[fallthrough]];
    case 6: h = _mm_insert_epi16(h, rd16(wb + 5 * BB), 5); [[fallthrough]];
    case 5: h = _mm_insert_epi16(h, rd16(wb + 4 * BB), 4); [[fallthrough]];
    case 4: h = _mm_insert_epi16(h, rd16(wb + 3 * BB), 3); [[fallthrough]];
    case 3: h = _mm_insert_epi16(h, rd16(wb + 2 * BB), 2); [[fallthrough]];
    case 2: h = _mm_insert_epi16(h, rd16(wb + BB), 1); [[fallthrough]];
    case 1: h = _mm_insert_epi16(h, rd16(wb), 0);
  }
  return h;
}

/**
 * The first CNT of eight lanes at p, zeros after: the lanes past a row's last block must not
 * read its next bytes, whose floats can be subnormal (a multiply by one stalls for ~100
 * cycles: measured +20 ns per row on Zen 4).
 */
template <int CNT>
static inline __m256 qtail_ps(const float* p) {
  if (CNT == 8) return _mm256_loadu_ps(p);
  const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(CNT), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_maskload_ps(p, m);
}
template <int CNT>
static inline QB qtail_epi32(const std::int32_t* p) {
  if (CNT == 8) return qld(p);
  const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(CNT), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_maskload_epi32(reinterpret_cast<const int*>(p), m);
}

/**
 * Blocks of 32, eight at a time (CNT = 8, or the row's last CNT < 8 blocks): the exact sums
 * of the blocks against each row of x (one vector of partial sums per block, reduced
 * together by qhsum8x8, the offset taken off through Σx), turned into the float32 block
 * values v eight lanes at a time (the same operations as qblock32), stored at
 * vals[m·vs + b0 …] (eight lanes: those past CNT are unused). The sequential sum o += v that
 * follows is a chain of one float add per block: qgemm_rows runs the chains of several
 * weight rows side by side, while the rows themselves are still streamed one at a time
 * (streamed rows side by side defeat the hardware prefetchers: measured 2-3x slower from
 * DRAM).
 */
template <int DT, int CNT>
static inline void qchunk32(const std::uint8_t* wb, const XRow* x0, I b0, int mr, float* vals, I vs) {
  constexpr int BB = FORMATS[DT].blockBytes;
#if defined(DSV3_VNNI)
  constexpr bool flip = DT == DT_Q8_0;  // Q8_0: w + 128 (unsigned) against x, then −128·Σx
#else
  constexpr bool flip = false;  // Q8_0: |w| against x·sign(w)
#endif
  constexpr int sh = DT == DT_Q4_0 ? 3 : DT == DT_Q5_0 ? 4 : 7;  // offset 8, 16, 128
#if DSV3_QPF > 0
  for (int i = 0; i < CNT * BB; i += 64) _mm_prefetch(reinterpret_cast<const char*>(wb + DSV3_QPF + i), _MM_HINT_T0);
#endif
  QB c[8], a[8];
  for (int i = 0; i < 8; i++) {
    if (i >= CNT) {
      c[i] = a[i] = qzero();
      continue;
    }
    c[i] = q32_codes<DT>(wb + i * BB);
    if (DT == DT_Q8_0) {
      if (flip) c[i] = _mm256_xor_si256(c[i], _mm256_set1_epi8((char)0x80));
      else a[i] = _mm256_abs_epi8(c[i]);
    }
  }
  const __m256 dw = _mm256_cvtph_ps(qdw8<BB>(wb, CNT));
  const __m256 mw = qis_1(DT) ? _mm256_cvtph_ps(qdw8<BB>(wb + 2, CNT)) : _mm256_setzero_ps();  // Q4_1 / Q5_1: m
  for (int m = 0; m < mr; m++) {
    const std::int8_t* xq = x0[m].q + 32 * b0;
    QB p[8];
    for (int i = 0; i < 8; i++) {
      if (i >= CNT) {
        p[i] = qzero();
        continue;
      }
      const QB x = qld(xq + 32 * i);
      p[i] = DT == DT_Q8_0 && !flip ? qdot4(qzero(), a[i], _mm256_sign_epi8(x, c[i])) : qdot4(qzero(), c[i], x);
    }
    QB r = qhsum8x8(p);
    if (DT == DT_Q4_0 || DT == DT_Q5_0 || flip) r = _mm256_sub_epi32(r, _mm256_slli_epi32(qtail_epi32<CNT>(x0[m].s + b0), sh));
    const __m256 sf = _mm256_cvtepi32_ps(r);
    const __m256 dx = qtail_ps<CNT>(x0[m].d + b0);
    __m256 v;
    if (DT == DT_Q4_0) v = _mm256_mul_ps(_mm256_mul_ps(sf, dw), dx);
    else if (DT == DT_Q5_0) v = _mm256_mul_ps(_mm256_mul_ps(dw, dx), sf);
    else if (qis_1(DT))
      v = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(dw, dx), sf), _mm256_mul_ps(mw, qtail_ps<CNT>(x0[m].s1 + b0)));
    else v = _mm256_mul_ps(sf, _mm256_mul_ps(dw, dx));
    _mm256_storeu_ps(vals + m * vs + b0, v);
  }
}

/**
 * The float32 block values v of weight row w (nb blocks of 32) against each row of x:
 * vals[m·vs + b] for b < nb (vs >= nb rounded up to 8; the lanes up to it are scratch).
 */
#define DSV3_QVALS 1
template <int DT>
static void qvals32(const std::uint8_t* w, I nb, const XRow* x0, int mr, float* vals, I vs) {
  constexpr int BB = FORMATS[DT].blockBytes;
  I b0 = 0;
  if (mr == 1) {
    for (; b0 + 8 <= nb; b0 += 8) qchunk32<DT, 8>(w + b0 * BB, x0, b0, 1, vals, vs);
  } else {
    for (; b0 + 8 <= nb; b0 += 8) qchunk32<DT, 8>(w + b0 * BB, x0, b0, mr, vals, vs);
  }
  // The last nb % 8 blocks: the count a constant, so that the block vectors stay in registers.
  w += b0 * BB;
  switch (nb - b0) {
    case 1: qchunk32<DT, 1>(w, x0, b0, mr, vals, vs); break;
    case 2: qchunk32<DT, 2>(w, x0, b0, mr, vals, vs); break;
    case 3: qchunk32<DT, 3>(w, x0, b0, mr, vals, vs); break;
    case 4: qchunk32<DT, 4>(w, x0, b0, mr, vals, vs); break;
    case 5: qchunk32<DT, 5>(w, x0, b0, mr, vals, vs); break;
    case 6: qchunk32<DT, 6>(w, x0, b0, mr, vals, vs); break;
    case 7: qchunk32<DT, 7>(w, x0, b0, mr, vals, vs); break;
    default: break;
  }
}

/** K-quant scales and mins as bytes 0..7 of sc and mn (see kq_prep). */
static inline void qk_scales64(const std::uint8_t* s, std::uint64_t* sc, std::uint64_t* mn) {
  const std::uint32_t w0 = rd32(s), w1 = rd32(s + 4), w2 = rd32(s + 8);
  const std::uint32_t low6 = 0x3f3f3f3fu, low4 = 0x0f0f0f0fu, two = 0x03030303u;
  *sc = (w0 & low6) | (std::uint64_t)((w2 & low4) | (((w0 >> 6) & two) << 4)) << 32;
  *mn = (w1 & low6) | (std::uint64_t)(((w2 >> 4) & low4) | (((w1 >> 6) & two) << 4)) << 32;
}

/**
 * One K-quant block's codes (eight vectors of 32, value order, unsigned), their per-int16-lane
 * scales for qdot4s, and (Q4_K/Q5_K) the mins paired with the bsums.
 */
template <int DT>
static inline void qk_prep(const std::uint8_t* w, QB* c, QB* sc, QB& mins, QB& sc16all) {
  const QB m4 = _mm256_set1_epi8(15);
  if (DT == DT_Q6_K) {
    // Codes q6 in value order (32 is taken off through the bsums), two 16-value scales per
    // vector: int16 lanes 0-7 (values 0-15) and 8-15 (values 16-31).
    for (int h = 0; h < 2; h++) {
      const QB l0 = qld(w + 64 * h), l1 = qld(w + 64 * h + 32), hb = qld(w + 128 + 32 * h);
      const QB m30 = _mm256_set1_epi8(0x30);
      c[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30));
      c[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30));
      c[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hb, m30));
      c[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                     _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30));
    }
    sc16all = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 192)));
    const QB lo = _mm256_permute4x64_epi64(sc16all, 0x44), hi = _mm256_permute4x64_epi64(sc16all, 0xee);
    for (int g = 0; g < 8; g++) {
      const int k = 4 * (g & 3);  // bytes of int16 lanes 2(g&3), 2(g&3)+1
      const QB ctl = _mm256_setr_epi8(k, k + 1, k, k + 1, k, k + 1, k, k + 1, k, k + 1, k, k + 1, k, k + 1, k, k + 1,
                                      k + 2, k + 3, k + 2, k + 3, k + 2, k + 3, k + 2, k + 3, k + 2, k + 3, k + 2, k + 3,
                                      k + 2, k + 3, k + 2, k + 3);
      sc[g] = _mm256_shuffle_epi8(g < 4 ? lo : hi, ctl);
    }
    return;
  }
  std::uint64_t s64, m64;
  qk_scales64(w + 4, &s64, &m64);
  const QB s16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)s64)));
  for (int g = 0; g < 8; g++) sc[g] = _mm256_shuffle_epi8(s16, _mm256_set1_epi16((short)(((2 * g + 1) << 8) | (2 * g))));
  // mins16 = m0 m0 m1 m1 … m7 m7 (each min against the two bsums of its group).
  const __m128i m8 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)m64));
  mins = _mm256_set_m128i(_mm_unpackhi_epi16(m8, m8), _mm_unpacklo_epi16(m8, m8));
  const std::uint8_t* qs = w + (DT == DT_Q5_K ? 48 : 16);
  for (int r = 0; r < 4; r++) {
    const QB t = qld(qs + 32 * r);
    c[2 * r] = _mm256_and_si256(t, m4);
    c[2 * r + 1] = _mm256_and_si256(_mm256_srli_epi16(t, 4), m4);
  }
  if (DT == DT_Q5_K) {
    // Value l of group g has its fifth bit in bit g of qh[l]: moved to bit 4.
    const QB qh = qld(w + 16), b4 = _mm256_set1_epi8(16);
    c[0] = _mm256_or_si256(c[0], _mm256_and_si256(_mm256_slli_epi16(qh, 4), b4));
    c[1] = _mm256_or_si256(c[1], _mm256_and_si256(_mm256_slli_epi16(qh, 3), b4));
    c[2] = _mm256_or_si256(c[2], _mm256_and_si256(_mm256_slli_epi16(qh, 2), b4));
    c[3] = _mm256_or_si256(c[3], _mm256_and_si256(_mm256_slli_epi16(qh, 1), b4));
    c[4] = _mm256_or_si256(c[4], _mm256_and_si256(qh, b4));
    c[5] = _mm256_or_si256(c[5], _mm256_and_si256(_mm256_srli_epi16(qh, 1), b4));
    c[6] = _mm256_or_si256(c[6], _mm256_and_si256(_mm256_srli_epi16(qh, 2), b4));
    c[7] = _mm256_or_si256(c[7], _mm256_and_si256(_mm256_srli_epi16(qh, 3), b4));
  }
}

/** K-quant blocks one at a time: the exact S and Mn of each row of x, then qblockK. */
template <int DT, int MR>
static inline void qrowK_m(const std::uint8_t* w, I nb, const XRow* x0, int mr, float* o) {
  const int BB = FORMATS[DT].blockBytes;
  if (MR > 0) mr = MR;
  float A[QMR] = {0.0f, 0.0f, 0.0f, 0.0f}, B[QMR] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (I b = 0; b < nb; b++) {
    const std::uint8_t* wb = w + b * BB;
#if DSV3_QPF > 0
    for (int i = 0; i < BB; i += 64) _mm_prefetch(reinterpret_cast<const char*>(wb + DSV3_QPF + i), _MM_HINT_T0);
#endif
    QB c[8], sc[8], mins = qzero(), sc16all = qzero();
    qk_prep<DT>(wb, c, sc, mins, sc16all);
    for (int m = 0; m < mr; m++) {
      const std::int8_t* xq = x0[m].q + 256 * b;
      // Two chains (the VNNI accumulation has a few cycles of latency).
      QB e = qzero(), f = qzero();
      for (int g = 0; g < 8; g += 2) {
        e = qdot4s(e, c[g], qld(xq + 32 * g), sc[g]);
        f = qdot4s(f, c[g + 1], qld(xq + 32 * g + 32), sc[g + 1]);
      }
      QB acc = _mm256_add_epi32(e, f);
      const QB bs = qld(x0[m].bs + 16 * b);
      std::int32_t S, Mn = 0;
      if (DT == DT_Q6_K) {
        // Σ sc·(q6 − 32)·x = Σ sc·q6·x − 32·Σ_i sc_i·bsums_i.
        acc = _mm256_sub_epi32(acc, _mm256_slli_epi32(_mm256_madd_epi16(sc16all, bs), 5));
        qhsum2(acc, qzero(), &S, &Mn);
      } else {
        qhsum2(acc, _mm256_madd_epi16(bs, mins), &S, &Mn);
      }
      qblockK<DT>(wb, x0[m].d[b], S, Mn, A[m], B[m]);
    }
  }
  for (int m = 0; m < mr; m++) o[m] = B[m] + A[m];
}

/**
 * One row of x (decode at batch 1), CNT <= 8 K-quant blocks from block b: the blocks' integer
 * vectors reduced together (qhsum8x8, as the blocks of 32), S and Mn of all CNT blocks in
 * eight lanes, the products (dw·dx)·S and (dmin·dx)·Mn there too (the operations of
 * qblockK, lane by lane), then the sequential sums A += …, B −= … in block order.
 */
template <int DT, int CNT>
static inline void qgroupK(const std::uint8_t* w, I b, const XRow& x, float& A, float& B) {
  constexpr int BB = FORMATS[DT].blockBytes;
  QB accs[8], mns[8];
  for (int i = 0; i < 8; i++) {
    if (i >= CNT) {
      accs[i] = mns[i] = qzero();
      continue;
    }
    const std::uint8_t* wb = w + (b + i) * BB;
#if DSV3_QPF > 0
    for (int j = 0; j < BB; j += 64) _mm_prefetch(reinterpret_cast<const char*>(wb + DSV3_QPF + j), _MM_HINT_T0);
#endif
    QB c[8], sc[8], mins = qzero(), sc16all = qzero();
    qk_prep<DT>(wb, c, sc, mins, sc16all);
    const std::int8_t* xq = x.q + 256 * (b + i);
    QB e = qzero(), f = qzero();
    for (int g = 0; g < 8; g += 2) {
      e = qdot4s(e, c[g], qld(xq + 32 * g), sc[g]);
      f = qdot4s(f, c[g + 1], qld(xq + 32 * g + 32), sc[g + 1]);
    }
    QB acc = _mm256_add_epi32(e, f);
    const QB bs = qld(x.bs + 16 * (b + i));
    if (DT == DT_Q6_K) {
      acc = _mm256_sub_epi32(acc, _mm256_slli_epi32(_mm256_madd_epi16(sc16all, bs), 5));
      mns[i] = qzero();
    } else {
      mns[i] = _mm256_madd_epi16(bs, mins);
    }
    accs[i] = acc;
  }
  const __m256 dx = qtail_ps<CNT>(x.d + b);
  const __m256 d = _mm256_mul_ps(_mm256_cvtph_ps(qdw8<BB>(w + b * BB + (DT == DT_Q6_K ? 208 : 0), CNT)), dx);
  alignas(32) float va[8], vb[8];
  _mm256_store_ps(va, _mm256_mul_ps(d, _mm256_cvtepi32_ps(qhsum8x8(accs))));
  if (DT != DT_Q6_K) {
    const __m256 dm = _mm256_mul_ps(_mm256_cvtph_ps(qdw8<BB>(w + b * BB + 2, CNT)), dx);
    _mm256_store_ps(vb, _mm256_mul_ps(dm, _mm256_cvtepi32_ps(qhsum8x8(mns))));
  }
  for (int i = 0; i < CNT; i++) {
    A = A + va[i];
    if (DT != DT_Q6_K) B = B - vb[i];
  }
}

template <int DT>
static void qrowK1(const std::uint8_t* w, I nb, const XRow& x, float* o) {
  float A = 0.0f, B = 0.0f;
  I b = 0;
  for (; b + 8 <= nb; b += 8) qgroupK<DT, 8>(w, b, x, A, B);
  switch (nb - b) {
    case 1: qgroupK<DT, 1>(w, b, x, A, B); break;
    case 2: qgroupK<DT, 2>(w, b, x, A, B); break;
    case 3: qgroupK<DT, 3>(w, b, x, A, B); break;
    case 4: qgroupK<DT, 4>(w, b, x, A, B); break;
    case 5: qgroupK<DT, 5>(w, b, x, A, B); break;
    case 6: qgroupK<DT, 6>(w, b, x, A, B); break;
    case 7: qgroupK<DT, 7>(w, b, x, A, B); break;
    default: break;
  }
  *o = B + A;
}

template <int DT>
static void qrowK(const std::uint8_t* w, I nb, const XRow* x0, int mr, float* o) {
  if (mr == 1) qrowK1<DT>(w, nb, x0[0], o);
  else qrowK_m<DT, 0>(w, nb, x0, mr, o);
}

/** The K-quants' qrow (the blocks of 32 go through qvals32). */
template <int DT>
static void qrow(const std::uint8_t* w, I nb, const XRow* x0, int mr, float* o) {
  static_assert(qis_k(DT), "blocks of 32: qvals32");
  qrowK<DT>(w, nb, x0, mr, o);
}

#if defined(DSV3_VNNI)
// =====================================================================================
// The packed (prefill) path, AVX-512 VNNI: sixteen rows of x in the lanes of a zmm. x is
// laid out in tiles of QTILE = 16 rows (xq_tiles): for each run of 4 values, the 16 rows'
// 4 bytes (x + 128, unsigned); per block the 16 rows' scales; for Q4_K/Q5_K per block the
// 16 rows' group-of-32 sums in int16 pairs. The weight rows of a job are unpacked once into
// a panel of signed codes (qpanel_row) and each 4 codes of a row are broadcast against a
// tile: vpdpbusd gives every lane its row's exact sum, Σ (x + 128)·w, and the 128·Σw the
// offset adds is taken off per block (corr). The float32 block values and their running sums
// are then computed in the lanes with the very operations of qblock32 / qblockK.
#define DSV3_QPACKED 1
static const int QTILE = 16;

/** Bytes of one tile of 16 rows for weight dtype DT and K values. */
template <int DT>
static I xq_tile_bytes_t(I K) {
  const I nb = K / FORMATS[DT].blockElems;
  return 16 * K + 64 * nb + (DT == DT_Q4_K || DT == DT_Q5_K ? 256 * nb : 0);
}

/**
 * c[j] lane i = dword j of r[i] (i, j < 16): a 16x16 transpose of dwords (two unpack steps
 * within 128-bit lanes, then two steps moving 128-bit lanes).
 */
static inline void qtranspose16(const __m512i* r, __m512i* c) {
  __m512i a[16], b[16];
  for (int i = 0; i < 16; i += 2) {
    a[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    a[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  // b[4G + s], 128-bit lane L: dword 4L + s of rows 4G … 4G+3.
  for (int i = 0; i < 16; i += 4) {
    b[i] = _mm512_unpacklo_epi64(a[i], a[i + 2]);
    b[i + 1] = _mm512_unpackhi_epi64(a[i], a[i + 2]);
    b[i + 2] = _mm512_unpacklo_epi64(a[i + 1], a[i + 3]);
    b[i + 3] = _mm512_unpackhi_epi64(a[i + 1], a[i + 3]);
  }
  for (int s = 0; s < 4; s++) {
    const __m512i u0 = _mm512_shuffle_i32x4(b[s], b[4 + s], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512i u1 = _mm512_shuffle_i32x4(b[s], b[4 + s], _MM_SHUFFLE(3, 1, 3, 1));
    const __m512i v0 = _mm512_shuffle_i32x4(b[8 + s], b[12 + s], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512i v1 = _mm512_shuffle_i32x4(b[8 + s], b[12 + s], _MM_SHUFFLE(3, 1, 3, 1));
    c[s] = _mm512_shuffle_i32x4(u0, v0, _MM_SHUFFLE(2, 0, 2, 0));
    c[4 + s] = _mm512_shuffle_i32x4(u1, v1, _MM_SHUFFLE(2, 0, 2, 0));
    c[8 + s] = _mm512_shuffle_i32x4(u0, v0, _MM_SHUFFLE(3, 1, 3, 1));
    c[12 + s] = _mm512_shuffle_i32x4(u1, v1, _MM_SHUFFLE(3, 1, 3, 1));
  }
}

/** The tiles of rows [m0, m1) (m0 a multiple of 16), from the quantised rows. */
static void xq_tiles(int dt, I K, I m0, I m1, I M, const XQ* q) {
  const bool mins = dt == DT_Q4_K || dt == DT_Q5_K;
  const I nb = K / FORMATS[dt].blockElems;
  (void)m1;
  for (I t0 = m0; t0 < m1; t0 += 16) {
    std::uint8_t* tile = q->tiles + (t0 / 16) * q->tileBytes;
    const int rows = (int)imin(16, M - t0);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (I k = 0; k < K; k += 64) {
      __m512i r[16], c[16];
      for (int i = 0; i < 16; i++)
        r[i] = i < rows ? _mm512_xor_si512(_mm512_loadu_si512(q->rows + (t0 + i) * q->rowBytes + k), flip) : flip;
      qtranspose16(r, c);
      const int nj = (int)imin(16, (K - k) / 4);
      for (int j = 0; j < nj; j++) _mm512_storeu_si512(tile + (k / 4 + j) * 64, c[j]);
    }
    float* dx = reinterpret_cast<float*>(tile + 16 * K);
    for (I b = 0; b < nb; b++)
      for (int i = 0; i < 16; i++)
        dx[16 * b + i] = i < rows ? reinterpret_cast<const float*>(q->rows + (t0 + i) * q->rowBytes + K)[b] : 0.0f;
    if (mins) {
      std::int16_t* xm = reinterpret_cast<std::int16_t*>(tile + 16 * K + 64 * nb);
      for (I b = 0; b < nb; b++)
        for (int k = 0; k < 4; k++)
          for (int i = 0; i < 16; i++) {
            std::int16_t lo = 0, hi = 0;
            if (i < rows) {
              const std::int16_t* bs =
                  reinterpret_cast<const std::int16_t*>(q->rows + (t0 + i) * q->rowBytes + K + 4 * nb) + 16 * b;
              lo = (std::int16_t)(bs[4 * k] + bs[4 * k + 1]);
              hi = (std::int16_t)(bs[4 * k + 2] + bs[4 * k + 3]);
            }
            xm[(b * 4 + k) * 32 + 2 * i] = lo;
            xm[(b * 4 + k) * 32 + 2 * i + 1] = hi;
          }
    }
  }
}

// ---- the weight panel: per row, signed codes and per-block constants ----
/** Panel row layout for K values: codes, group scales, and per block corr, dw, dm, mins. */
template <int DT>
struct QPanel {
  static const int BE = FORMATS[DT].blockElems, G = DT == DT_Q6_K ? 16 : 32;
  static const bool KQ = BE == 256, MINS = DT == DT_Q4_K || DT == DT_Q5_K;
  I K, nb, ng, oSc, oCorr, oDw, oDm, oMin, bytes;
  explicit QPanel(I K_) : K(K_), nb(K_ / BE), ng(K_ / G) {
    oSc = K;
    oCorr = oSc + (KQ ? 4 * ng : 0);
    oDw = oCorr + 4 * nb;
    oDm = oDw + 4 * nb;
    oMin = oDm + (MINS ? 4 * nb : 0);
    bytes = (oMin + (MINS ? 16 * nb : 0) + 63) / 64 * 64;
  }
};

/** Σ of the 32 unsigned bytes of u (psadbw against zero). */
static inline int qsum_u8(QB u) {
  const QB s = _mm256_sad_epu8(u, qzero());
  const __m128i t = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  return (int)(_mm_cvtsi128_si64(t) + _mm_extract_epi64(t, 1));
}
/** Σ of bytes 0-15 and of bytes 16-31 of u. */
static inline void qsum_u8x2(QB u, int* lo, int* hi) {
  const QB s = _mm256_sad_epu8(u, qzero());
  const __m128i a = _mm256_castsi256_si128(s), b = _mm256_extracti128_si256(s, 1);
  *lo = (int)(_mm_cvtsi128_si64(a) + _mm_extract_epi64(a, 1));
  *hi = (int)(_mm_cvtsi128_si64(b) + _mm_extract_epi64(b, 1));
}

/** Unpack weight row w (K values) into its panel row p. */
template <int DT>
static void qpanel_row(const std::uint8_t* w, const QPanel<DT>& L, std::uint8_t* p) {
  const int BB = FORMATS[DT].blockBytes;
  std::int32_t* sc = reinterpret_cast<std::int32_t*>(p + L.oSc);
  std::int32_t* corr = reinterpret_cast<std::int32_t*>(p + L.oCorr);
  float* dw = reinterpret_cast<float*>(p + L.oDw);
  float* dm = reinterpret_cast<float*>(p + L.oDm);
  std::uint32_t* mp = reinterpret_cast<std::uint32_t*>(p + L.oMin);
  for (I b = 0; b < L.nb; b++) {
    const std::uint8_t* wb = w + b * BB;
    std::int8_t* codes = reinterpret_cast<std::int8_t*>(p) + b * L.BE;
    if (!L.KQ) {
      // Unsigned codes u with offset o: the signed code is u − o; Σ code = Σu − 32·o.
      QB u = q32_codes<DT>(wb);
      int o = DT == DT_Q4_0 ? 8 : 16;
      if (DT == DT_Q8_0) {
        u = _mm256_xor_si256(u, _mm256_set1_epi8((char)0x80));
        o = 128;
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes), _mm256_sub_epi8(u, _mm256_set1_epi8((char)o)));
      corr[b] = 128 * (qsum_u8(u) - 32 * o);
      dw[b] = h2f(rd16(wb));
      continue;
    }
    QB c[8], s8[8], mins = qzero(), sc16all = qzero();
    qk_prep<DT>(wb, c, s8, mins, sc16all);
    std::int32_t tot = 0;
    if (DT == DT_Q6_K) {
      for (int g = 0; g < 8; g++) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + 32 * g),
                            _mm256_sub_epi8(c[g], _mm256_set1_epi8(32)));
        int lo, hi;
        qsum_u8x2(c[g], &lo, &hi);
        const int s0 = (std::int8_t)wb[192 + 2 * g], s1 = (std::int8_t)wb[192 + 2 * g + 1];
        sc[b * 16 + 2 * g] = s0;
        sc[b * 16 + 2 * g + 1] = s1;
        tot += s0 * (lo - 16 * 32) + s1 * (hi - 16 * 32);
      }
      dw[b] = h2f(rd16(wb + 208));
    } else {
      std::uint64_t s64, m64;
      qk_scales64(wb + 4, &s64, &m64);
      for (int g = 0; g < 8; g++) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + 32 * g), c[g]);
        const int s = (int)((s64 >> (8 * g)) & 0xff);
        sc[b * 8 + g] = s;
        tot += s * qsum_u8(c[g]);
      }
      for (int k = 0; k < 4; k++)
        mp[b * 4 + k] = (std::uint32_t)((m64 >> (16 * k)) & 0xff) | (std::uint32_t)((m64 >> (16 * k + 8)) & 0xff) << 16;
      dw[b] = h2f(rd16(wb));
      dm[b] = h2f(rd16(wb + 2));
    }
    corr[b] = 128 * tot;
  }
}

/**
 * NR weight rows (panel rows pr[0..NR)) against one tile of 16 rows of x: out[i·ldo + j] for
 * rows i < rows and j < NR.
 */
template <int DT, int NR>
static void qtile(const QPanel<DT>& L, const std::uint8_t* const* pr, const std::uint8_t* tile, float* out, I ldo,
                  int rows) {
  const int G = L.G, GPB = L.BE / G;  // values per group, groups per block
  const std::uint8_t* xt = tile;
  const float* dxt = reinterpret_cast<const float*>(tile + 16 * L.K);
  const __m512i* xm = reinterpret_cast<const __m512i*>(tile + 16 * L.K + 64 * L.nb);
  __m512 A[NR], Bv[NR];
  for (int j = 0; j < NR; j++) A[j] = Bv[j] = _mm512_setzero_ps();
  for (I b = 0; b < L.nb; b++) {
    __m512i S[NR];
    for (int j = 0; j < NR; j++)
      S[j] = _mm512_set1_epi32(-reinterpret_cast<const std::int32_t*>(pr[j] + L.oCorr)[b]);
    for (int g = 0; g < GPB; g++) {
      const I k0 = b * L.BE + g * G;  // first value of the group
      __m512i xv[8];
      for (int q = 0; q < G / 4; q++) xv[q] = _mm512_loadu_si512(xt + (k0 / 4 + q) * 64);
      // Two chains per weight row (vpdpbusd's latency), the rows interleaved.
      __m512i P0[NR], P1[NR];
      for (int j = 0; j < NR; j++) {
        P0[j] = L.KQ ? _mm512_setzero_si512() : S[j];
        P1[j] = _mm512_setzero_si512();
      }
      for (int q = 0; q < G / 4; q += 2)
        for (int j = 0; j < NR; j++) {
          const std::int32_t* wc = reinterpret_cast<const std::int32_t*>(pr[j] + k0);
          P0[j] = _mm512_dpbusd_epi32(P0[j], xv[q], _mm512_set1_epi32(wc[q]));
          P1[j] = _mm512_dpbusd_epi32(P1[j], xv[q + 1], _mm512_set1_epi32(wc[q + 1]));
        }
      for (int j = 0; j < NR; j++) {
        const __m512i P = _mm512_add_epi32(P0[j], P1[j]);
        if (!L.KQ) {
          S[j] = P;
        } else {
          const std::int32_t sg = reinterpret_cast<const std::int32_t*>(pr[j] + L.oSc)[b * GPB + g];
          S[j] = _mm512_add_epi32(S[j], _mm512_mullo_epi32(P, _mm512_set1_epi32(sg)));
        }
      }
    }
    const __m512 dx = _mm512_loadu_ps(dxt + 16 * b);
    for (int j = 0; j < NR; j++) {
      const __m512 sf = _mm512_cvtepi32_ps(S[j]);
      const __m512 dw = _mm512_set1_ps(reinterpret_cast<const float*>(pr[j] + L.oDw)[b]);
      if (DT == DT_Q4_0) {
        Bv[j] = _mm512_add_ps(Bv[j], _mm512_mul_ps(_mm512_mul_ps(sf, dw), dx));
      } else if (DT == DT_Q5_0) {
        Bv[j] = _mm512_add_ps(Bv[j], _mm512_mul_ps(_mm512_mul_ps(dw, dx), sf));
      } else if (DT == DT_Q8_0) {
        Bv[j] = _mm512_add_ps(Bv[j], _mm512_mul_ps(sf, _mm512_mul_ps(dw, dx)));
      } else {
        A[j] = _mm512_add_ps(A[j], _mm512_mul_ps(_mm512_mul_ps(dw, dx), sf));
        if (L.MINS) {
          const std::int32_t* mp = reinterpret_cast<const std::int32_t*>(pr[j] + L.oMin) + 4 * b;
          __m512i mn = _mm512_setzero_si512();
          for (int k = 0; k < 4; k++) mn = _mm512_dpwssd_epi32(mn, xm[4 * b + k], _mm512_set1_epi32(mp[k]));
          const __m512 dm = _mm512_mul_ps(_mm512_set1_ps(reinterpret_cast<const float*>(pr[j] + L.oDm)[b]), dx);
          Bv[j] = _mm512_sub_ps(Bv[j], _mm512_mul_ps(dm, _mm512_cvtepi32_ps(mn)));
        }
      }
    }
  }
  for (int j = 0; j < NR; j++) {
    alignas(64) float t[16];
    _mm512_store_ps(t, L.KQ ? _mm512_add_ps(Bv[j], A[j]) : Bv[j]);
    for (int i = 0; i < rows; i++) out[i * ldo + j] = t[i];
  }
}

#else  // AVX2
// =====================================================================================
// The packed (prefill) path, AVX2: eight rows of x in the lanes of a ymm. x in tiles of
// QTILE = 8 rows (xq_tiles): for each run of 4 values the 8 rows' 4 bytes (int8 as they
// are), per block the 8 rows' scales and either their Σq (Q4_0/Q5_0/Q8_0) or their 16
// bsums in int16 pairs (K-quants). The weight rows of a job go to a panel of unsigned codes
// (offset o: 8, 16, 0, 0, 0, 32 for Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K; Q8_0 keeps its signed
// bytes and their magnitudes, for the sign trick). A broadcast 4-code group against a tile:
// vpmaddubsw (pairs, < 2^15: codes < 64 or |w| <= 128) then vpmaddwd by 1 or by the group's
// scale gives each lane its row's exact sum; o·Σx comes off through the tile's sums. The
// float32 formula then runs in the 8 lanes.
#define DSV3_QPACKED 1
static const int QTILE = 8;

template <int DT>
static I xq_tile_bytes_t(I K) {
  const I nb = K / FORMATS[DT].blockElems;
  return 8 * K + 32 * nb + (qis_k(DT) ? 256 * nb : 32 * nb);
}

/** c[j] lane i = dword j of r[i] (i, j < 8). */
static inline void qtranspose8(const QB* r, QB* c) {
  QB a[8], b[8];
  for (int i = 0; i < 8; i += 2) {
    a[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
    a[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
  }
  // b[4G + s], 128-bit lane L: dword 4L + s of rows 4G … 4G+3.
  for (int i = 0; i < 8; i += 4) {
    b[i] = _mm256_unpacklo_epi64(a[i], a[i + 2]);
    b[i + 1] = _mm256_unpackhi_epi64(a[i], a[i + 2]);
    b[i + 2] = _mm256_unpacklo_epi64(a[i + 1], a[i + 3]);
    b[i + 3] = _mm256_unpackhi_epi64(a[i + 1], a[i + 3]);
  }
  for (int s4 = 0; s4 < 4; s4++) {
    c[s4] = _mm256_permute2x128_si256(b[s4], b[4 + s4], 0x20);
    c[4 + s4] = _mm256_permute2x128_si256(b[s4], b[4 + s4], 0x31);
  }
}

static void xq_tiles(int dt, I K, I m0, I m1, I M, const XQ* q) {
  const bool kq = qis_k(dt);
  const I nb = K / FORMATS[dt].blockElems;
  for (I t0 = m0; t0 < m1; t0 += 8) {
    std::uint8_t* tile = q->tiles + (t0 / 8) * q->tileBytes;
    const int rows = (int)imin(8, M - t0);
    for (I k = 0; k < K; k += 32) {
      QB r[8], c[8];
      for (int i = 0; i < 8; i++) r[i] = i < rows ? qld(q->rows + (t0 + i) * q->rowBytes + k) : qzero();
      qtranspose8(r, c);
      for (int j = 0; j < 8; j++) _mm256_storeu_si256(reinterpret_cast<__m256i*>(tile + (k / 4 + j) * 32), c[j]);
    }
    float* dx = reinterpret_cast<float*>(tile + 8 * K);
    std::int32_t* xs = reinterpret_cast<std::int32_t*>(tile + 8 * K + 32 * nb);
    for (I b = 0; b < nb; b++)
      for (int i = 0; i < 8; i++) {
        const std::uint8_t* row = q->rows + (t0 + i) * q->rowBytes;
        dx[8 * b + i] = i < rows ? reinterpret_cast<const float*>(row + K)[b] : 0.0f;
        if (kq) {
          for (int k = 0; k < 8; k++)
            xs[(b * 8 + k) * 8 + i] = i < rows ? reinterpret_cast<const std::int32_t*>(row + K + 4 * nb)[8 * b + k] : 0;
        } else {
          xs[8 * b + i] = i < rows ? reinterpret_cast<const std::int32_t*>(row + K + 4 * nb)[b] : 0;
        }
      }
  }
}

template <int DT>
struct QPanel {
  static const int BE = FORMATS[DT].blockElems, G = DT == DT_Q6_K ? 16 : 32;
  static const bool KQ = BE == 256, MINS = DT == DT_Q4_K || DT == DT_Q5_K;
  I K, nb, ng, oAbs, oSc, oDw, oDm, oPair, bytes;
  explicit QPanel(I K_) : K(K_), nb(K_ / BE), ng(K_ / G) {
    oAbs = K;
    oSc = oAbs + (DT == DT_Q8_0 ? K : 0);
    oDw = oSc + (KQ ? 4 * ng : 0);
    oDm = oDw + 4 * nb;
    oPair = oDm + (MINS ? 4 * nb : 0);
    bytes = (oPair + (KQ ? 32 * nb : 0) + 63) / 64 * 64;
  }
};

template <int DT>
static void qpanel_row(const std::uint8_t* w, const QPanel<DT>& L, std::uint8_t* p) {
  const int BB = FORMATS[DT].blockBytes;
  std::uint32_t* sc = reinterpret_cast<std::uint32_t*>(p + L.oSc);
  float* dw = reinterpret_cast<float*>(p + L.oDw);
  float* dm = reinterpret_cast<float*>(p + L.oDm);
  std::uint32_t* pair = reinterpret_cast<std::uint32_t*>(p + L.oPair);
  const auto pk = [](int lo, int hi) { return (std::uint32_t)(std::uint16_t)lo | (std::uint32_t)(std::uint16_t)hi << 16; };
  for (I b = 0; b < L.nb; b++) {
    const std::uint8_t* wb = w + b * BB;
    std::uint8_t* codes = p + b * L.BE;
    if (!L.KQ) {
      const QB u = q32_codes<DT>(wb);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes), u);
      if (DT == DT_Q8_0) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + L.oAbs + b * 32), _mm256_abs_epi8(u));
      dw[b] = h2f(rd16(wb));
      continue;
    }
    QB c[8], s8[8], mins = qzero(), sc16all = qzero();
    qk_prep<DT>(wb, c, s8, mins, sc16all);
    for (int g = 0; g < 8; g++) _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + 32 * g), c[g]);
    if (DT == DT_Q6_K) {
      for (int j = 0; j < 16; j++) {
        const int v = (std::int8_t)wb[192 + j];
        sc[b * 16 + j] = pk(v, v);
      }
      for (int k = 0; k < 8; k++) pair[b * 8 + k] = pk((std::int8_t)wb[192 + 2 * k], (std::int8_t)wb[193 + 2 * k]);
      dw[b] = h2f(rd16(wb + 208));
    } else {
      std::uint64_t s64, m64;
      qk_scales64(wb + 4, &s64, &m64);
      for (int g = 0; g < 8; g++) {
        const int v = (int)((s64 >> (8 * g)) & 0xff), m = (int)((m64 >> (8 * g)) & 0xff);
        sc[b * 8 + g] = pk(v, v);
        pair[b * 8 + g] = pk(m, m);
      }
      dw[b] = h2f(rd16(wb));
      dm[b] = h2f(rd16(wb + 2));
    }
  }
}

template <int DT, int NR>
static void qtile(const QPanel<DT>& L, const std::uint8_t* const* pr, const std::uint8_t* tile, float* out, I ldo,
                  int rows) {
  const int G = L.G, GPB = L.BE / G;
  const float* dxt = reinterpret_cast<const float*>(tile + 8 * L.K);
  const std::int32_t* xst = reinterpret_cast<const std::int32_t*>(tile + 8 * L.K + 32 * L.nb);
  const QB ones = _mm256_set1_epi16(1);
  const int sh = DT == DT_Q4_0 ? 3 : 4;  // offset 8, 16
  __m256 A[NR], Bv[NR];
  for (int j = 0; j < NR; j++) A[j] = Bv[j] = _mm256_setzero_ps();
  for (I b = 0; b < L.nb; b++) {
    QB S[NR];
    const QB init = (DT == DT_Q4_0 || DT == DT_Q5_0)
                        ? _mm256_sub_epi32(qzero(), _mm256_slli_epi32(qld(xst + 8 * b), sh))
                        : qzero();
    for (int j = 0; j < NR; j++) S[j] = init;
    for (int g = 0; g < GPB; g++) {
      const I k0 = b * L.BE + g * G;
      QB scv[NR];
      for (int j = 0; j < NR; j++)
        scv[j] = L.KQ ? _mm256_set1_epi32((int)reinterpret_cast<const std::uint32_t*>(pr[j] + L.oSc)[b * GPB + g]) : ones;
      for (int q = 0; q < G / 4; q++) {
        const QB x = qld(tile + (k0 / 4 + q) * 32);
        for (int j = 0; j < NR; j++) {
          const int wc = *reinterpret_cast<const int*>(pr[j] + k0 + 4 * q);
          QB pp;
          if (DT == DT_Q8_0) {
            const int wa = *reinterpret_cast<const int*>(pr[j] + L.oAbs + k0 + 4 * q);
            pp = _mm256_maddubs_epi16(_mm256_set1_epi32(wa), _mm256_sign_epi8(x, _mm256_set1_epi32(wc)));
          } else {
            pp = _mm256_maddubs_epi16(_mm256_set1_epi32(wc), x);
          }
          S[j] = _mm256_add_epi32(S[j], _mm256_madd_epi16(pp, scv[j]));
        }
      }
    }
    const __m256 dx = _mm256_loadu_ps(dxt + 8 * b);
    for (int j = 0; j < NR; j++) {
      const __m256 dw = _mm256_set1_ps(reinterpret_cast<const float*>(pr[j] + L.oDw)[b]);
      if (!L.KQ) {
        const __m256 sf = _mm256_cvtepi32_ps(S[j]);
        __m256 v;
        if (DT == DT_Q4_0) v = _mm256_mul_ps(_mm256_mul_ps(sf, dw), dx);
        else if (DT == DT_Q5_0) v = _mm256_mul_ps(_mm256_mul_ps(dw, dx), sf);
        else v = _mm256_mul_ps(sf, _mm256_mul_ps(dw, dx));
        Bv[j] = _mm256_add_ps(Bv[j], v);
        continue;
      }
      // The bsums against the block's pairs: Q6_K's offset 32 (Σ sc·bsums), Q4_K/Q5_K's mins.
      const std::uint32_t* pj = reinterpret_cast<const std::uint32_t*>(pr[j] + L.oPair) + 8 * b;
      QB t = qzero();
      for (int k = 0; k < 8; k++) t = _mm256_add_epi32(t, _mm256_madd_epi16(qld(xst + (b * 8 + k) * 8), _mm256_set1_epi32((int)pj[k])));
      if (DT == DT_Q6_K) S[j] = _mm256_sub_epi32(S[j], _mm256_slli_epi32(t, 5));
      A[j] = _mm256_add_ps(A[j], _mm256_mul_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(S[j])));
      if (L.MINS) {
        const __m256 dm = _mm256_mul_ps(_mm256_set1_ps(reinterpret_cast<const float*>(pr[j] + L.oDm)[b]), dx);
        Bv[j] = _mm256_sub_ps(Bv[j], _mm256_mul_ps(dm, _mm256_cvtepi32_ps(t)));
      }
    }
  }
  for (int j = 0; j < NR; j++) {
    alignas(32) float t[8];
    _mm256_store_ps(t, L.KQ ? _mm256_add_ps(Bv[j], A[j]) : Bv[j]);
    for (int i = 0; i < rows; i++) out[i * ldo + j] = t[i];
  }
}
#endif  // DSV3_VNNI

#if defined(DSV3_QPACKED)
static thread_local Scratch tl_qpanel;

/**
 * The packed path: panels of up to 48 weight rows (fewer for long rows, so that a panel stays
 * within about 384 KiB of the L2), each run against the tiles of [m0, m1).
 */
template <int DT>
static void qpacked(const GemmNT* g, I m0, I m1, I n0, I n1) {
  const WView& w = g->w;
  const QPanel<DT> L(w.cols);
  const I PN = imin(48, ((I)384 * 1024 / L.bytes) / 4 * 4 > 4 ? ((I)384 * 1024 / L.bytes) / 4 * 4 : 4);
  std::uint8_t* panel = reinterpret_cast<std::uint8_t*>(tl_qpanel.get(PN * L.bytes / 4 + 16));
  const std::uint8_t* base = static_cast<const std::uint8_t*>(w.data);
  const int NR = 4;
  for (I nb0 = n0; nb0 < n1; nb0 += PN) {
    const I pn = imin(PN, n1 - nb0);
    for (I j = 0; j < pn; j++) qpanel_row<DT>(base + (g->r0 + nb0 + j) * w.ld, L, panel + j * L.bytes);
    for (I t0 = m0; t0 < m1; t0 += QTILE) {
      const std::uint8_t* tile = g->xq->tiles + (t0 / QTILE) * g->xq->tileBytes;
      const int rows = (int)imin(QTILE, m1 - t0);
      for (I j = 0; j < pn; j += NR) {
        const int nr = (int)imin(NR, pn - j);
        const std::uint8_t* pr[4];
        for (int r = 0; r < 4; r++) pr[r] = panel + (j + (r < nr ? r : nr - 1)) * L.bytes;
        float* out = g->out + t0 * g->ldo + nb0 + j;
        switch (nr) {
          case 4: qtile<DT, 4>(L, pr, tile, out, g->ldo, rows); break;
          case 3: qtile<DT, 3>(L, pr, tile, out, g->ldo, rows); break;
          case 2: qtile<DT, 2>(L, pr, tile, out, g->ldo, rows); break;
          default: qtile<DT, 1>(L, pr, tile, out, g->ldo, rows); break;
        }
      }
    }
  }
}
#endif
