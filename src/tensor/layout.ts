// Moving blocks between strided row-major layouts (per-head slices of [T, H, d] tensors).

/** Copy a [rows, width] block: row r of src at sOff + r·sStride to dst at dOff + r·dStride. */
export function copyBlock(
  dst: Float32Array,
  dOff: number,
  dStride: number,
  src: Float32Array,
  sOff: number,
  sStride: number,
  rows: number,
  width: number,
): void {
  for (let r = 0; r < rows; r++) {
    dst.set(src.subarray(sOff + r * sStride, sOff + r * sStride + width), dOff + r * dStride);
  }
}
