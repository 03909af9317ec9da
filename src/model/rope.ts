// YaRN rotary frequencies and the attention softmax scale of DeepSeek-V3 MLA.
// Follows the official reference (inference/model.py, precompute_freqs_cis), computed in
// float32 like it. RoPE itself rotates interleaved pairs (x[2i], x[2i+1]); see kernels.rope.

import type { DeepseekConfig } from '../io/config.ts';

const f = Math.fround;

/** True when YaRN applies: the context was extended past the original training length. */
export function yarnActive(cfg: DeepseekConfig): boolean {
  const rs = cfg.rope_scaling;
  return rs !== null && cfg.max_position_embeddings > rs.original_max_position_embeddings;
}

/** The qk_rope_head_dim / 2 rotation frequencies f_i', float32. */
export function ropeFrequencies(cfg: DeepseekConfig): Float32Array {
  const d = cfg.qk_rope_head_dim;
  const theta = cfg.rope_theta;
  const half = d / 2;
  const freqs = new Float32Array(half);
  for (let i = 0; i < half; i++) freqs[i] = f(1 / f(theta ** f((2 * i) / d)));
  const rs = cfg.rope_scaling;
  if (!rs || !yarnActive(cfg)) return freqs;

  // Dimensions whose wavelength fits in the original context keep their frequency; the
  // slow ones are divided by `factor`; a linear ramp blends the band in between.
  const orig = rs.original_max_position_embeddings;
  const corr = (rot: number) => (d * Math.log(orig / (rot * 2 * Math.PI))) / (2 * Math.log(theta));
  const low = Math.max(Math.floor(corr(rs.beta_fast)), 0);
  let high = Math.min(Math.ceil(corr(rs.beta_slow)), d - 1);
  if (low === high) high += 0.001;
  for (let i = 0; i < half; i++) {
    const ramp = f(Math.min(Math.max((i - low) / (high - low), 0), 1));
    freqs[i] = f(f(f(freqs[i] / rs.factor) * ramp) + f(freqs[i] * f(1 - ramp)));
  }
  return freqs;
}

/**
 * softmax_scale = (qk_nope + qk_rope)^-0.5, times mscale² under YaRN, where
 * mscale = 0.1 · mscale_all_dim · ln(factor) + 1 (the reference applies it to the scores,
 * not to cos/sin).
 */
export function softmaxScale(cfg: DeepseekConfig): number {
  let scale = (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim) ** -0.5;
  const rs = cfg.rope_scaling;
  if (rs && yarnActive(cfg)) {
    const m = 0.1 * rs.mscale_all_dim * Math.log(rs.factor) + 1;
    scale *= m * m;
  }
  return scale;
}
