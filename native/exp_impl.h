// KernelTable::exp_sum: p[i] = exp((x[i] − m) · s) and their sum in index order (unless !sum), where exp is
// V8's Math.exp (js_math.h) evaluated DSV3_EXP_LANES doubles at a time: the same operations on
// every lane, the branches of the scalar code turned into selects, so every value is the
// scalar's bit for bit. Arguments are <= 0 or -Infinity (the sampler subtracts the maximum),
// which leaves three ranges: |x| <= ln2/2 (no reduction), ln2/2 < |x| < 1.5·ln2 (k = -1), and
// the general reduction; below −745.13 the result is 0.
//
// Included by each level's kernels file inside its anonymous namespace (after js_math.h at
// file scope), with DSV3_EXP_LANES defined (GCC/Clang vector extensions; other compilers get
// the scalar loop).

#if defined(__GNUC__)
typedef double ExpVD __attribute__((vector_size(DSV3_EXP_LANES * 8)));
typedef long long ExpVL __attribute__((vector_size(DSV3_EXP_LANES * 8)));
typedef int ExpVI __attribute__((vector_size(DSV3_EXP_LANES * 4)));

static inline ExpVD exp_bcast(double a) {
  ExpVD v;
  for (int l = 0; l < DSV3_EXP_LANES; l++) v[l] = a;
  return v;
}

// trunc(y) for |y| < 2^31, and y·2^k (k an integer-valued double, y·2^k rounded once, as the
// scalar's y·2^k or y·2^(k+1000)·2^-1000 is): one instruction each where the level has it.
static inline ExpVD exp_trunc(ExpVD y) {
#if DSV3_EXP_LANES == 8 && defined(__AVX512F__)
  return (ExpVD)_mm512_roundscale_pd((__m512d)y, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
#elif DSV3_EXP_LANES == 4 && defined(__AVX__)
  return (ExpVD)_mm256_round_pd((__m256d)y, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
#else
  return __builtin_convertvector(__builtin_convertvector(y, ExpVI), ExpVD);
#endif
}

static inline ExpVD exp_scale(ExpVD y, ExpVD kd) {
#if DSV3_EXP_LANES == 8 && defined(__AVX512F__)
  return (ExpVD)_mm512_scalef_pd((__m512d)y, (__m512d)kd);
#else
  // 2^k (2^(k+1000) below k = −1021, then times 2^−1000) from the bits of 2^52 + 1023 + k.
  const ExpVL deep = kd < -1021.0;
  const ExpVD kb = deep ? kd + 1000.0 : kd;
  const ExpVD twopk = (ExpVD)((ExpVL)(kb + (0x1p52 + 1023.0)) << 52);
  const ExpVD r = y * twopk;
  return deep ? r * 0x1p-1000 : r;
#endif
}

static inline ExpVD exp_neg_lanes(ExpVD x) {
  using namespace jsmath;
  // fdlibm tests the high word of |x|; for positive doubles that is comparing the doubles
  // whose high words are the thresholds (low word 0).
  const double kSmall = 0x1.62e43p-2;      // high word 0x3FD62E43: |x| <= 0.5·ln2 below it
  const double kBand = 0x1.0a2b2p+0;       // high word 0x3FF0A2B2: |x| < 1.5·ln2 below it
  const ExpVD ax = -x;
  const ExpVL under = x < -7.45133219101941108420e+02;
  const ExpVL small = ax < kSmall;
  const ExpVL tiny = ax < 0x1p-28;
  const ExpVL band = ax < kBand;
  const ExpVD xs = under ? exp_bcast(-1.0) : x;  // keeps the conversion below in range
  ExpVD kd = exp_trunc(kInvLn2 * xs - 0.5);
  kd = band ? exp_bcast(-1.0) : kd;
  kd = small ? exp_bcast(0.0) : kd;
  const ExpVD hi = xs - kd * kLn2Hi;
  const ExpVD lo = kd * kLn2Lo;
  const ExpVD r = small ? xs : hi - lo;
  const ExpVD t = r * r;
  const ExpVD c = r - t * (kExpP1 + t * (kExpP2 + t * (kExpP3 + t * (kExpP4 + t * kExpP5))));
  // One division serves both forms: (r·c)/(c − 2) is exactly −((r·c)/(2 − c)).
  const ExpVD q = (r * c) / (2.0 - c);
  const ExpVD y0 = 1.0 - (-q - r);
  const ExpVD y1 = 1.0 - ((lo - q) - hi);
  const ExpVD res = small ? (tiny ? 1.0 + xs : y0) : exp_scale(y1, kd);
  return under ? exp_bcast(0.0) : res;
}

static double exp_sum(const double* x, double* p, std::int64_t n, double m, double s, int sum) {
  double total = 0;
  std::int64_t i = 0;
  if (p && !sum) {
    for (; i + DSV3_EXP_LANES <= n; i += DSV3_EXP_LANES) {
      ExpVD v;
      std::memcpy(&v, x + i, sizeof v);
      const ExpVD e = exp_neg_lanes((v - m) * s);
      std::memcpy(p + i, &e, sizeof e);
    }
  }
  for (; i + DSV3_EXP_LANES <= n; i += DSV3_EXP_LANES) {
    ExpVD v;
    std::memcpy(&v, x + i, sizeof v);
    const ExpVD e = exp_neg_lanes((v - m) * s);
    if (p) std::memcpy(p + i, &e, sizeof e);
    for (int l = 0; l < DSV3_EXP_LANES; l++) total += e[l];
  }
  for (; i < n; i++) {  // the last few
    const double e = jsmath::exp((x[i] - m) * s);
    if (p) p[i] = e;
    total += e;
  }
  return total;
}
#else
static double exp_sum(const double* x, double* p, std::int64_t n, double m, double s, int) {
  double total = 0;
  for (std::int64_t i = 0; i < n; i++) {
    const double e = jsmath::exp((x[i] - m) * s);
    if (p) p[i] = e;
    total += e;
  }
  return total;
}
#endif
