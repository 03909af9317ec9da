// Math.exp, Math.log and Math.log2 as V8 computes them, so that native code gets the same
// doubles as JavaScript: Node 20's V8 runs fdlibm's algorithms (Sun Microsystems' freely
// distributable libm, e_exp.c / e_log.c / e_log2.c), and these repeat them operation for
// operation (checked bit for bit against the running Node by src/kernels/sample.test.ts, and
// at load by src/kernels/native.ts, which falls back to the reference sampler on a mismatch).
// Needs -ffp-contract=off (no fused multiply-adds), as the whole addon is built.
// Everything here has internal linkage: the header is included by units built with different
// instruction sets (see common.h).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace dsv3 {
namespace {
namespace jsmath {

inline std::uint64_t bits(double d) {
  std::uint64_t u;
  std::memcpy(&u, &d, 8);
  return u;
}
inline double from_bits(std::uint64_t u) {
  double d;
  std::memcpy(&d, &u, 8);
  return d;
}
inline std::int32_t hi_word(double d) { return (std::int32_t)(bits(d) >> 32); }
inline double with_hi(double d, std::uint32_t h) {
  return from_bits((bits(d) & 0xffffffffu) | ((std::uint64_t)h << 32));
}

// exp: x = k·ln2 + r (r as hi − lo), exp(r) from a degree-5 rational form, times 2^k.
// The constants are fdlibm's (as hex in its source: ln2HI 0x3FE62E42FEE00000, …).
constexpr double kLn2Hi = 6.93147180369123816490e-01, kLn2Lo = 1.90821492927058770002e-10,
                 kInvLn2 = 1.44269504088896338700e+00, kExpP1 = 1.66666666666666019037e-01,
                 kExpP2 = -2.77777777770155933842e-03, kExpP3 = 6.61375632143793436117e-05,
                 kExpP4 = -1.65339022054652515390e-06, kExpP5 = 4.13813679705723846039e-08;

inline double exp(double x) {
  const std::uint32_t hx = (std::uint32_t)(bits(x) >> 32);
  const bool neg = (hx >> 31) != 0;
  const std::uint32_t ax = hx & 0x7fffffffu;
  if (ax >= 0x40862e42u) {
    if (ax >= 0x7ff00000u) {
      if (((ax & 0xfffffu) | (std::uint32_t)bits(x)) != 0) return x + x;
      return neg ? 0.0 : x;
    }
    if (x > 7.09782712893383973096e+02) return INFINITY;
    if (x < -7.45133219101941108420e+02) return 0.0;
  }
  double hi = 0, lo = 0;
  int k = 0;
  if (ax > 0x3fd62e42u) {
    if (ax < 0x3ff0a2b2u) {
      if (x == 1.0) return 2.718281828459045;
      hi = neg ? x + kLn2Hi : x - kLn2Hi;
      lo = neg ? -kLn2Lo : kLn2Lo;
      k = neg ? -1 : 1;
    } else {
      k = (int)(kInvLn2 * x + (neg ? -0.5 : 0.5));
      const double t = k;
      hi = x - t * kLn2Hi;
      lo = t * kLn2Lo;
    }
    x = hi - lo;
  } else if (ax < 0x3e300000u) {
    return 1.0 + x;
  }
  const double t = x * x;
  const double c = x - t * (kExpP1 + t * (kExpP2 + t * (kExpP3 + t * (kExpP4 + t * kExpP5))));
  if (k == 0) return 1.0 - ((x * c) / (c - 2.0) - x);
  const double y = 1.0 - ((lo - (x * c) / (2.0 - c)) - hi);
  if (k >= -1021) {
    if (k == 1024) return y * 2.0 * 0x1p1023;
    return y * from_bits((std::uint64_t)(0x3ff + k) << 52);
  }
  return y * from_bits((std::uint64_t)(0x3ff + k + 1000) << 52) * 0x1p-1000;
}

constexpr double kLg1 = 6.666666666666735130e-01, kLg2 = 3.999999999940941908e-01,
                 kLg3 = 2.857142874366239149e-01, kLg4 = 2.222219843214978396e-01,
                 kLg5 = 1.818357216161805012e-01, kLg6 = 1.531383769920937332e-01,
                 kLg7 = 1.479819860511658591e-01, kTwo54 = 1.80143985094819840000e+16;

// x = 2^k · (1 + f) with 1 + f in [sqrt(2)/2, sqrt(2)); false for the special inputs, whose
// result is then in *special.
inline bool log_reduce(double& x, int& k, std::int32_t& hxOut, double* special) {
  std::int32_t hx = hi_word(x);
  const std::uint32_t lx = (std::uint32_t)bits(x);
  k = 0;
  if (hx < 0x00100000) {
    if (((hx & 0x7fffffff) | (std::int32_t)lx) == 0) return *special = -INFINITY, false;
    if (hx < 0) return *special = NAN, false;
    k -= 54;
    x *= kTwo54;
    hx = hi_word(x);
  }
  if (hx >= 0x7ff00000) return *special = x + x, false;
  k += (hx >> 20) - 1023;
  hx &= 0x000fffff;
  const std::int32_t i = (hx + 0x95f64) & 0x100000;
  x = with_hi(x, (std::uint32_t)(hx | (i ^ 0x3ff00000)));
  k += i >> 20;
  hxOut = hx;
  return true;
}

inline double log(double x) {
  constexpr double ln2_hi = kLn2Hi, ln2_lo = kLn2Lo;
  int k;
  std::int32_t hx;
  double special;
  if (!log_reduce(x, k, hx, &special)) return special;
  const double f = x - 1.0;
  if ((0x000fffff & (2 + hx)) < 3) {
    if (f == 0.0) {
      if (k == 0) return 0.0;
      const double dk = k;
      return dk * ln2_hi + dk * ln2_lo;
    }
    const double R = f * f * (0.5 - 0.33333333333333333 * f);
    if (k == 0) return f - R;
    const double dk = k;
    return dk * ln2_hi - ((R - dk * ln2_lo) - f);
  }
  const double s = f / (2.0 + f), dk = k, z = s * s, w = z * z;
  const std::int32_t i = (hx - 0x6147a) | (0x6b851 - hx);
  const double t1 = w * (kLg2 + w * (kLg4 + w * kLg6));
  const double t2 = z * (kLg1 + w * (kLg3 + w * (kLg5 + w * kLg7)));
  const double R = t2 + t1;
  if (i > 0) {
    const double hfsq = 0.5 * f * f;
    if (k == 0) return f - (hfsq - s * (hfsq + R));
    return dk * ln2_hi - ((hfsq - (s * (hfsq + R) + dk * ln2_lo)) - f);
  }
  if (k == 0) return f - s * (f - R);
  return dk * ln2_hi - ((s * (f - R) - dk * ln2_lo) - f);
}

inline double log2(double x) {
  constexpr double ivln2hi = 1.44269504072144627571e+00, ivln2lo = 1.67517131648865118353e-10;
  if (bits(x) == 0x3ff0000000000000ull) return 0.0;
  int k;
  std::int32_t hx;
  double special;
  if (!log_reduce(x, k, hx, &special)) return special;
  const double y = k, f = x - 1.0, hfsq = 0.5 * f * f;
  const double s = f / (2.0 + f), z = s * s, w = z * z;
  const double t1 = w * (kLg2 + w * (kLg4 + w * kLg6));
  const double t2 = z * (kLg1 + w * (kLg3 + w * (kLg5 + w * kLg7)));
  const double r = s * (hfsq + (t2 + t1));
  const double hi = from_bits(bits(f - hfsq) & 0xffffffff00000000ull);
  const double lo = (f - hi) - hfsq + r;
  const double vhi = hi * ivln2hi;
  double vlo = (lo + hi) * ivln2lo + lo * ivln2hi;
  const double sum = y + vhi;
  vlo += (y - sum) + vhi;
  return vlo + sum;
}

}  // namespace jsmath
}  // namespace
}  // namespace dsv3
