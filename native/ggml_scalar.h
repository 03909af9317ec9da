// ggml's scalar conversions, bit for bit, shared by the weight quantizer (quantize.cc) and the
// activation quantizers of the integer matmuls (qdot_impl.h). Static inline, so every unit
// (each instruction-set level included) keeps its own copy; this header includes nothing, and
// may be included inside a namespace: its includer provides <cstdint>, <cstring> and INT32_MIN.
#ifndef DSV3_GGML_SCALAR_H
#define DSV3_GGML_SCALAR_H

/** float32 → IEEE half bits, nearest-even, overflow to infinity (ggml's FP32_TO_FP16). */
static inline std::uint16_t ggml_f32_to_f16(float v) {
  std::uint32_t x;
  std::memcpy(&x, &v, 4);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const int exp = (int)((x >> 23) & 0xff);
  std::uint32_t mant = x & 0x7fffffu;
  if (exp == 0xff) return (std::uint16_t)(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0u));
  const int e = exp - 127 + 15;
  if (e >= 0x1f) return (std::uint16_t)(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return (std::uint16_t)sign;
    mant |= 0x800000u;
    const int shift = 14 - e;
    const std::uint32_t half = 1u << (shift - 1), rem = mant & ((1u << shift) - 1);
    std::uint32_t h = mant >> shift;
    if (rem > half || (rem == half && (h & 1))) h++;
    return (std::uint16_t)(sign | h);
  }
  std::uint32_t h = ((std::uint32_t)e << 10) | (mant >> 13);
  const std::uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;  // a carry into the exponent is right
  return (std::uint16_t)(sign | h);
}

/** C's float → int8_t as x86-64 compilers emit it: truncate to int32 (INT32_MIN for NaN and out of range), low byte. */
static inline std::int8_t ggml_trunc_i8(float r) {
  const std::int32_t i = (r >= -2147483648.0f && r < 2147483648.0f) ? (std::int32_t)r : INT32_MIN;
  return (std::int8_t)(std::uint8_t)(std::uint32_t)i;
}

/** ggml's nearest_int: add 1.5·2^23 in float32 and read the low mantissa bits back (|f| < 2^22). */
static inline int ggml_nearest_int(float f) {
  const float v = f + 12582912.0f;
  std::int32_t i;
  std::memcpy(&i, &v, 4);
  return (i & 0x007fffff) - 0x00400000;
}

#endif
