// Quantising weight rows into ggml block formats (quantize.cc): the native twin of
// src/tensor/quants.ts quantizeBlocks, byte for byte.
#pragma once
#include "common.h"

namespace dsv3 {

/**
 * Every row of `w` (any stored dtype), widened to float32 as the reference decodeRow does,
 * quantised to `type` blocks (a block dtype code, DT_Q4_0 … DT_Q6_K) written row after row
 * into out, which holds rows · (cols / blockElems(type)) · blockBytes(type) bytes. The caller
 * (binding.cc) has checked the type, that cols is a multiple of its block and the sizes.
 * Rows are split over the pool; the bytes do not depend on the thread count.
 */
void op_quantize(std::uint8_t* out, const WView& w, int type);

}  // namespace dsv3
